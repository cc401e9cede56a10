//! [`OutputCompression`] and [`recompressed`]: an output's own layer compression, in
//! BuildKit's terms (`compression=gzip|zstd|uncompressed`, `compression-level=N`,
//! `force-compression=true`), apart from the store's (`--compression`). Layers stored in
//! another compression are converted into the store once (remembered in a store record) and
//! listed under a manifest of their own; the config, and so the diffIDs, do not change.
//!
//! Unlike BuildKit, which by default converts only the layers it creates, every layer of
//! the image is converted: an output asking for gzip is then readable by a tool that reads
//! only gzip (Debian's umoci, older engines). `force-compression=true` additionally
//! re-encodes layers already in that compression when a `compression-level` is given.

use super::{BuiltImage, Error};
use crate::digest::{Digest, HashingReader};
use crate::image::{manifest_json, LayerDesc};
use crate::layer::{self, Compression, Layer};
use crate::store::Store;
use std::io::{self, BufReader};

/// How one output compresses its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputCompression {
    /// `compression=`; `None`: the output's default.
    pub compression: Option<Compression>,
    /// `compression-level=`: gzip 0–9, zstd 1–22.
    pub level: Option<i32>,
    /// `force-compression=true`.
    pub force: bool,
}

impl OutputCompression {
    /// Parses one `key=value` of an output spec when it is about compression; `Ok(false)`
    /// when `key` is another option's.
    pub fn parse_option(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "compression" => {
                self.compression = Some(match value {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    // estargz needs a table of contents cairn does not write.
                    _ => {
                        return Err(format!(
                            "compression={value}: expected gzip, zstd or uncompressed"
                        ))
                    }
                })
            }
            "compression-level" => {
                self.level =
                    Some(value.parse().map_err(|_| {
                        format!("compression-level={value}: expected a whole number")
                    })?)
            }
            "force-compression" => {
                self.force = match value {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("force-compression={value}: expected true or false")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the level against the compression it applies to.
    pub fn validate(&self) -> Result<(), String> {
        let Some(level) = self.level else {
            return Ok(());
        };
        match self.compression {
            Some(Compression::Gzip) if (0..=9).contains(&level) => Ok(()),
            Some(Compression::Zstd) if (1..=22).contains(&level) => Ok(()),
            Some(Compression::None) | None => Err(format!(
                "compression-level={level} needs compression=gzip or compression=zstd"
            )),
            Some(c) => Err(format!(
                "compression-level={level}: out of range for {c} (gzip 0-9, zstd 1-22)"
            )),
        }
    }
}

/// `img` with every layer compressed as `to` (at `level`, when given), its blobs and
/// manifest in the store. Layers already in `to` stay as they are, unless `force` with a
/// `level` asks to re-encode them. Returns `img` itself when nothing changes.
pub fn recompressed(
    store: &Store,
    img: &BuiltImage,
    to: Compression,
    level: Option<i32>,
    force: bool,
) -> Result<BuiltImage, Error> {
    let mut layers = Vec::with_capacity(img.layers.len());
    let mut changed = false;
    for l in &img.layers {
        let from = Compression::from_media_type(&l.media_type);
        let reencode = force && level.is_some() && to != Compression::None;
        if from == Some(to) && !reencode {
            layers.push(l.clone());
            continue;
        }
        let layer = Layer {
            diff_id: l.diff_id.clone(),
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        };
        let done = match level {
            None => layer::recompress(store, &layer, to)?,
            Some(n) => at_level(store, &layer, to, n)?,
        };
        changed |= done.digest != l.digest;
        layers.push(LayerDesc::from(&done));
    }
    if !changed {
        return Ok(img.clone());
    }
    let config_size = super::archive::blob_size(store, &img.config)?;
    let manifest = store.put_bytes(&manifest_json(&img.config, config_size, &layers))?;
    Ok(BuiltImage {
        manifest,
        config: img.config.clone(),
        layers,
    })
}

/// `layer` compressed as `to` at `level` (single-threaded, deterministic), remembered in a
/// store record like [`layer::recompress`]'s conversions.
fn at_level(store: &Store, l: &Layer, to: Compression, level: i32) -> Result<Layer, Error> {
    let memo = format!("recompress-{}-{to}-{level}", l.digest.hex());
    if let Some(bytes) = store.record_get(&memo)? {
        if let Ok(done) = serde_json::from_slice::<Layer>(&bytes) {
            if done.diff_id == l.diff_id && store.has_blob(&done.digest) {
                return Ok(done);
            }
        }
    }
    let from = l.compression().unwrap_or(Compression::None);
    let file = BufReader::with_capacity(256 * 1024, store.open_blob(&l.digest)?);
    let mut tar = HashingReader::new(layer::decoder(from, file).map_err(Error::Write)?);
    let mut out = store.blob_writer()?;
    match to {
        Compression::Gzip => {
            let mut e = flate2::GzBuilder::new()
                .write(&mut out, flate2::Compression::new(level.clamp(0, 9) as u32));
            io::copy(&mut tar, &mut e).map_err(Error::Write)?;
            e.finish().map_err(Error::Write)?;
        }
        Compression::Zstd => {
            let mut e = zstd::Encoder::new(&mut out, level).map_err(Error::Write)?;
            e.include_checksum(false).map_err(Error::Write)?;
            io::copy(&mut tar, &mut e).map_err(Error::Write)?;
            e.finish().map_err(Error::Write)?;
        }
        Compression::None => {
            io::copy(&mut tar, &mut out).map_err(Error::Write)?;
        }
    }
    let (_, actual, _) = tar.finish();
    if actual != l.diff_id {
        return Err(layer::Error::DiffIdMismatch {
            digest: l.digest.clone(),
            expected: l.diff_id.clone(),
            actual,
        }
        .into());
    }
    let (digest, size): (Digest, u64) = out.commit(None)?;
    let done = Layer {
        diff_id: l.diff_id.clone(),
        digest,
        size,
        media_type: to.media_type().to_string(),
    };
    let json = serde_json::to_vec(&done).map_err(|e| Error::Message(e.to_string()))?;
    store.record_put(&memo, &json)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_compression_options() {
        let mut c = OutputCompression::default();
        assert_eq!(c.parse_option("compression", "zstd"), Ok(true));
        assert_eq!(c.parse_option("compression-level", "19"), Ok(true));
        assert_eq!(c.parse_option("force-compression", "true"), Ok(true));
        assert_eq!(c.parse_option("dest", "x"), Ok(false));
        assert_eq!(
            c,
            OutputCompression {
                compression: Some(Compression::Zstd),
                level: Some(19),
                force: true
            }
        );
        assert!(c.validate().is_ok());
        c.compression = Some(Compression::Gzip);
        assert!(c.validate().unwrap_err().contains("0-9"));
        assert!(c.parse_option("compression", "estargz").is_err());
        assert!(c.parse_option("compression-level", "high").is_err());
        let lonely = OutputCompression {
            level: Some(3),
            ..Default::default()
        };
        assert!(lonely.validate().is_err());
    }
}
