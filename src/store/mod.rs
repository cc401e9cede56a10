//! [`Store`]: cairn's content-addressed store, one directory shared by every cairn process.
//!
//! Everything cairn keeps between runs lives here: blobs by digest (`blobs/sha256/<hex>`),
//! the tag index (reference → manifest digest, `tags/`), the cache index (cache key →
//! [`CacheEntry`], `cache/`), small named records (`records/`), unpacked layer directories
//! (`layers/<diffID hex>`), locks (`locks/`) and temporary files (`tmp/`, on the same
//! filesystem so a finished file is published with one `rename`).
//!
//! Crash safety rests on one rule: nothing becomes visible under a final name until it is
//! complete and on disk (written to `tmp/`, fsynced, renamed, directory fsynced), and an
//! index entry is written only after every blob it points to. A process killed at any
//! moment leaves at worst temp files, which the next [`Store::open`] removes once their
//! owner is gone (each process holds a lock that dies with it; see [`Lock`]).
//!
//! A store opened for a build is [`Store::leased`]: what it uses is pinned against
//! collection by other processes until the build ends ([`Lease`]).

mod blob;
mod index;
mod layers;
mod lock;
pub mod maintain;
mod pin;

pub use blob::BlobWriter;
pub use index::{CacheEntry, TagEntry};
pub use lock::Lock;
pub use pin::Lease;

use crate::digest::Digest;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "blob content does not match {expected}: got {actual} ({size} bytes); nothing was stored"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("blob {digest} in the store is corrupt (its content hashes to {actual}); run `cairn cache verify --repair`")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("cache entry {key} references blob {blob}, which is not in the store")]
    MissingRef { key: String, blob: Digest },
    #[error("store index file {path} is unreadable: {msg}")]
    BadIndex { path: PathBuf, msg: String },
    #[error("{0}")]
    Message(String),
}

/// Attaches the path to an I/O error.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

const DIRS: &[&str] = &[
    "blobs/sha256",
    "tmp",
    "tags",
    "cache",
    "records",
    "layers",
    "locks/owners",
    "locks/pins",
];

/// An open store. Cheap to clone; every clone shares this process's owner lock.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    owner: Arc<lock::Owner>,
    lease: Option<Arc<Lease>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens (creating the layout if needed) the store at `root`, and removes temp files
    /// left by processes that died.
    pub fn open(root: &Path) -> Result<Store, Error> {
        for d in DIRS {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let owner = lock::Owner::for_root(&root)?;
        let store = Store {
            root,
            owner,
            lease: None,
        };
        lock::clean_stale_temps(&store)?;
        Ok(store)
    }

    /// A clone of this store under a new [`Lease`]: every blob it checks or commits, every
    /// cache entry it hands out and every layer it pins stays in the store, whatever a
    /// collection decides, until the last clone of the leased store is dropped.
    pub fn leased(&self) -> Store {
        Store {
            lease: Some(Arc::new(Lease::new(self))),
            ..self.clone()
        }
    }

    /// Pins `digests` (blobs, or diffIDs of unpacked layers) for the lease, if any. Call it
    /// before checking that they exist: see [`Lease`] for why that order is safe.
    pub fn pin<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) -> Result<(), Error> {
        match &self.lease {
            Some(l) => l.pin(self, digests),
            None => Ok(()),
        }
    }

    pub(crate) fn owner_token(&self) -> &str {
        self.owner.token()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives once committed (it may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether the blob is stored (pinning it first, on a leased store: a pin that cannot
    /// be written leaves the blob unprotected, which a later read reports if it matters).
    pub fn has_blob(&self, d: &Digest) -> bool {
        let _ = self.pin([d]);
        fs::metadata(self.blob_path(d))
            .map(|m| m.is_file())
            .unwrap_or(false)
    }

    /// A writer that hashes what it is given into a temp file; see [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        BlobWriter::new(self)
    }

    /// Stores `bytes` as a blob (a no-op when it is already there) and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let d = Digest::of_bytes(bytes);
        if self.has_blob(&d) {
            return Ok(d);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err(&self.tmp_root()))?;
        w.commit(Some(&d))?;
        Ok(d)
    }

    /// Reads a whole blob and checks its digest. Meant for manifests and configs, not layers.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let mut f = self.open_blob(d)?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(io_err(&self.blob_path(d)))?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(Error::Corrupt {
                digest: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming reads (not verified; `cairn cache verify` re-hashes).
    pub fn open_blob(&self, d: &Digest) -> Result<File, Error> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob(d.clone()),
            _ => Error::Io { path: p, source: e },
        })
    }

    /// `root/layers/<hex>`: where the rootfs module unpacks a layer (temp dir + rename).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// A temporary directory under `root/tmp` (same filesystem as blobs and layers), removed
    /// on drop, and by a later [`Store::open`] if this process dies first.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, Error> {
        let tmp = self.tmp_root();
        tempfile::Builder::new()
            .prefix(&self.temp_prefix(prefix))
            .tempdir_in(&tmp)
            .map_err(io_err(&tmp))
    }

    /// An exclusive lock on `root/locks/<name>`, held until the [`Lock`] is dropped or the
    /// process dies. Blocks while another holder has it.
    pub fn lock(&self, name: &str) -> Result<Lock, Error> {
        Lock::acquire(&self.lock_path(name), true).map(|l| l.expect("blocking lock"))
    }

    /// Like [`Store::lock`] but returns `None` instead of waiting.
    pub fn try_lock(&self, name: &str) -> Result<Option<Lock>, Error> {
        Lock::acquire(&self.lock_path(name), false)
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(safe_name(name))
    }

    pub(crate) fn tmp_root(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Temp names start with this process's owner token so stale ones can be told apart.
    pub(crate) fn temp_prefix(&self, prefix: &str) -> String {
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}.{}.", self.owner.token(), clean)
    }

    /// Writes `bytes` to `dest` atomically: temp file, fsync, rename, directory fsync.
    pub(crate) fn atomic_write(&self, dest: &Path, bytes: &[u8]) -> Result<(), Error> {
        self.replace(dest, bytes, true)?;
        sync_parent(dest)
    }

    /// Replaces `dest` atomically (a reader sees the old or the new bytes) without waiting
    /// for the disk: for entries whose old content is as valid as the new.
    pub(crate) fn replace_unsynced(&self, dest: &Path, bytes: &[u8]) -> Result<(), Error> {
        self.replace(dest, bytes, false)
    }

    /// `bytes` into a temp file of the store (fsynced when `sync`), renamed over `dest`.
    fn replace(&self, dest: &Path, bytes: &[u8], sync: bool) -> Result<(), Error> {
        let tmp = self.tmp_root();
        let mut f = tempfile::Builder::new()
            .prefix(&self.temp_prefix("write"))
            .tempfile_in(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(f.path()))?;
        if sync {
            f.as_file().sync_all().map_err(io_err(dest))?;
        }
        f.persist(dest).map(drop).map_err(|e| Error::Io {
            path: dest.to_path_buf(),
            source: e.error,
        })
    }
}

/// Fsyncs the directory holding `path`, so a rename into it survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A file name for an arbitrary string: kept when it is plain, else its sha256.
fn safe_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        name.to_string()
    } else {
        Digest::of_bytes(name.as_bytes()).hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("build-1.lock"), "build-1.lock");
        assert_eq!(safe_name("../x").len(), 64);
        assert_eq!(safe_name("a/b").len(), 64);
        assert_eq!(safe_name("").len(), 64);
    }
}
