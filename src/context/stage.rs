//! [`stage`]: materialises a COPY under a layer root, exactly as planned and hashed.
//!
//! Destination parents are created `0755`; files, symlinks (as links), empty directories,
//! FIFOs and device nodes are written with their planned modes and source mtimes; later
//! names of one inode become hardlinks to the first; xattrs are set where the filesystem
//! supports them. Directory modes and times are applied last, deepest first, so a
//! read-only directory can still be filled. A planned owner other than 0:0 (`COPY --from`
//! keeps the source's) is set where this process may (as root); `--chown` and the
//! rootless owner mapping are left to the layer writer.

use super::hash::{combine, InputsHash};
use super::plan::{plan_copy, EntryKind, PlannedEntry};
use super::resolve::Source;
use super::{CopyOptions, Error};
use crate::digest::{Digest, HashingWriter};
use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Plans the copy of `sources` to `dest` (absolute, after WORKDIR) and writes it under
/// `layer_root`.
pub fn stage(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
    layer_root: &Path,
) -> Result<(), Error> {
    stage_plan(&plan_copy(sources, dest, opts)?, layer_root).map(drop)
}

/// Like [`stage`], but fails if what was written is not what `expected` (the hash the
/// step's cache key was computed from) describes: a context file edited between hashing
/// and copying must not be stored under the old key.
pub fn stage_checked(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
    layer_root: &Path,
    expected: &InputsHash,
) -> Result<(), Error> {
    let written = stage_plan(&plan_copy(sources, dest, opts)?, layer_root)?;
    if written.digest == expected.digest {
        return Ok(());
    }
    let changed = written
        .files
        .iter()
        .find(|(path, d)| expected.files.get(*path) != Some(d))
        .or_else(|| {
            expected
                .files
                .iter()
                .find(|(p, _)| !written.files.contains_key(*p))
        })
        .map_or_else(|| "?".to_string(), |(p, _)| p.clone());
    Err(Error::ChangedDuringBuild { path: changed })
}

/// Writes planned entries under `layer_root` and returns the inputs hash of what it wrote
/// (file contents digested as they are copied).
pub fn stage_plan(plan: &[PlannedEntry], layer_root: &Path) -> Result<InputsHash, Error> {
    let mut dirs: Vec<&PlannedEntry> = Vec::new();
    let mut contents = Vec::with_capacity(plan.len());
    for e in plan {
        let path = layer_root.join(OsStr::from_bytes(&e.dest));
        if let Some(parent) = path.parent() {
            make_parents(layer_root, parent)?;
        }
        contents.push(write_entry(e, &path, layer_root).map_err(write_err(&path))?);
        if e.kind == EntryKind::Dir {
            dirs.push(e);
        } else {
            finish(e, &path).map_err(write_err(&path))?;
        }
    }
    for e in dirs.iter().rev() {
        let path = layer_root.join(OsStr::from_bytes(&e.dest));
        finish(e, &path).map_err(write_err(&path))?;
    }
    Ok(combine(plan, &contents))
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates missing parents `0755` (Docker's mode for them, whatever the umask). The layer
/// root is ours and holds only what the plan wrote, whose parents are always directories.
fn make_parents(layer_root: &Path, parent: &Path) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut p = parent;
    while p.starts_with(layer_root) && p != layer_root && !p.is_dir() {
        missing.push(p);
        match p.parent() {
            Some(up) => p = up,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(write_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(write_err(dir))?;
    }
    Ok(())
}

/// Writes one entry; returns the content digest of a regular file.
fn write_entry(e: &PlannedEntry, path: &Path, layer_root: &Path) -> io::Result<Option<Digest>> {
    clear_conflict(path, e.kind == EntryKind::Dir)?;
    let mut content = None;
    match &e.kind {
        EntryKind::Dir => {
            if !path.is_dir() {
                fs::DirBuilder::new().mode(0o700).create(path)?;
            }
        }
        EntryKind::File { .. } => {
            let mut from = fs::File::open(&e.source)?;
            let to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            let mut to = HashingWriter::new(to);
            io::copy(&mut from, &mut to)?;
            content = Some(to.finish().1);
        }
        EntryKind::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path)?;
        }
        EntryKind::Hardlink { first } => {
            fs::hard_link(layer_root.join(OsStr::from_bytes(first)), path)?;
        }
        EntryKind::Socket => {
            let to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            content = Some(HashingWriter::new(to).finish().1);
        }
        EntryKind::Fifo => mknod(path, SFlag::S_IFIFO, e.mode, 0)?,
        EntryKind::CharDevice { rdev } => mknod(path, SFlag::S_IFCHR, e.mode, *rdev)?,
        EntryKind::BlockDevice { rdev } => mknod(path, SFlag::S_IFBLK, e.mode, *rdev)?,
    }
    if !matches!(e.kind, EntryKind::Symlink { .. }) {
        for (name, value) in &e.xattrs {
            match xattr::set(path, OsStr::from_bytes(name), value) {
                Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                other => other?,
            }
        }
    }
    Ok(content)
}

/// Removes what sits at `path` unless it is a directory that stays a directory.
fn clear_conflict(path: &Path, want_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() && want_dir => Ok(()),
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn mknod(path: &Path, kind: SFlag, mode: u32, rdev: u64) -> io::Result<()> {
    stat::mknod(path, kind, Mode::from_bits_truncate(mode), rdev).map_err(io::Error::from)
}

/// Mode (not for symlinks) and mtime, applied after the content is in place.
fn finish(e: &PlannedEntry, path: &Path) -> io::Result<()> {
    // Owner first: chown clears set-id bits the mode then restores.
    if (e.uid, e.gid) != (0, 0) && !matches!(e.kind, EntryKind::Hardlink { .. }) {
        match std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid)) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {}
            other => other?,
        }
    }
    if !matches!(
        e.kind,
        EntryKind::Symlink { .. } | EntryKind::Hardlink { .. }
    ) {
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode))?;
    }
    if matches!(e.kind, EntryKind::Hardlink { .. }) {
        return Ok(());
    }
    let t = TimeSpec::new(e.mtime.0, e.mtime.1);
    stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}
