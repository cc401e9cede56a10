//! [`InputsHash`]: the digest of what a COPY writes, for its cache key.
//!
//! A two-level Merkle hash: each planned entry gets its own digest over a framed record of
//! destination path, type, mode (after `--chmod`), uid/gid (after `--chown`), content
//! sha256, link target, device number and xattrs — never mtime, inode or host paths — and
//! the inputs digest is taken over the sorted `(path, entry digest)` list. The entry digests
//! are kept per source path so `--explain` can name the context file that changed.
//!
//! With a [`StatCache`] ([`hash_sources_cached`]), a file whose stat data is unchanged since
//! it was last read takes its remembered content digest instead of being read again; the
//! digest, and so the key, is the same either way.

use super::plan::{plan_copy, plan_copy_cached, EntryKind, PlannedEntry};
use super::resolve::Source;
use super::statcache::StatCache;
use super::{read_err, CopyOptions, Error};
use crate::cache::Framer;
use crate::digest::{Digest, HashingWriter};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;

/// The inputs digest of a COPY and its per-file parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputsHash {
    pub digest: Digest,
    /// Source path (relative to its root) → entry digest, for `--explain`.
    pub files: BTreeMap<String, Digest>,
}

/// Plans the copy of `sources` to `dest` and hashes the result (see [`hash_plan`]).
pub fn hash_sources(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
) -> Result<InputsHash, Error> {
    hash_plan(&plan_copy(sources, dest, opts)?)
}

/// Like [`hash_sources`], reading only the files `cache` cannot vouch for.
pub fn hash_sources_cached(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
    cache: &mut StatCache,
) -> Result<InputsHash, Error> {
    let plan = plan_copy_cached(sources, dest, opts, Some(cache))?;
    // The plan is consumed as it is hashed: each entry's paths are freed (its source path
    // moved into the `--explain` map) as the next is hashed, so a 100,000-file plan and
    // that map are not both whole in memory.
    cache.begin();
    combine_with(plan.len(), plan, |e| cached_content(e, cache))
}

/// A file's content digest through `cache` (see [`hash_plan_cached`]).
fn cached_content(e: &PlannedEntry, cache: &mut StatCache) -> Result<Option<Digest>, Error> {
    match (&e.kind, e.stat) {
        (EntryKind::File { .. }, Some(stat)) => {
            if let Some(d) = cache.get(&e.source, &stat) {
                return Ok(Some(d));
            }
            let d = content_digest(e)?;
            cache.put(&e.source, stat, d.clone(), &e.xattrs);
            Ok(Some(d))
        }
        (EntryKind::File { .. }, None) => content_digest(e).map(Some),
        (EntryKind::Socket, _) => Ok(Some(Digest::of_bytes(b""))),
        _ => Ok(None),
    }
}

/// Hashes a plan: a pure function of the entries' hashed fields and file contents.
pub fn hash_plan(plan: &[PlannedEntry]) -> Result<InputsHash, Error> {
    combine_with(plan.len(), plan, |e| match e.kind {
        EntryKind::File { .. } => content_digest(e).map(Some),
        EntryKind::Socket => Ok(Some(Digest::of_bytes(b""))),
        _ => Ok(None),
    })
}

/// [`hash_plan`] with file contents taken from `cache` where the stat data the plan saw is
/// the one recorded, and recorded there after reading otherwise.
pub fn hash_plan_cached(plan: &[PlannedEntry], cache: &mut StatCache) -> Result<InputsHash, Error> {
    cache.begin();
    combine_with(plan.len(), plan, |e| cached_content(e, cache))
}

/// The inputs hash of a plan given each file's content digest (`None` for non-files):
/// shared by [`hash_plan`] and staging, which digests the bytes as it writes them.
pub(crate) fn combine(plan: &[PlannedEntry], contents: &[Option<Digest>]) -> InputsHash {
    let mut contents = contents.iter();
    combine_with(plan.len(), plan, |_| {
        Ok::<_, Error>(contents.next().cloned().flatten())
    })
    .expect("no error to return")
}

/// The inputs hash of a plan, asking `content` for each entry's content digest in plan
/// order: each is folded in as it comes, so no list of 100,000 digests is held.
fn combine_with<E: Planned>(
    len: usize,
    plan: impl IntoIterator<Item = E>,
    mut content: impl FnMut(&PlannedEntry) -> Result<Option<Digest>, Error>,
) -> Result<InputsHash, Error> {
    let mut top = Framer::new("cairn/copy/v1");
    top.u64(len as u64);
    let mut files = Vec::with_capacity(len);
    for e in plan {
        let d = entry_digest(e.entry(), content(e.entry())?.as_ref());
        top.field(&e.entry().dest);
        top.field(d.as_str().as_bytes());
        files.push((e.into_source_rel(), d));
    }
    // Collected at once, the map is built in one pass (a stable sort of an almost sorted
    // list, then a bulk build) instead of by 20,000 inserts; of two entries for one source
    // path the later wins, as inserting them in order did.
    Ok(InputsHash {
        digest: top.digest(),
        files: files.into_iter().collect(),
    })
}

/// A planned entry borrowed or owned: an owned one gives up its source path to the
/// `--explain` map instead of having it copied.
trait Planned {
    fn entry(&self) -> &PlannedEntry;
    fn into_source_rel(self) -> String;
}

impl Planned for &PlannedEntry {
    fn entry(&self) -> &PlannedEntry {
        self
    }
    fn into_source_rel(self) -> String {
        self.source_rel.clone()
    }
}

impl Planned for PlannedEntry {
    fn entry(&self) -> &PlannedEntry {
        self
    }
    fn into_source_rel(self) -> String {
        self.source_rel
    }
}

fn entry_digest(e: &PlannedEntry, content: Option<&Digest>) -> Digest {
    let mut f = Framer::new("cairn/copy-entry/v1");
    f.field(&e.dest);
    f.u64(u64::from(e.mode));
    f.u64(u64::from(e.uid));
    f.u64(u64::from(e.gid));
    match &e.kind {
        EntryKind::Dir => f.field(b"dir"),
        // A socket lands as an empty file: the same entry as one.
        EntryKind::File { .. } | EntryKind::Socket => {
            f.field(b"file");
            f.field(content.map_or("", Digest::as_str).as_bytes());
        }
        EntryKind::Symlink { target } => {
            f.field(b"symlink");
            f.field(target);
        }
        EntryKind::Hardlink { first } => {
            f.field(b"hardlink");
            f.field(first);
        }
        EntryKind::Fifo => f.field(b"fifo"),
        EntryKind::CharDevice { rdev } => {
            f.field(b"char");
            f.u64(*rdev);
        }
        EntryKind::BlockDevice { rdev } => {
            f.field(b"block");
            f.u64(*rdev);
        }
    }
    f.u64(e.xattrs.len() as u64);
    for (name, value) in &e.xattrs {
        f.field(name);
        f.field(value);
    }
    f.digest()
}

fn content_digest(e: &PlannedEntry) -> Result<Digest, Error> {
    let mut file = File::open(&e.source).map_err(read_err(&e.source))?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut w).map_err(read_err(&e.source))?;
    Ok(w.finish().1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn link() -> PlannedEntry {
        PlannedEntry {
            dest: b"app/link".to_vec(),
            source: PathBuf::from("/ctx/app/link"),
            source_rel: "app/link".into(),
            kind: EntryKind::Symlink {
                target: b"util.py".to_vec(),
            },
            mode: 0o777,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
            mtime: (1_700_000_000, 0),
            inode: None,
            stat: None,
        }
    }

    fn digest(e: &PlannedEntry) -> Digest {
        entry_digest(e, None)
    }

    #[test]
    fn entry_digest_is_a_function_of_the_hashed_fields_only() {
        let base = digest(&link());
        // Not hashed: where the source lives on this machine, its mtime, its inode.
        let mut e = link();
        e.source = PathBuf::from("/elsewhere/on/another/machine");
        e.mtime = (0, 1);
        e.inode = Some((1, 2));
        assert_eq!(digest(&e), base);

        type Change = (&'static str, fn(&mut PlannedEntry));
        let changes: [Change; 8] = [
            ("dest", |e| e.dest = b"app/link2".to_vec()),
            ("mode", |e| e.mode = 0o755),
            ("uid", |e| e.uid = 1),
            ("gid", |e| e.gid = 1),
            ("target", |e| {
                e.kind = EntryKind::Symlink {
                    target: b"other".to_vec(),
                }
            }),
            ("type", |e| e.kind = EntryKind::Fifo),
            ("rdev", |e| e.kind = EntryKind::CharDevice { rdev: 0x0103 }),
            ("xattr", |e| {
                e.xattrs.insert(b"user.x".to_vec(), b"1".to_vec());
            }),
        ];
        let mut seen = vec![base];
        for (what, change) in changes {
            let mut e = link();
            change(&mut e);
            let d = digest(&e);
            assert!(!seen.contains(&d), "{what} did not change the entry digest");
            seen.push(d);
        }
    }

    #[test]
    fn file_content_and_hardlinks_are_distinct() {
        let mut file = link();
        file.kind = EntryKind::File { size: 3 };
        let a = entry_digest(&file, Some(&Digest::of_bytes(b"abc")));
        let b = entry_digest(&file, Some(&Digest::of_bytes(b"abd")));
        assert_ne!(a, b);
        file.kind = EntryKind::Hardlink {
            first: b"app/a".to_vec(),
        };
        assert_ne!(entry_digest(&file, None), a);
        // The size is what the content says; only the content digest counts.
        let mut bigger = link();
        bigger.kind = EntryKind::File { size: 99 };
        let mut smaller = bigger.clone();
        smaller.kind = EntryKind::File { size: 1 };
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            entry_digest(&bigger, Some(&d)),
            entry_digest(&smaller, Some(&d))
        );
    }

    #[test]
    fn the_list_digest_covers_paths_and_order() {
        let a = link();
        let mut b = link();
        b.dest = b"app/z".to_vec();
        b.source_rel = "app/z".into();
        let one = combine(std::slice::from_ref(&a), &[None]);
        let two = combine(&[a, b], &[None, None]);
        assert_ne!(one.digest, two.digest);
        assert_eq!(two.files.len(), 2);
        assert_eq!(two.files["app/link"], one.files["app/link"]);
    }
}
