//! [`from_upper`] and [`recompress`]: the layer writer wired to the store, so a layer's
//! diffID and blob digest come from the one pass that writes its blob.

use super::compress::{decoder, Encoder};
use super::{write_layer, Compression, Error, Layer, LayerOptions};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::store::Store;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

/// Writes the layer of an overlay upper directory into the store. `None` when the directory
/// is empty (the step changed nothing; its history entry gets `empty_layer`).
pub fn from_upper(
    store: &Store,
    upper: &Path,
    opts: &LayerOptions,
) -> Result<Option<Layer>, Error> {
    let blob = store.blob_writer()?;
    let Some((blob, diff_id)) = write_layer(upper, blob, opts)? else {
        return Ok(None);
    };
    let (digest, size) = blob.commit(None)?;
    Ok(Some(Layer {
        diff_id,
        digest,
        size,
        media_type: opts.compression.media_type().to_string(),
    }))
}

/// Builds a layer from a changeset tar that `produce` writes — [`super::write_tar`]'s
/// output made elsewhere, e.g. inside a user namespace for a rootless build, where the
/// upper directory's files are readable. The tar is digested (diffID), compressed as
/// `compression` and stored in one pass. `None` when the tar holds no entries.
pub fn from_tar<E: From<Error>>(
    store: &Store,
    compression: Compression,
    produce: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<Option<Layer>, E> {
    let enc = Encoder::new(compression, store.blob_writer().map_err(Error::from)?)
        .map_err(Error::Write)?;
    let mut tar = HashingWriter::new(enc);
    produce(&mut tar)?;
    let (enc, diff_id, tar_len) = tar.finish();
    // An archive without entries is its two zero end blocks and nothing else.
    if tar_len <= 1024 {
        return Ok(None);
    }
    let blob = enc.finish().map_err(Error::Write)?;
    let (digest, size) = blob.commit(None).map_err(Error::from)?;
    Ok(Some(Layer {
        diff_id,
        digest,
        size,
        media_type: compression.media_type().to_string(),
    }))
}

/// The same layer compressed as `to` (e.g. zstd → gzip for an engine that reads no zstd),
/// written into the store. The uncompressed content is re-hashed on the way and must match
/// the layer's diffID. A layer already in `to` is returned as it is; a conversion done
/// before is remembered in a store record and not redone while its blob is there.
pub fn recompress(store: &Store, layer: &Layer, to: Compression) -> Result<Layer, Error> {
    let memo = format!("recompress-{}-{to}", layer.digest.hex());
    if let Some(bytes) = store.record_get(&memo)? {
        if let Ok(done) = serde_json::from_slice::<Layer>(&bytes) {
            if done.diff_id == layer.diff_id && store.has_blob(&done.digest) {
                return Ok(done);
            }
        }
    }
    let from = match layer.compression() {
        Some(c) => c,
        None => sniff(store, &layer.digest)?,
    };
    if from == to {
        return Ok(layer.clone());
    }
    let done = convert(store, layer, from, to)?;
    let json = serde_json::to_vec(&done).map_err(|e| Error::Message(e.to_string()))?;
    store.record_put(&memo, &json)?;
    Ok(done)
}

fn convert(
    store: &Store,
    layer: &Layer,
    from: Compression,
    to: Compression,
) -> Result<Layer, Error> {
    let file = store.open_blob(&layer.digest)?;
    let mut tar = HashingReader::new(
        decoder(from, BufReader::with_capacity(256 * 1024, file)).map_err(Error::Write)?,
    );
    let mut enc = Encoder::new(to, store.blob_writer()?).map_err(Error::Write)?;
    io::copy(&mut tar, &mut enc).map_err(Error::Write)?;
    let (_, actual, _) = tar.finish();
    if actual != layer.diff_id {
        return Err(Error::DiffIdMismatch {
            digest: layer.digest.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    let (digest, size) = enc.finish().map_err(Error::Write)?.commit(None)?;
    Ok(Layer {
        diff_id: layer.diff_id.clone(),
        digest,
        size,
        media_type: to.media_type().to_string(),
    })
}

fn sniff(store: &Store, digest: &Digest) -> Result<Compression, Error> {
    let mut head = [0u8; 4];
    let mut f = store.open_blob(digest)?;
    let n = f.read(&mut head).map_err(Error::Write)?;
    Ok(Compression::sniff(&head[..n]))
}
