//! [`TagEntry`] and [`CacheEntry`]: the store's two indexes, one small JSON file per entry
//! (`tags/<sha256 of reference>.json`, `cache/<key hex>.json`), plus named records.
//!
//! One file per entry keeps every update a single atomic rename, with no shared index file
//! to lock or corrupt. Entries are written only after the blobs they name are committed,
//! and [`Store::cache_get`] re-checks that they still exist, so the index never lies.

use super::{io_err, safe_name, Error, Store};
use crate::cache::CacheKey;
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where a tag pointed when it was last resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    pub digest: Digest,
    /// RFC 3339, UTC.
    pub resolved_at: String,
}

/// The on-disk form of a tag entry: the reference is kept so `cache ls` can list it.
#[derive(Serialize, Deserialize)]
struct TagFile {
    reference: String,
    digest: Digest,
    resolved_at: String,
}

/// The result of one cached build step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// A blob the executor writes describing the step's result.
    pub state: Digest,
    /// Every blob the entry references (layers, configs); all must be in the store.
    pub refs: Vec<Digest>,
    /// RFC 3339, UTC.
    pub created: String,
}

/// The current time as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Reads a file, mapping "not found" to `None`.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadIndex {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

impl Store {
    fn tag_path(&self, reference: &str) -> PathBuf {
        self.root().join("tags").join(format!(
            "{}.json",
            Digest::of_bytes(reference.as_bytes()).hex()
        ))
    }

    fn cache_path(&self, key: &CacheKey) -> PathBuf {
        self.root()
            .join("cache")
            .join(format!("{}.json", key.hex()))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root().join("records").join(safe_name(name))
    }

    /// The digest `reference` (normalised, with a tag) resolved to last time, if any.
    pub fn tag_get(&self, reference: &str) -> Result<Option<TagEntry>, Error> {
        let p = self.tag_path(reference);
        let Some(bytes) = read_opt(&p)? else {
            return Ok(None);
        };
        let f: TagFile = parse(&p, &bytes)?;
        Ok(Some(TagEntry {
            digest: f.digest,
            resolved_at: f.resolved_at,
        }))
    }

    /// Records that `reference` resolves to `digest` now. The manifest blob must be stored.
    pub fn tag_set(&self, reference: &str, digest: &Digest) -> Result<(), Error> {
        if !self.has_blob(digest) {
            return Err(Error::MissingRef {
                key: reference.to_string(),
                blob: digest.clone(),
            });
        }
        let unchanged = self
            .tag_get(reference)
            .ok()
            .flatten()
            .is_some_and(|t| &t.digest == digest);
        let f = TagFile {
            reference: reference.to_string(),
            digest: digest.clone(),
            resolved_at: now_rfc3339(),
        };
        let bytes = serde_json::to_vec(&f).expect("tag entry serializes");
        if unchanged {
            // Only the time of the check changes: the entry on disk is as true as the new
            // one, so losing this write to a crash costs nothing, and a no-op build does
            // not wait for two fsyncs.
            self.replace_unsynced(&self.tag_path(reference), &bytes)
        } else {
            self.atomic_write(&self.tag_path(reference), &bytes)
        }
    }

    /// Every tag entry, sorted by reference.
    pub fn tag_list(&self) -> Result<Vec<(String, TagEntry)>, Error> {
        let mut out = Vec::new();
        for (path, bytes) in self.read_dir_json("tags")? {
            let f: TagFile = parse(&path, &bytes)?;
            out.push((
                f.reference,
                TagEntry {
                    digest: f.digest,
                    resolved_at: f.resolved_at,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub(crate) fn tag_remove(&self, reference: &str) -> Result<(), Error> {
        remove_opt(&self.tag_path(reference))
    }

    /// The entry for `key`, or `None` when there is none or any blob it names is missing
    /// (an entry that would hand out a missing blob is treated as absent, never trusted).
    /// A hit refreshes the entry's mtime, which `cache prune --keep-duration` reads.
    pub fn cache_get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, Error> {
        let p = self.cache_path(key);
        let Some(bytes) = read_opt(&p)? else {
            return Ok(None);
        };
        let entry: CacheEntry = parse(&p, &bytes)?;
        if !self.entry_complete(&entry) {
            return Ok(None);
        }
        if let Ok(f) = fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(Some(entry))
    }

    /// Stores the entry for `key`; fails (storing nothing) if any blob it names is missing.
    pub fn cache_put(&self, key: &CacheKey, entry: &CacheEntry) -> Result<(), Error> {
        for d in std::iter::once(&entry.state).chain(&entry.refs) {
            if !self.has_blob(d) {
                return Err(Error::MissingRef {
                    key: key.to_string(),
                    blob: d.clone(),
                });
            }
        }
        let bytes = serde_json::to_vec(entry).expect("cache entry serializes");
        self.atomic_write(&self.cache_path(key), &bytes)
    }

    pub(crate) fn entry_complete(&self, entry: &CacheEntry) -> bool {
        let _ = self.pin(std::iter::once(&entry.state).chain(&entry.refs));
        std::iter::once(&entry.state)
            .chain(&entry.refs)
            .all(|d| self.has_blob(d))
    }

    /// Every cache entry file: its path, its key hex and its parsed entry.
    pub(crate) fn cache_list(&self) -> Result<Vec<(PathBuf, CacheEntry)>, Error> {
        self.read_dir_json("cache")?
            .into_iter()
            .map(|(p, b)| parse(&p, &b).map(|e| (p, e)))
            .collect()
    }

    /// A small named record (e.g. the last build of a Dockerfile, for `--explain`).
    pub fn record_get(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        read_opt(&self.record_path(name))
    }

    /// At most the first `max` bytes of a named record: enough to read a stamp a large
    /// record opens with, without reading (and allocating) megabytes after it.
    pub fn record_head(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>, Error> {
        use std::io::Read;
        let p = self.record_path(name);
        let f = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let mut out = Vec::with_capacity(max);
        f.take(max as u64)
            .read_to_end(&mut out)
            .map_err(io_err(&p))?;
        Ok(Some(out))
    }

    /// Replaces a named record atomically.
    pub fn record_put(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        self.atomic_write(&self.record_path(name), bytes)
    }

    /// [`Store::record_put`], unless the record already holds exactly `bytes`: a small
    /// record rewritten by every build (a no-op too) then costs one read instead of a
    /// write, two fsyncs and a rename.
    pub fn record_put_if_changed(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        if self.record_get(name)?.as_deref() == Some(bytes) {
            return Ok(());
        }
        self.record_put(name, bytes)
    }

    fn read_dir_json(&self, dir: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
        let d = self.root().join(dir);
        let mut out = Vec::new();
        for e in fs::read_dir(&d).map_err(io_err(&d))? {
            let p = e.map_err(io_err(&d))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(b) = read_opt(&p)? {
                    out.push((p, b));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

pub(crate) fn remove_opt(p: &Path) -> Result<(), Error> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(p)(e)),
        _ => Ok(()),
    }
}
