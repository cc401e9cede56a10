//! Root file systems: secure layer unpacking into overlay lower directories.
//!
//! [`unpack_tar`] turns one layer tar into a directory that overlayfs can stack as a lower
//! layer: OCI whiteouts become overlay whiteouts and opaque markers become the opaque
//! xattr, and no entry can create, overwrite or follow anything outside the target,
//! whatever the tar says (the `tar` crate's own `unpack` is unfit: it turns devices into
//! files and knows no whiteouts). [`ensure_unpacked`] does it once per layer into the
//! store; rootless, it does so as root of a user namespace with the user's maps
//! ([`UnpackJob`], a job of the privilege broker `crate::userns`), so owners survive.
//! What could not be reproduced goes to the caller's `warn` sink, never to stderr.

mod secure;
mod unpack;

use crate::userns::{remove_as_root, run_job, send, Job, Privilege, Report};
use serde::{Deserialize, Serialize};
use std::io::StdinLock;
use std::path::{Path, PathBuf};

pub use crate::codec::{decompressed, Compression};
pub use unpack::unpack_tar;
use unpack::{skipped_summary, unpack_as, Access};

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

/// Unpack the uncompressed layer tar that follows on the helper's stdin into `target`,
/// as root of a user namespace with the user's maps (so owners survive a rootless unpack).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpackJob {
    pub target: PathBuf,
}

impl Job for UnpackJob {
    const KIND: &'static str = "unpack";

    fn run(self, mut input: StdinLock<'static>) -> Result<Report, String> {
        let skipped = unpack_as(&mut input, &self.target, Access::UserNamespace)
            .map_err(|e| e.to_string())?;
        if let Some(first) = skipped.first() {
            send(&Report::Warning(skipped_summary(
                &self.target,
                &skipped,
                first,
            )));
        }
        Ok(Report::Exit(0))
    }
}

/// Unpacks the uncompressed layer tar `tar` into the existing directory `target` as the
/// container's root: in this process as real root, else inside a user namespace with the
/// user's maps (see [`unpack_tar`] for the rules).
pub fn unpack_as_container_root(
    privilege: &Privilege,
    tar: &mut dyn std::io::Read,
    target: &Path,
    warn: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    if privilege.is_root() {
        return unpack_tar(tar, target, privilege, warn);
    }
    let job = UnpackJob {
        target: target.to_path_buf(),
    };
    let warnings =
        run_job(privilege, &job, Some(tar), None).map_err(|e| Error::Message(e.to_string()))?;
    warnings.iter().for_each(|w| warn(w));
    Ok(())
}

/// Unpacks the layer `blob` (gzip, zstd or plain tar, told apart by magic bytes) into
/// `store.layer_dir(diff_id)` once, verifying that the uncompressed stream hashes to
/// `diff_id`, and returns that directory. Idempotent and safe against concurrent callers:
/// the work happens in a temp dir under the store's lock and lands with a rename.
pub fn ensure_unpacked(
    store: &crate::store::Store,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    privilege: &Privilege,
    warn: &mut dyn FnMut(&str),
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
    let unpacked = if privilege.is_root() {
        unpack_verified(reader, &target, blob, diff_id, privilege, warn)
    } else {
        // As root of a user namespace with the user's maps, so owners survive.
        verify_while(reader, blob, diff_id, |tar| {
            unpack_as_container_root(privilege, tar, &target, warn)
                .map_err(|e| Error::Message(format!("unpack layer {diff_id}: {e}")))
        })
    };
    if let Err(e) = unpacked {
        if !privilege.is_root() {
            let _ = remove_as_root(privilege, &target);
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
    blob_reader: impl std::io::Read + Send,
    target: &Path,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    privilege: &Privilege,
    warn: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    verify_while(blob_reader, blob, diff_id, |tar| {
        unpack_tar(tar, target, privilege, warn)
    })
}

/// Decompresses `blob_reader`, hands the tar stream to `consume`, and checks that the
/// whole uncompressed stream (the padding after the end-of-archive marker included)
/// hashes to `diff_id`.
///
/// Decompressing and hashing run on a thread of their own, [`READ_AHEAD`] chunks ahead of
/// `consume`, which creates the files: the two halves of an unpack take similar time, so on
/// two cores the base image of a cold build unpacks in about the time of the slower one.
/// The thread hashes every byte whether or not `consume` reads it, and stops early only
/// when `consume` fails.
fn verify_while(
    blob_reader: impl std::io::Read + Send,
    blob: &crate::Digest,
    diff_id: &crate::Digest,
    consume: impl FnOnce(&mut dyn std::io::Read) -> Result<(), Error>,
) -> Result<(), Error> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let stop = AtomicBool::new(false);
    let (chunks, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(READ_AHEAD);
    let (spent, spent_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let stop = &stop;
        let producer = scope.spawn(move || -> std::io::Result<crate::Digest> {
            let fail = |e: std::io::Error| {
                let _ = chunks.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                e
            };
            let reader = decompressed(blob_reader).map_err(fail)?;
            let mut hashing = crate::digest::HashingReader::new(reader);
            let mut consumer_gone = false;
            while !stop.load(Ordering::Relaxed) {
                let mut buf = spent_rx.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let n = read_full(&mut hashing, &mut buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if !consumer_gone && chunks.send(Ok(buf)).is_err() {
                    // `consume` is done before the end (the tar's end marker): the rest is
                    // still hashed.
                    consumer_gone = true;
                }
            }
            Ok(hashing.finish().1)
        });
        let mut reader = ChunkReader {
            rx: Some(rx),
            spent,
            current: Vec::new(),
            pos: 0,
        };
        let consumed = consume(&mut reader);
        if consumed.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Lets the thread run to the end without a reader.
        reader.rx = None;
        let hashed = producer.join().map_err(|_| {
            Error::Message(format!(
                "read layer {blob}: the decompressing thread panicked"
            ))
        })?;
        consumed?;
        let actual = hashed.map_err(|e| Error::Message(format!("read layer {blob}: {e}")))?;
        if &actual != diff_id {
            return Err(Error::DiffIdMismatch {
                blob: blob.to_string(),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    })
}

/// Chunks of decompressed layer [`verify_while`] keeps in flight ahead of the unpacker.
const READ_AHEAD: usize = 16;
/// Bytes per chunk.
const CHUNK: usize = 256 * 1024;

/// Fills `buf` as far as the stream goes; fewer bytes only at its end.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The unpacker's side of [`verify_while`]: reads the chunks the decompressing thread sends,
/// and hands emptied ones back for reuse.
struct ChunkReader {
    rx: Option<std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.current, chunk);
                    let _ = self.spent.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                // The stream ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
