//! Root file systems: secure layer unpacking and overlay assembly.
//!
//! [`unpack_tar`] turns one layer tar into a directory that overlayfs can stack as a lower
//! layer: OCI whiteouts become overlay whiteouts and opaque markers become the opaque
//! xattr, and no entry can create, overwrite or follow anything outside the target,
//! whatever the tar says (the `tar` crate's own `unpack` is unfit: it turns devices into
//! files and knows no whiteouts). [`ensure_unpacked`] does it once per layer into the
//! store. [`overlay`] builds the mount options that stack those directories for a step,
//! and [`fallback`] gives the same result by copying where overlayfs is unavailable.

mod compress;
pub mod fallback;
pub mod overlay;
mod secure;
mod unpack;

use std::path::{Path, PathBuf};

pub use compress::{decompressed, Compression};
pub use unpack::{skipped_summary, unpack_tar, unpack_tar_as, Privilege};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
    /// An I/O failure on a path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tar entry that would reach outside the target or is otherwise malformed.
    #[error("refusing layer entry {entry:?}: {reason}")]
    Hostile { entry: String, reason: String },
    /// The uncompressed layer does not hash to its diff id.
    #[error("layer {blob} does not match its diff id: expected {expected}, got {actual}")]
    DiffIdMismatch {
        blob: String,
        expected: String,
        actual: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn hostile(entry: &Path, reason: impl Into<String>) -> Error {
        Error::Hostile {
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// How to unpack layers.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Unpacking as an unprivileged user: no ownership changes (every file belongs to the
    /// invoking user, who is root inside the sandbox), no device nodes, and xattrs the
    /// user may not set are skipped with a warning. (Opaque markers are always
    /// `user.overlay.opaque`: every sandbox mounts with `userxattr`.)
    pub rootless: bool,
}

impl UnpackOptions {
    /// Options for this process: rootless unless running as real root.
    pub fn for_current_user() -> UnpackOptions {
        UnpackOptions {
            rootless: !nix::unistd::geteuid().is_root(),
        }
    }
}

/// Unpacks the layer `blob` (gzip, zstd or plain tar, told apart by magic bytes) into
/// `store.layer_dir(diff_id)` once, verifying that the uncompressed stream hashes to
/// `diff_id`, and returns that directory. Idempotent and safe against concurrent callers:
/// the work happens in a temp dir under the store's lock and lands with a rename.
pub fn ensure_unpacked(
    store: &crate::store::Store,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    opts: &UnpackOptions,
) -> Result<PathBuf, Error> {
    // Pinned before the check, so a concurrent collection cannot remove it under us.
    let _ = store.pin([diff_id]);
    let dir = store.layer_dir(diff_id);
    if dir.is_dir() {
        return Ok(dir);
    }
    let _lock = store
        .lock(&format!("unpack-{}", diff_id.hex()))
        .map_err(|e| Error::Message(format!("cannot lock layer {diff_id}: {e}")))?;
    if dir.is_dir() {
        return Ok(dir);
    }
    let temp = store
        .temp_dir("unpack")
        .map_err(|e| Error::Message(format!("cannot make a temp dir in the store: {e}")))?;
    let target = temp.path().join("layer");
    std::fs::create_dir(&target).map_err(|e| Error::io(&target, e))?;
    let file = store
        .open_blob(blob)
        .map_err(|e| Error::Message(format!("cannot open layer {blob}: {e}")))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let unpacked = if opts.rootless {
        // As root of a user namespace with the sandbox's maps, so owners survive.
        verify_while(reader, blob, diff_id, |tar| {
            crate::sandbox::unpack_as_container_root(tar, &target)
                .map_err(|e| Error::Message(format!("unpack layer {diff_id}: {e}")))
        })
    } else {
        unpack_verified(reader, &target, blob, diff_id, opts)
    };
    if let Err(e) = unpacked {
        if opts.rootless {
            let _ = crate::sandbox::remove_as_container_root(&target);
        }
        return Err(e);
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::rename(&target, &dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Unpacks a possibly compressed layer stream into `target` and checks the diff id.
pub fn unpack_verified(
    blob_reader: impl std::io::Read,
    target: &Path,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    opts: &UnpackOptions,
) -> Result<(), Error> {
    verify_while(blob_reader, blob, diff_id, |tar| {
        unpack_tar(tar, target, opts)
    })
}

/// Decompresses `blob_reader`, hands the tar stream to `consume`, and checks that the
/// whole uncompressed stream (the padding after the end-of-archive marker included)
/// hashes to `diff_id`.
fn verify_while(
    blob_reader: impl std::io::Read,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    consume: impl FnOnce(&mut dyn std::io::Read) -> Result<(), Error>,
) -> Result<(), Error> {
    let reader =
        decompressed(blob_reader).map_err(|e| Error::Message(format!("read layer {blob}: {e}")))?;
    let mut hashing = crate::digest::HashingReader::new(reader);
    consume(&mut hashing)?;
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| Error::Message(format!("read layer {blob}: {e}")))?;
    let (_, actual, _) = hashing.finish();
    if &actual != diff_id {
        return Err(Error::DiffIdMismatch {
            blob: blob.to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
