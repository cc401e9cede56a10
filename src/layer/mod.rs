//! [`Layer`]: one OCI layer blob in the store, made from an overlay upper directory.
//!
//! A build step's changes are what overlayfs left in its upper directory. This module turns
//! that directory into an OCI changeset tar (whiteout devices → `.wh.<name>`, opaque
//! directories → `.wh..wh..opq`), written so that the same tree always gives the same bytes
//! (DESIGN.md, determinism rules): entries sorted by path bytes with parents first, numeric
//! owners mapped back to container ids, empty user/group names, mtimes clamped to
//! `SOURCE_DATE_EPOCH`, no atime/ctime, PAX only where USTAR does not fit, hardlinks written
//! once. The tar is digested (diffID), compressed with pinned settings ([`Compression`]) and
//! digested again (blob digest) in the same pass that writes it into the store.

mod compress;
mod header;
mod owner;
mod pargz;
mod stored;
mod walk;

pub use crate::overlay::{OPAQUE_MARKER, WHITEOUT_PREFIX};
pub use compress::{
    decoder, Compression, InvalidCompression, DOCKER_MEDIA_TYPE_TAR, DOCKER_MEDIA_TYPE_TAR_GZIP,
    GZIP_LEVEL, MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD, ZSTD_LEVEL,
};
pub use owner::{from_upper_as_owner, tar_as_owner, TarJob};
pub use stored::{from_tar, from_upper, recompress};

use crate::digest::{Digest, HashingWriter};
use crate::idmap::IdMap;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer: writing the layer: {0}")]
    Write(#[source] io::Error),
    #[error("layer: {path} changed while it was being archived (expected {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
    #[error(
        "layer: {path} carries {xattr}: the overlay was mounted with metacopy or redirect_dir, \
         whose changes cannot be written as a layer; mount it with metacopy=off,redirect_dir=off"
    )]
    UnsupportedUpper { path: PathBuf, xattr: String },
    #[error("layer {digest}: its content does not match diffID {expected} (got {actual})")]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The helper that reads a rootless step's upper failed.
    #[error(transparent)]
    Broker(#[from] crate::userns::Error),
    #[error("{0}")]
    Message(String),
}

impl Error {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `COPY --chown`: entries at or under `prefix` (relative to the layer root) get this owner
/// instead of the mapped one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    pub prefix: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Clamp every mtime to this (seconds since the epoch), when set.
    pub source_date_epoch: Option<i64>,
    /// The user-namespace maps the step ran under; owners in the upper directory are host
    /// ids and are mapped back through these.
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    pub chown: Option<Chown>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Zstd,
            source_date_epoch: None,
            uid_maps: vec![IdMap::IDENTITY],
            gid_maps: vec![IdMap::IDENTITY],
            chown: None,
        }
    }
}

/// A layer blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// sha256 of the uncompressed tar (what image configs list in `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as stored (what manifests list).
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    pub media_type: String,
}

impl Layer {
    /// The compression of the blob, from its media type.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_media_type(&self.media_type)
    }
}

/// Writes the deterministic changeset tar of `dir` (uncompressed) to `out`. An empty `dir`
/// gives an empty tar (two zero blocks).
pub fn write_tar(dir: &Path, out: impl Write, opts: &LayerOptions) -> Result<(), Error> {
    let entries = walk::collect(dir, opts)?;
    write_entries(dir, &entries, out)?;
    Ok(())
}

/// Writes the layer of `dir` through `opts.compression` into `out` and returns `out` with
/// the diffID, or `None` (nothing written) when `dir` has no entries.
pub fn write_layer<W: Write>(
    dir: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<Option<(W, Digest)>, Error> {
    let entries = walk::collect(dir, opts)?;
    if entries.is_empty() {
        return Ok(None);
    }
    let enc = compress::Encoder::new(opts.compression, out).map_err(Error::Write)?;
    let tar = HashingWriter::new(enc);
    let (enc, diff_id, _) = write_entries(dir, &entries, tar)?.finish();
    let out = enc.finish().map_err(Error::Write)?;
    Ok(Some((out, diff_id)))
}

fn write_entries<W: Write>(root: &Path, entries: &[walk::Source], out: W) -> Result<W, Error> {
    use std::os::unix::ffi::OsStrExt;
    let mut b = tar::Builder::new(out);
    for s in entries {
        match s.data {
            true => {
                let path = &root.join(std::ffi::OsStr::from_bytes(&s.entry.path));
                let size = match s.entry.kind {
                    header::Kind::File { size } => size,
                    _ => 0,
                };
                let file = File::open(path).map_err(Error::io(path))?;
                let mut r = ExactReader {
                    inner: file.take(size),
                    left: size,
                };
                header::append(&mut b, &s.entry, Some(&mut r)).map_err(Error::Write)?;
                let mut probe = [0u8; 1];
                let grew = r
                    .inner
                    .into_inner()
                    .read(&mut probe)
                    .map_err(Error::io(path))?;
                if r.left != 0 || grew != 0 {
                    return Err(Error::Changed {
                        path: path.clone(),
                        expected: size,
                    });
                }
            }
            false => header::append(&mut b, &s.entry, None).map_err(Error::Write)?,
        }
    }
    b.into_inner().map_err(Error::Write)
}

/// Reads a file's data, counting down what its header promised.
struct ExactReader {
    inner: io::Take<File>,
    left: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
}
