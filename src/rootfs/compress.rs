//! [`Compression`]: what a layer blob is compressed with, told by its magic bytes rather
//! than by a media type a registry may have got wrong.

use std::io::{self, BufRead, BufReader, Read};

/// The compressions a layer blob may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Tells the compression from the first bytes of a blob.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps a blob reader in the decompressor its magic bytes call for.
pub fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(compressed: Vec<u8>, expected: &[u8]) {
        let mut out = Vec::new();
        decompressed(&compressed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn detects_and_decompresses_each_kind() {
        let data = b"ustar-ish payload".repeat(100);
        round_trip(data.clone(), &data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        round_trip(gz.finish().unwrap(), &data);
        round_trip(zstd::encode_all(&data[..], 1).unwrap(), &data);
        assert_eq!(Compression::detect(b""), Compression::None);
    }
}
