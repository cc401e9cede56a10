//! [`InputsHash`]: the digest of what a COPY writes, for its cache key.
//!
//! A two-level Merkle hash: each planned entry gets its own digest over a framed record of
//! destination path, type, mode (after `--chmod`), uid/gid (after `--chown`), content
//! sha256, link target, device number and xattrs — never mtime, inode or host paths — and
//! the inputs digest is taken over the sorted `(path, entry digest)` list. The entry digests
//! are kept per source path so `--explain` can name the context file that changed.

use super::plan::{plan_copy, EntryKind, PlannedEntry};
use super::resolve::Source;
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

/// Hashes a plan: a pure function of the entries' hashed fields and file contents.
pub fn hash_plan(plan: &[PlannedEntry]) -> Result<InputsHash, Error> {
    let contents = plan
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { .. } => content_digest(e).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(combine(plan, &contents))
}

/// The inputs hash of a plan given each file's content digest (`None` for non-files):
/// shared by [`hash_plan`] and staging, which digests the bytes as it writes them.
pub(crate) fn combine(plan: &[PlannedEntry], contents: &[Option<Digest>]) -> InputsHash {
    let mut top = Framer::new("cairn/copy/v1");
    top.u64(plan.len() as u64);
    let mut files = BTreeMap::new();
    for (e, content) in plan.iter().zip(contents) {
        let d = entry_digest(e, content.as_ref());
        top.field(&e.dest);
        top.field(d.as_str().as_bytes());
        files.insert(e.source_rel.clone(), d);
    }
    InputsHash {
        digest: top.digest(),
        files,
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
        EntryKind::File { .. } => {
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
