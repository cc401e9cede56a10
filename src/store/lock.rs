//! [`Lock`]: an exclusive `flock` on a file under `locks/`, and the per-process owner lock
//! that tells live temp files from stale ones.
//!
//! `flock` locks belong to the open file, so the kernel releases them when the holder dies:
//! a killed cairn never leaves a lock behind. Every process that opens a store takes an
//! owner lock `locks/owners/<token>` and names its temp files `tmp/<token>.…`; a temp file
//! whose owner lock can be taken belongs to a dead process and is removed.
//!
//! Lock files may be deleted while idle ([`prune_idle`]): a holder re-checks after `flock`
//! that its open file is still the one the path names, and starts over if it is not, so a
//! waiter that opened a file just before it was unlinked can never share the lock with a
//! newcomer that created a fresh one.

use super::{io_err, Error, Store};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// A held exclusive lock; released on drop (or when the process dies).
pub struct Lock {
    _file: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lock({})", self.path.display())
    }
}

impl Lock {
    /// Locks `path` (created if missing). With `wait == false`, `Ok(None)` when it is held.
    pub(super) fn acquire(path: &Path, wait: bool) -> Result<Option<Lock>, Error> {
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        Lock::acquire_as(path, arg)
    }

    /// A shared lock on `path`, waiting while an exclusive holder has it.
    pub(super) fn acquire_shared(path: &Path) -> Result<Lock, Error> {
        Lock::acquire_as(path, FlockArg::LockShared).map(|l| l.expect("blocking lock"))
    }

    fn acquire_as(path: &Path, arg: FlockArg) -> Result<Option<Lock>, Error> {
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            let locked = loop {
                match Flock::lock(file.try_clone().map_err(io_err(path))?, arg) {
                    Ok(f) => break f,
                    Err((_, Errno::EINTR)) => continue,
                    Err((_, Errno::EWOULDBLOCK)) if arg == FlockArg::LockExclusiveNonblock => {
                        return Ok(None)
                    }
                    Err((_, e)) => {
                        return Err(Error::Io {
                            path: path.to_path_buf(),
                            source: e.into(),
                        })
                    }
                }
            };
            // The file may have been unlinked by `prune_idle` while we waited: then this
            // lock guards nothing, and the path must be opened again.
            if same_file(&locked, path) {
                return Ok(Some(Lock {
                    _file: locked,
                    path: path.to_path_buf(),
                }));
            }
        }
    }
}

/// Whether the open `file` is the one `path` names now.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the lock files under `locks/` that nobody holds (each is locked, unlinked and
/// released; see the module doc for why a waiter cannot be fooled). Returns how many.
pub(crate) fn prune_idle(store: &Store) -> Result<usize, Error> {
    let dir = store.root().join("locks");
    let mut removed = 0;
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if let Some(held) = Lock::acquire(&path, false)? {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            drop(held);
        }
    }
    Ok(removed)
}

/// This process's owner lock for one store root, held for the life of the process (temp
/// directories handed out by the store may outlive any one `Store` value).
pub(super) struct Owner {
    token: String,
    _lock: Flock<File>,
}

impl Owner {
    pub(super) fn for_root(root: &Path) -> Result<Arc<Owner>, Error> {
        static OWNERS: OnceLock<Mutex<BTreeMap<PathBuf, Arc<Owner>>>> = OnceLock::new();
        let mut owners = OWNERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(o) = owners.get(root) {
            return Ok(o.clone());
        }
        let o = Arc::new(Owner::create(&root.join("locks/owners"))?);
        owners.insert(root.to_path_buf(), o.clone());
        Ok(o)
    }

    /// Creates `.init-<token>`, locks it, then renames it to `<token>`: a cleaner never sees
    /// an owner file under its final name before it is locked.
    fn create(dir: &Path) -> Result<Owner, Error> {
        let tmp = tempfile::Builder::new()
            .prefix(".init-")
            .rand_bytes(12)
            .tempfile_in(dir)
            .map_err(io_err(dir))?;
        let (file, path) = tmp.keep().map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e.error,
        })?;
        let token = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(".init-"))
            .expect("tempfile name has our prefix")
            .to_string();
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        let dest = dir.join(&token);
        fs::rename(&path, &dest).map_err(io_err(&dest))?;
        Ok(Owner { token, _lock: lock })
    }

    pub(super) fn token(&self) -> &str {
        &self.token
    }
}

/// Whether the owner `token` is gone (its lock file is missing or can be locked).
fn owner_dead(owners_dir: &Path, token: &str) -> bool {
    let p = owners_dir.join(token);
    match Lock::acquire_existing(&p) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(_) => !p.exists(),
    }
}

/// Whether the owner `token` of `store` is gone.
pub(super) fn owner_gone(store: &Store, token: &str) -> bool {
    owner_dead(&store.root().join("locks/owners"), token)
}

impl Lock {
    fn acquire_existing(path: &Path) -> std::io::Result<Option<Flock<File>>> {
        let f = File::open(path)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }
}

/// Removes temp files and directories whose owner died, and the dead owners' lock files.
/// Returns the number of temp entries removed.
pub(crate) fn clean_stale_temps(store: &Store) -> Result<usize, Error> {
    let tmp = store.tmp_root();
    let owners_dir = store.root().join("locks/owners");
    let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
    let mut removed = 0;
    for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
        let entry = entry.map_err(io_err(&tmp))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let token = name.split('.').next().unwrap_or("").to_string();
        let dead = *verdicts
            .entry(token.clone())
            .or_insert_with(|| token.is_empty() || owner_dead(&owners_dir, &token));
        if dead {
            let p = entry.path();
            let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
    }
    // Owner files of dead processes, and `.init-` files of processes killed mid-creation.
    for entry in fs::read_dir(&owners_dir).map_err(io_err(&owners_dir))? {
        let entry = entry.map_err(io_err(&owners_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if name.starts_with(".init-") {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            age.is_some_and(|a| a > Duration::from_secs(60))
        } else {
            owner_dead(&owners_dir, &name)
        };
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(removed)
}
