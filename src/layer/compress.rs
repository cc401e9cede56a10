//! The layer writer's encoders for each [`Compression`], whose output bytes are pinned
//! (level, header fields, backend, worker count) so a layer's blob digest depends on nothing
//! but its tar. What a compression is, and how to read one back, is the leaf
//! [`crate::codec`].

use std::io::{self, Write};

use super::pargz::ParGzEncoder;
pub use crate::codec::{
    decoder, Compression, InvalidCompression, DOCKER_MEDIA_TYPE_TAR, DOCKER_MEDIA_TYPE_TAR_GZIP,
    MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD,
};

/// Pinned gzip level (the gzip tool's default); changing it changes every gzip digest.
pub const GZIP_LEVEL: u32 = 6;
/// Pinned zstd level (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;

/// Compression workers (gzip blocks, zstd jobs): every core, at most 8. Any count ≥ 1 gives the same bytes (zstd's multi-threaded format does not
/// depend on the number of workers; `zstd_output_independent_of_workers` pins that), while 0
/// (single-threaded) gives different ones, so it is never 0.
/// The gzip encoder's bytes do not depend on it either ([`super::pargz`]).
fn workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8) as u32)
        .unwrap_or(1)
}

/// A compressing writer with pinned output.
pub(crate) enum Encoder<W: Write> {
    None(W),
    Gzip(ParGzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(c: Compression, out: W) -> io::Result<Self> {
        Self::with_workers(c, out, workers())
    }

    pub(crate) fn with_workers(c: Compression, out: W, workers: u32) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Encoder::None(out),
            // No file name, mtime 0, OS byte "unknown", as Go's gzip writes it.
            Compression::Gzip => {
                Encoder::Gzip(ParGzEncoder::new(out, GZIP_LEVEL, workers as usize))
            }
            Compression::Zstd => {
                let mut e = zstd::Encoder::new(out, ZSTD_LEVEL)?;
                e.multithread(workers.max(1))?;
                e.include_checksum(false)?;
                Encoder::Zstd(e)
            }
        })
    }

    /// Ends the stream and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress(c: Compression, data: &[u8], workers: u32) -> Vec<u8> {
        let mut e = Encoder::with_workers(c, Vec::new(), workers).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a counter mixed into text.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(format!("line {} {:x}\n", i, i.wrapping_mul(0x9e37)).as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    #[test]
    fn gzip_header_is_pinned() {
        let gz = compress(Compression::Gzip, b"hello", 1);
        // magic, deflate, no flags, mtime 0, xfl 0 (level 6), OS 255
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(
            crate::Digest::of_bytes(&gz).as_str(),
            crate::Digest::of_bytes(&compress(Compression::Gzip, b"hello", 1)).as_str()
        );
    }

    #[test]
    fn gzip_output_independent_of_workers_and_write_sizes() {
        // Several blocks, and a length that is not a multiple of one.
        let data = sample(5 * super::super::pargz::BLOCK + 12_345);
        let one = compress(Compression::Gzip, &data, 1);
        let three = compress(Compression::Gzip, &data, 3);
        assert_eq!(one, three);
        // Odd-sized writes, and flushes between them, must not move block boundaries.
        let mut e = Encoder::with_workers(Compression::Gzip, Vec::new(), 2).unwrap();
        for (i, chunk) in data.chunks(7_777).enumerate() {
            e.write_all(chunk).unwrap();
            if i % 5 == 0 {
                e.flush().unwrap();
            }
        }
        assert_eq!(e.finish().unwrap(), one);
        // A real gzip stream: one member, decodable by a single-member decoder.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Priming each block with the previous one's tail keeps the ratio of one stream.
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        assert!(
            one.len() <= single.len() + single.len() / 50,
            "parallel {} vs single-stream {} bytes",
            one.len(),
            single.len()
        );
    }

    #[test]
    fn gzip_edges_round_trip() {
        let block = super::super::pargz::BLOCK;
        for len in [0, 1, block - 1, block, block + 1, 2 * block] {
            let data = sample(len);
            for workers in [1, 2] {
                let gz = compress(Compression::Gzip, &data, workers);
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data, "len {len}, {workers} workers");
            }
        }
    }

    /// The gzip bytes are part of every gzip layer's digest: a change of backend (a C zlib
    /// enabled by some dependency), level or block format must show up here, not in users'
    /// caches. If this changes on purpose, say so in the changelog.
    #[test]
    fn gzip_bytes_are_pinned() {
        let gz = compress(Compression::Gzip, &sample(300_000), 2);
        assert_eq!(
            crate::Digest::of_bytes(&gz).as_str(),
            "sha256:54aa1ea377cb40291da6ae377cf985ff07f5489bea3e4052d415b87d60471a1f"
        );
    }

    #[test]
    fn zstd_output_independent_of_workers() {
        // Larger than one zstd job at level 3 so that several workers really run.
        let data = sample(12 << 20);
        let one = compress(Compression::Zstd, &data, 1);
        let four = compress(Compression::Zstd, &data, 4);
        assert_eq!(one, four);
        let mut back = Vec::new();
        decoder(Compression::Zstd, &one[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn round_trips_and_sniffs() {
        let data = sample(100_000);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let z = compress(c, &data, 2);
            assert_eq!(Compression::sniff(&z), c);
            let mut back = Vec::new();
            decoder(c, &z[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            assert_eq!(Compression::from_media_type(c.media_type()), Some(c));
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        assert_eq!(
            Compression::from_media_type(DOCKER_MEDIA_TYPE_TAR_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(DOCKER_MEDIA_TYPE_TAR),
            Some(Compression::None)
        );
        assert!("lz4".parse::<Compression>().is_err());
    }
}
