//! [`Compression`]: how a layer blob is compressed — its media types, recognising it from
//! its first bytes ([`Compression::sniff`]) and reading it back ([`decoder`], or
//! [`decompressed`] when only the bytes can say which compression it is). A leaf: the
//! store (verifying unpacked layers), the unpacker (`rootfs`) and the layer writer all
//! decode blobs, and none of them needs the others for it. The encoders, whose output bytes
//! are pinned, stay with the layer writer (`layer::compress`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::str::FromStr;

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

/// A reader that decompresses `r` (compressed as `c`); for unpacking and recompressing.
pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::Decoder::new(r)?),
    })
}

/// Wraps a blob reader in the decompressor its magic bytes call for, rather than trusting a
/// media type a registry may have got wrong.
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
