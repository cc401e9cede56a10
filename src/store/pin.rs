//! [`Lease`]: what a running build holds, so a collection in any process leaves it alone.
//!
//! A build works with blobs, cache entries and unpacked layers that no index names yet (a
//! layer just committed, a state not yet recorded) or that a size-capped collection would
//! otherwise evict as least recently used. A store opened with [`Store::leased`] therefore
//! writes every digest it looks at or commits to `locks/pins/<owner token>.<n>` before
//! relying on it, and [`super::maintain::prune`] treats the pins of live owners as roots.
//! The file goes with the lease (or, after a crash, with its dead owner).
//!
//! Pinning takes the store's `gc` lock shared, and a collection holds it exclusively, so a
//! pin lands either before a collection reads the pins (and is honoured) or after it ends
//! (and the caller's following existence check sees what it removed): "pin, then check"
//! never trusts something that is being deleted.

use super::lock::Lock;
use super::{io_err, Error, Store};
use crate::digest::Digest;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Set while this process runs a collection (holding `gc` exclusively): its own pins must
/// not wait for the shared lock, which would deadlock.
pub(crate) static COLLECTING: AtomicBool = AtomicBool::new(false);

/// One build's pins; the file is removed when the lease is dropped.
pub struct Lease {
    path: PathBuf,
    pinned: Mutex<(BTreeSet<Digest>, Option<File>)>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.path.display())
    }
}

impl Lease {
    pub(super) fn new(store: &Store) -> Lease {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Lease {
            path: pins_dir(store.root()).join(format!("{}.{n}", store.owner_token())),
            pinned: Mutex::new((BTreeSet::new(), None)),
        }
    }

    /// Records `digests` (those not yet pinned) in the lease file.
    pub(super) fn pin<'a>(
        &self,
        store: &Store,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), Error> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let fresh: Vec<&Digest> = digests
            .into_iter()
            .filter(|d| !pinned.0.contains(*d))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let _shared = if COLLECTING.load(Ordering::SeqCst) {
            None
        } else {
            Some(Lock::acquire_shared(&store.root().join("locks/gc"))?)
        };
        if pinned.1.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err(&self.path))?;
            pinned.1 = Some(f);
        }
        let mut text = String::new();
        for d in &fresh {
            text.push_str(d.as_str());
            text.push('\n');
        }
        let file = pinned.1.as_mut().expect("opened above");
        file.write_all(text.as_bytes())
            .map_err(io_err(&self.path))?;
        pinned.0.extend(fresh.into_iter().cloned());
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub(super) fn pins_dir(root: &Path) -> PathBuf {
    root.join("locks/pins")
}

/// Every digest pinned by a live owner; pin files of dead owners are removed.
pub(crate) fn live_pins(store: &Store) -> Result<BTreeSet<Digest>, Error> {
    let dir = pins_dir(store.root());
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let token = name.split('.').next().unwrap_or("");
        if token.is_empty() || super::lock::owner_gone(store, token) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        // Appends happen under the shared `gc` lock, which the collection excludes, so
        // no line is half-written here; anything that does not parse is ignored.
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(text.lines().filter_map(|l| Digest::parse(l).ok()));
    }
    Ok(out)
}
