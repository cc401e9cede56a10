//! [`StatCache`]: remembers the content sha256 of context files by their stat data, so a
//! COPY whose sources did not change is keyed without reading them again.
//!
//! It only decides whether a file must be re-hashed; the cache key stays content-only (the
//! digest the cache hands out is the one a full read computed earlier). An entry is used
//! only when the file's (device, inode, size, mtime, ctime) are exactly those recorded.
//!
//! Racy timestamps are handled as git handles its index: a file changed within the same
//! timestamp tick as it was hashed would keep its stat data, so an entry is recorded only
//! when the file's mtime and ctime are older than the moment hashing began, less a margin
//! ([`RACY_MARGIN`]) that covers coarse and whole-second filesystem clocks. Such a "racily
//! clean" file is simply hashed again next time, until it has aged past the margin. A file
//! restored to its old size and mtime (`touch -d`) still has a new ctime, so it is re-hashed.
//!
//! The cache is the caller's to load and save (the executor keeps it in the store as a
//! record, written atomically); this module never touches the store. Its on-disk form is a
//! flat length-prefixed record list rather than JSON: read once per build on the no-op
//! path, it must parse 20,000 entries in well under a millisecond.

use crate::digest::Digest;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files changed less than this long before hashing began are never recorded.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

const MAGIC: &[u8; 16] = b"cairn-statcache1";
/// dev, ino, size, mtime (s, ns), ctime (s, ns): 7 × 8 bytes, then the 32-byte sha256.
const FIXED: usize = 7 * 8 + 32;

/// The stat data that must be unchanged for a remembered digest to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl StatKey {
    pub fn of(md: &std::fs::Metadata) -> StatKey {
        StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// Whether both timestamps are strictly before `cutoff` (seconds, nanoseconds).
    fn settled_before(&self, cutoff: (i64, i64)) -> bool {
        self.mtime < cutoff && self.ctime < cutoff
    }
}

/// What is remembered of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    stat: StatKey,
    /// The content sha256, raw: parsing 20,000 entries builds no digest strings.
    sha256: [u8; 32],
    xattrs: Xattrs,
}

type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Content digests of files by path, valid while their [`StatKey`] is unchanged.
#[derive(Debug, Default, Clone)]
pub struct StatCache {
    /// By path bytes (comparing bytes is several times cheaper than comparing `Path`s).
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Timestamps at or after this are racy (set by [`StatCache::begin`]).
    cutoff: (i64, i64),
    changed: bool,
    /// "Now" for [`StatCache::begin`], when a test sets it.
    now: Option<SystemTime>,
    /// Lookups answered from the cache / files hashed, since load.
    pub hits: usize,
    pub misses: usize,
}

impl StatCache {
    /// Parses a saved cache; anything unreadable gives an empty cache (it is only a cache).
    pub fn from_bytes(bytes: &[u8]) -> StatCache {
        StatCache {
            entries: parse(bytes).unwrap_or_default(),
            ..StatCache::default()
        }
    }

    /// Marks the start of a hashing pass: files changed from `RACY_MARGIN` before now on
    /// will not be recorded.
    pub fn begin(&mut self) {
        let at = self
            .now
            .unwrap_or_else(SystemTime::now)
            .checked_sub(RACY_MARGIN)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        self.cutoff = (at.as_secs() as i64, i64::from(at.subsec_nanos()));
    }

    /// Takes `now` as the current time for racy checks: for tests, which cannot age a
    /// file's ctime.
    pub fn with_clock(mut self, now: SystemTime) -> StatCache {
        self.now = Some(now);
        self
    }

    /// The remembered digest of `path` if its stat data is exactly `key` and it was settled
    /// when recorded.
    pub fn get(&mut self, path: &Path, key: &StatKey) -> Option<Digest> {
        match self.entries.get(path.as_os_str().as_bytes()) {
            Some(e) if &e.stat == key => {
                self.hits += 1;
                Some(Digest::from_sha256(e.sha256))
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// The remembered xattrs of `path` if its stat data is exactly `key` (the plan asks,
    /// so an unchanged file costs no xattr listing either).
    pub fn xattrs(&self, path: &Path, key: &StatKey) -> Option<&Xattrs> {
        match self.entries.get(path.as_os_str().as_bytes()) {
            Some(e) if &e.stat == key => Some(&e.xattrs),
            _ => None,
        }
    }

    /// Records the digest and xattrs of `path` as read with stat data `key` (taken before
    /// reading), unless the file is racily clean; forgets any older entry for it either way.
    pub fn put(&mut self, path: &Path, key: StatKey, digest: Digest, xattrs: &Xattrs) {
        let path = path.as_os_str().as_bytes();
        if key.settled_before(self.cutoff) {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(digest.hex(), &mut sha256).expect("a digest is 64 hex digits");
            let new = Entry {
                stat: key,
                sha256,
                xattrs: xattrs.clone(),
            };
            if self.entries.get(path) != Some(&new) {
                self.entries.insert(path.to_vec(), new);
                self.changed = true;
            }
        } else if self.entries.remove(path).is_some() {
            self.changed = true;
        }
    }

    /// Whether anything was recorded or forgotten since load (else there is nothing to save).
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The saved form (see the module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + self.entries.len() * (FIXED + 64));
        out.extend_from_slice(MAGIC);
        for (p, e) in &self.entries {
            let k = &e.stat;
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
            for v in [k.dev, k.ino, k.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [k.mtime.0, k.mtime.1, k.ctime.0, k.ctime.1] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.sha256);
            out.extend_from_slice(&(e.xattrs.len() as u32).to_le_bytes());
            for (name, value) in &e.xattrs {
                for b in [name, value] {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }
}

/// The saved records, in the order written (sorted, so the map is built in one pass).
fn parse(bytes: &[u8]) -> Option<BTreeMap<Vec<u8>, Entry>> {
    let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
    // Sized for paths of ~60 bytes up front: growing the list record by record cost more
    // than parsing it.
    let mut out = Vec::with_capacity(rest.len() / (4 + 60 + FIXED + 4));
    let u64_at =
        |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let path = rest.get(4..4 + len)?;
        let fixed = rest.get(4 + len..4 + len + FIXED)?;
        let key = StatKey {
            dev: u64_at(fixed, 0),
            ino: u64_at(fixed, 1),
            size: u64_at(fixed, 2),
            mtime: (u64_at(fixed, 3) as i64, u64_at(fixed, 4) as i64),
            ctime: (u64_at(fixed, 5) as i64, u64_at(fixed, 6) as i64),
        };
        let sha: [u8; 32] = fixed[56..88].try_into().ok()?;
        rest = &rest[4 + len + FIXED..];
        let mut xattrs = Xattrs::new();
        for _ in 0..take_u32(&mut rest)? {
            let name = take_bytes(&mut rest)?;
            let value = take_bytes(&mut rest)?;
            xattrs.insert(name, value);
        }
        out.push((
            path.to_vec(),
            Entry {
                stat: key,
                sha256: sha,
                xattrs,
            },
        ));
    }
    Some(out.into_iter().collect())
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    *rest = &rest[4..];
    Some(n)
}

fn take_bytes(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = take_u32(rest)? as usize;
    let b = rest.get(..len)?.to_vec();
    *rest = &rest[len..];
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mtime: i64, ctime: i64) -> StatKey {
        StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (mtime, 5),
            ctime: (ctime, 7),
        }
    }

    #[test]
    fn round_trips_and_matches_only_identical_stat_data() {
        let mut c = StatCache::default();
        c.begin();
        let d = Digest::of_bytes(b"abc");
        let mut x = Xattrs::new();
        x.insert(b"user.a".to_vec(), b"1".to_vec());
        c.put(Path::new("/ctx/a"), key(1000, 1000), d.clone(), &x);
        assert!(c.is_changed());
        let mut back = StatCache::from_bytes(&c.to_bytes());
        assert_eq!(back.len(), 1);
        assert_eq!(back.get(Path::new("/ctx/a"), &key(1000, 1000)), Some(d));
        assert_eq!(back.xattrs(Path::new("/ctx/a"), &key(1000, 1000)), Some(&x));
        assert_eq!(back.xattrs(Path::new("/ctx/a"), &key(1000, 1001)), None);
        // A new ctime (what `touch -d` leaves behind) or any other field: re-hash.
        assert_eq!(back.get(Path::new("/ctx/a"), &key(1000, 1001)), None);
        let mut other = key(1000, 1000);
        other.ino = 9;
        assert_eq!(back.get(Path::new("/ctx/a"), &other), None);
        assert_eq!(back.get(Path::new("/ctx/b"), &key(1000, 1000)), None);
        assert_eq!((back.hits, back.misses), (1, 3));
        assert!(!back.is_changed());
        // Garbage is an empty cache, not an error.
        assert!(StatCache::from_bytes(b"junk").is_empty());
        let mut cut = c.to_bytes();
        cut.truncate(cut.len() - 1);
        assert!(StatCache::from_bytes(&cut).is_empty());
    }

    #[test]
    fn racily_clean_files_are_not_recorded() {
        let mut c = StatCache::default();
        c.begin();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let d = Digest::of_bytes(b"x");
        // Changed just now (within the margin): not recorded, and an old entry is dropped.
        let none = Xattrs::new();
        c.put(Path::new("/ctx/a"), key(1000, 1000), d.clone(), &none);
        c.put(Path::new("/ctx/a"), key(now, now), d.clone(), &none);
        assert!(c.is_empty());
        // An old mtime but a fresh ctime is just as racy.
        c.put(Path::new("/ctx/b"), key(1000, now), d.clone(), &none);
        assert!(c.is_empty());
        c.put(Path::new("/ctx/c"), key(now - 10, now - 10), d, &none);
        assert_eq!(c.len(), 1);
    }
}
