//! [`decompressed`]: a layer blob's reader wrapped in the decompressor its magic bytes call
//! for ([`Compression::sniff`], shared with the layer writer), rather than trusting a media
//! type a registry may have got wrong.

use std::io::{self, BufRead, BufReader, Read};

pub use crate::codec::Compression;

/// Wraps a blob reader in the decompressor its magic bytes call for.
pub fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    Ok(match Compression::sniff(head) {
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
        assert_eq!(Compression::sniff(b""), Compression::None);
    }
}
