//! [`docker_compatible`]: the image as a docker-archive lists it for every engine. Engines
//! before 23.0 read no zstd (Docker 20.10's `docker load` fails with "archive/tar: invalid
//! tar header"), so zstd layers are listed as their plain tar — a valid blob whose digest is
//! the diffID, as classic `docker save` writes layers. Those tars are never stored: they are
//! streamed out of the zstd blob while the archive is written ([`open_blob`]), so a load
//! costs one decompression and no compression or disk.

use super::{BuiltImage, Error};
use crate::digest::{Digest, HashingReader};
use crate::image::{manifest_json, LayerDesc};
use crate::layer::{self, Compression};
use crate::store::Store;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};

/// An image prepared for a docker-archive.
pub(crate) struct Compat {
    pub image: BuiltImage,
    /// Plain-tar blobs (by diffID) to stream from the zstd layer they decompress.
    pub streamed: BTreeMap<Digest, LayerDesc>,
}

/// The image as the docker-archive lists it: zstd layers as plain tar (digest = diffID,
/// media type `…layer.v1.tar`) under a manifest of its own, which is stored; other layers
/// unchanged. The config, and so the image ID, stays the same. The plain-tar blobs are not
/// in the store: [`super::write_docker_archive`] streams them.
pub fn docker_compatible(store: &Store, img: &BuiltImage) -> Result<BuiltImage, Error> {
    Ok(prepare(store, img)?.image)
}

pub(crate) fn prepare(store: &Store, img: &BuiltImage) -> Result<Compat, Error> {
    let is_zstd =
        |l: &LayerDesc| Compression::from_media_type(&l.media_type) == Some(Compression::Zstd);
    let mut streamed = BTreeMap::new();
    if !img.layers.iter().any(is_zstd) {
        return Ok(Compat {
            image: img.clone(),
            streamed,
        });
    }
    let mut layers = Vec::with_capacity(img.layers.len());
    for l in &img.layers {
        if is_zstd(l) {
            layers.push(LayerDesc {
                digest: l.diff_id.clone(),
                size: tar_size(store, l)?,
                media_type: layer::MEDIA_TYPE_TAR.to_string(),
                diff_id: l.diff_id.clone(),
            });
            streamed.insert(l.diff_id.clone(), l.clone());
        } else {
            layers.push(l.clone());
        }
    }
    let config_size = super::archive::blob_size(store, &img.config)?;
    let manifest = store.put_bytes(&manifest_json(&img.config, config_size, &layers))?;
    Ok(Compat {
        image: BuiltImage {
            manifest,
            config: img.config.clone(),
            layers,
        },
        streamed,
    })
}

impl Compat {
    /// `img` as it is, every blob from the store.
    pub(crate) fn as_is(img: &BuiltImage) -> Compat {
        Compat {
            image: img.clone(),
            streamed: BTreeMap::new(),
        }
    }

    /// A reader of blob `d`: from the store, or decompressed from its zstd layer.
    pub(crate) fn open_blob(&self, store: &Store, d: &Digest) -> Result<Box<dyn Read>, Error> {
        match self.streamed.get(d) {
            Some(src) => decompress(store, src),
            None => Ok(Box::new(store.open_blob(d)?)),
        }
    }

    /// The size of blob `d`.
    pub(crate) fn blob_size(&self, store: &Store, d: &Digest) -> Result<u64, Error> {
        match self
            .image
            .layers
            .iter()
            .find(|l| &l.digest == d && self.streamed.contains_key(d))
        {
            Some(l) => Ok(l.size),
            None => super::archive::blob_size(store, d),
        }
    }
}

fn decompress(store: &Store, l: &LayerDesc) -> Result<Box<dyn Read>, Error> {
    let file = BufReader::with_capacity(256 * 1024, store.open_blob(&l.digest)?);
    layer::decoder(Compression::Zstd, file).map_err(Error::Write)
}

/// The uncompressed size of a zstd layer, with its diffID checked on the way; remembered
/// in a store record so that the next export does not decompress twice.
fn tar_size(store: &Store, l: &LayerDesc) -> Result<u64, Error> {
    let memo = format!("tar-size-{}", l.digest.hex());
    if let Some(b) = store.record_get(&memo)? {
        if let Some(n) = std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(n);
        }
    }
    let mut r = HashingReader::new(decompress(store, l)?);
    io::copy(&mut r, &mut io::sink()).map_err(Error::Write)?;
    let (_, actual, size) = r.finish();
    if actual != l.diff_id {
        return Err(layer::Error::DiffIdMismatch {
            digest: l.digest.clone(),
            expected: l.diff_id.clone(),
            actual,
        }
        .into());
    }
    store.record_put(&memo, size.to_string().as_bytes())?;
    Ok(size)
}
