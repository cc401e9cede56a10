//! [`Compression`]: how a layer blob is compressed, with encoders whose output bytes are
//! pinned (level, header fields, backend, worker count) so a layer's blob digest depends on
//! nothing but its tar.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use super::pargz::ParGzEncoder;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 media type of an uncompressed layer.
pub const DOCKER_MEDIA_TYPE_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker schema 2 media type of a gzip layer (what most registries serve).
pub const DOCKER_MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Pinned gzip level (the gzip tool's default); changing it changes every gzip digest.
pub const GZIP_LEVEL: u32 = 6;
/// Pinned zstd level (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;

/// Layer compression, as `--compression` and `LayerOptions` take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_TAR,
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
        }
    }

    /// The compression a layer media type (OCI or Docker, distributable or not) implies.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let m = media_type;
        if m.ends_with("+zstd") || m.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with("+gzip") || m.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if m.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// The compression the first bytes of a blob show (magic numbers), for blobs whose
    /// media type lies or is missing; anything unrecognised is taken as a plain tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// A `--compression` value that is not `none`, `gzip` or `zstd`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown compression {0:?}: expected none, gzip or zstd")]
pub struct InvalidCompression(pub String);

impl FromStr for Compression {
    type Err = InvalidCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" | "tar" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(InvalidCompression(s.to_string())),
        }
    }
}

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

/// A reader that decompresses `r` (compressed as `c`); for unpacking and recompressing.
pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::Decoder::new(r)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
