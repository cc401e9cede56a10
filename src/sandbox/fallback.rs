//! The copy-based fallback for machines without overlayfs: [`merge_layers`] copies the
//! layer stack into one directory (applying whiteouts and opaque markers), the step runs
//! on that copy, and [`write_changes`] compares it with the [`Snapshot`] taken before the
//! run and writes the difference into the upper directory in overlayfs form, so the layer
//! writer cannot tell the two paths apart.
//!
//! Changes are found by identity (inode number and birth time, since a freed inode number
//! is soon reused) and ctime: the copy is ours alone, so an entry with a new identity was
//! replaced (a directory then becomes opaque) and one with a new ctime was modified, in
//! content or metadata. No content is compared.
//!
//! Both run as root, real or of a user namespace with the user's maps (`copyroot`), so
//! owners are copied and a node that cannot be made is an error.

use crate::overlay::{is_opaque, is_overlay_xattr, is_whiteout, make_whiteout, mark_opaque};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// Copies `layers` (bottom first) into the new directory `dest` as overlayfs would show them.
pub fn merge_layers(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    fs::create_dir_all(dest)?;
    for layer in layers {
        let mut links = HashMap::new();
        let mut dirs = Vec::new();
        for entry in WalkDir::new(layer).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(io::Error::from)?;
            let rel = entry
                .path()
                .strip_prefix(layer)
                .expect("walk stays below its root");
            let target = dest.join(rel);
            let meta = entry.path().symlink_metadata()?;
            if is_whiteout(&meta) {
                remove_any(&target)?;
                continue;
            }
            if meta.is_dir() {
                let opaque = is_opaque(entry.path());
                match target.symlink_metadata() {
                    Ok(m) if m.is_dir() && opaque => clear_dir(&target)?,
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target)?;
                        fs::create_dir(&target)?;
                    }
                    Err(_) => fs::create_dir(&target)?,
                }
                copy_metadata(entry.path(), &target, &meta)?;
                dirs.push((target, meta));
                continue;
            }
            remove_any(&target)?;
            copy_node(entry.path(), &target, &meta, &mut links)?;
        }
        for (dir, meta) in dirs.iter().rev() {
            set_mtime(dir, meta)?;
        }
    }
    Ok(())
}

/// Identity and ctime of one entry.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    identity: (u64, Option<std::time::SystemTime>),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            identity: (m.ino(), m.created().ok()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The `Stamp` (identity and ctime) of every entry of a tree, by relative path.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Snapshot(BTreeMap<PathBuf, Stamp>);

impl Snapshot {
    /// Keeps the snapshot in a file (a rootless copy is diffed by another process).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        fs::write(path, serde_json::to_vec(self).map_err(io::Error::other)?)
    }

    pub fn load(path: &Path) -> io::Result<Snapshot> {
        serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)
    }

    pub fn take(root: &Path) -> io::Result<Snapshot> {
        let mut map = BTreeMap::new();
        for entry in WalkDir::new(root).min_depth(1) {
            let entry = entry.map_err(io::Error::from)?;
            let m = entry.path().symlink_metadata()?;
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("walk stays below its root")
                .to_path_buf();
            map.insert(rel, Stamp::of(&m));
        }
        Ok(Snapshot(map))
    }
}

/// Writes what changed in `root` since `before` into `upper`: new and modified entries,
/// whiteouts for removed ones, opaque markers on replaced directories.
pub fn write_changes(before: &Snapshot, root: &Path, upper: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    let mut replaced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut dirs = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(io::Error::from)?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walk stays below its root")
            .to_path_buf();
        let meta = entry.path().symlink_metadata()?;
        seen.insert(rel.clone());
        let under_replaced = replaced.iter().any(|r| rel.starts_with(r));
        let now = Stamp::of(&meta);
        let state = before.0.get(&rel);
        let changed = state != Some(&now);
        if !changed && !under_replaced {
            continue;
        }
        let target = upper.join(&rel);
        ensure_parents(root, upper, &rel)?;
        if meta.is_dir() {
            if !target.is_dir() {
                fs::create_dir(&target)?;
            }
            copy_metadata(entry.path(), &target, &meta)?;
            if state.is_some_and(|s| s.identity != now.identity) && !under_replaced {
                mark_opaque(&target)?;
                replaced.insert(rel.clone());
            }
            dirs.push((target, meta));
        } else {
            copy_node(entry.path(), &target, &meta, &mut links)?;
        }
    }
    for rel in before.0.keys() {
        let parent_gone = rel
            .parent()
            .is_some_and(|p| !p.as_os_str().is_empty() && !seen.contains(p));
        let hidden = replaced.iter().any(|r| rel.starts_with(r));
        if seen.contains(rel) || parent_gone || hidden {
            continue;
        }
        ensure_parents(root, upper, rel)?;
        make_whiteout(&upper.join(rel))?;
    }
    for (dir, meta) in dirs.iter().rev() {
        set_mtime(dir, meta)?;
    }
    Ok(())
}

/// Creates the parents of `rel` in `upper` with the metadata they have in `root`.
fn ensure_parents(root: &Path, upper: &Path, rel: &Path) -> io::Result<()> {
    let mut acc = PathBuf::new();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        acc.push(c);
        let target = upper.join(&acc);
        if !target.exists() {
            fs::create_dir(&target)?;
            let src = root.join(&acc);
            let meta = src.symlink_metadata()?;
            copy_metadata(&src, &target, &meta)?;
            set_mtime(&target, &meta)?;
        }
    }
    Ok(())
}

/// Copies a non-directory, keeping hardlinks among the entries copied with one `links` map.
fn copy_node(
    src: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if meta.nlink() > 1 && ft.is_file() {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return fs::hard_link(first, dest);
        }
        links.insert((meta.dev(), meta.ino()), dest.to_path_buf());
    }
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else if ft.is_file() {
        fs::copy(src, dest)?;
    } else {
        let kind = if ft.is_fifo() {
            nix::sys::stat::SFlag::S_IFIFO
        } else if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else if ft.is_block_device() {
            nix::sys::stat::SFlag::S_IFBLK
        } else {
            return Ok(()); // sockets are not file system content
        };
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::sys::stat::mknod(dest, kind, mode, meta.rdev())?;
    }
    copy_metadata(src, dest, meta)?;
    set_mtime(dest, meta)
}

/// Owner, mode and xattrs (overlay's own excepted). Not the mtime.
fn copy_metadata(src: &Path, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    for name in xattr::list(src)? {
        let Some(n) = name.to_str() else { continue };
        if is_overlay_xattr(n) {
            continue;
        }
        if let Some(v) = xattr::get(src, &name)? {
            // Unprivileged copies cannot set trusted.* or security.*; overlayfs would
            // not have either.
            let _ = xattr::set(dest, &name, &v);
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let a = nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec());
    let m = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        path,
        &a,
        &m,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}
