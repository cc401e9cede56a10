//! [`unpack_tar`]: one layer tar into an overlay lower directory, entry by entry, with
//! every path resolved inside the target (see [`super::secure`]).
//!
//! Files are created here rather than by `tar::Entry::unpack`, which turns device nodes
//! and FIFOs into plain files and knows nothing of whiteouts. Directory modes and times
//! are applied last, deepest first, so a read-only directory can still be filled and
//! its mtime is not disturbed by its children.

use super::secure::{clean_entry_path, resolve_in_root};
use super::Error;
use crate::overlay::{self, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::userns::Privilege;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

/// Unpacks one uncompressed layer tar into `target` (an existing directory) securely:
/// nothing is created, overwritten or followed outside `target`; OCI whiteouts and
/// opaque markers become their overlayfs forms. It runs in this process, so rootless every
/// file belongs to the invoking user (`ensure_unpacked` instead unpacks rootless layers
/// inside a user namespace, keeping their owners); what could not be reproduced is
/// summed up in one line to `warn`.
pub fn unpack_tar(
    reader: impl Read,
    target: &Path,
    privilege: &Privilege,
    warn: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let mode = match privilege {
        Privilege::Root => Access::Root,
        Privilege::Rootless(_) => Access::Unprivileged,
    };
    let skipped = unpack_as(reader, target, mode)?;
    if let Some(first) = skipped.first() {
        warn(&skipped_summary(target, &skipped, first));
    }
    Ok(())
}

/// What the unpacking process may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Real root: everything.
    Root,
    /// Root of a user namespace mapping the user's subordinate ids: owners are kept, but
    /// device nodes and `trusted.*` xattrs cannot be made (skipped and reported).
    UserNamespace,
    /// An unprivileged process: no owners, devices or privileged xattrs.
    Unprivileged,
}

/// [`unpack_tar`] in an explicit mode; returns what could not be reproduced.
pub(super) fn unpack_as(
    reader: impl Read,
    target: &Path,
    mode: Access,
) -> Result<Vec<String>, Error> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        root: target.to_path_buf(),
        privilege: mode,
        dirs: Vec::new(),
        skipped: Vec::new(),
        buf: vec![0; 256 * 1024],
    };
    for entry in archive.entries().map_err(|e| Error::io(target, e))? {
        let mut entry = entry.map_err(|e| Error::io(target, e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
}

/// One line about what an unpack skipped.
pub(super) fn skipped_summary(target: &Path, skipped: &[String], first: &str) -> String {
    format!(
        "unpacking {} without full privileges skipped {} entr{} (first: {first})",
        target.display(),
        skipped.len(),
        if skipped.len() == 1 { "y" } else { "ies" }
    )
}

/// Metadata a tar header carries for one entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: PathBuf,
    privilege: Access,
    /// Directories whose mode and mtime are applied at the end.
    dirs: Vec<(PathBuf, Meta)>,
    /// What a rootless unpack could not reproduce, reported once at the end.
    skipped: Vec<String>,
    /// The copy buffer: far fewer write calls than `io::copy`'s 8 KiB.
    buf: Vec<u8>,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), Error> {
        let raw = entry
            .path()
            .map_err(|e| Error::io(&self.root, e))?
            .into_owned();
        let rel = clean_entry_path(&raw)
            .ok_or_else(|| Error::hostile(&raw, "the path climbs out of the layer"))?;
        let meta = read_meta(entry).map_err(|e| Error::io(&raw, e))?;
        let kind = entry.header().entry_type();
        // Names are bytes: a lossy conversion would unpack `caf\xe9` as `caf\u{fffd}`.
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            // The layer's root itself: only its metadata can be set.
            if kind.is_dir() {
                self.set_owner_and_xattrs(&self.root.clone(), &meta)?;
                self.dirs.push((self.root.clone(), meta));
            }
            return Ok(());
        };
        let parent = self.resolve_dir(&raw, rel.parent().unwrap_or(Path::new("")))?;
        if name.as_bytes() == OPAQUE_MARKER.as_bytes() {
            return overlay::mark_opaque(&parent).map_err(|e| Error::io(&parent, e));
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&raw, &parent, OsStr::from_bytes(hidden));
        }
        let dest = parent.join(&name);
        match kind {
            EntryType::Directory => self.directory(&dest, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &dest, &meta)
            }
            EntryType::Symlink => self.symlink(entry, &raw, &dest, &meta),
            EntryType::Link => self.hardlink(entry, &raw, &dest),
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.node(entry, &dest, &meta),
            // Extension headers are folded into the next entry by the tar reader; anything
            // else is not a file system object.
            _ => Ok(()),
        }
    }

    /// Resolves (creating when missing) the directory an entry goes into.
    fn resolve_dir(&self, raw: &Path, rel: &Path) -> Result<PathBuf, Error> {
        let dir = resolve_in_root(&self.root, rel, true, true)
            .map_err(|e| Error::hostile(raw, format!("cannot resolve its directory: {e}")))?;
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(|e| Error::io(&dir, e))?;
        }
        Ok(dir)
    }

    fn whiteout(&mut self, raw: &Path, parent: &Path, hidden: &OsStr) -> Result<(), Error> {
        let b = hidden.as_bytes();
        if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
            return Err(Error::hostile(raw, "malformed whiteout"));
        }
        let dest = parent.join(hidden);
        remove_existing(&dest, false)?;
        overlay::make_whiteout(&dest).map_err(|e| Error::io(&dest, e))
    }

    fn directory(&mut self, dest: &Path, meta: Meta) -> Result<(), Error> {
        if !remove_existing(dest, true)? {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .map_err(|e| Error::io(dest, e))?;
        }
        self.set_owner_and_xattrs(dest, &meta)?;
        self.dirs.push((dest.to_path_buf(), meta));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        dest: &Path,
        meta: &Meta,
    ) -> Result<(), Error> {
        remove_existing(dest, false)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dest)
            .map_err(|e| Error::io(dest, e))?;
        copy_with(&mut self.buf, entry, &mut file).map_err(|e| Error::io(dest, e))?;
        drop(file);
        self.finish_node(dest, meta)
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        raw: &Path,
        dest: &Path,
        meta: &Meta,
    ) -> Result<(), Error> {
        let target = entry
            .link_name()
            .map_err(|e| Error::io(raw, e))?
            .ok_or_else(|| Error::hostile(raw, "symlink without a target"))?;
        remove_existing(dest, false)?;
        // The target is stored as written: it is only ever followed inside the sandbox's
        // root or through `resolve_in_root`, never by the host.
        std::os::unix::fs::symlink(&target, dest).map_err(|e| Error::io(dest, e))?;
        self.set_owner_and_xattrs(dest, meta)?;
        set_mtime(dest, meta.mtime)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        raw: &Path,
        dest: &Path,
    ) -> Result<(), Error> {
        let target = entry
            .link_name()
            .map_err(|e| Error::io(raw, e))?
            .ok_or_else(|| Error::hostile(raw, "hardlink without a target"))?;
        let rel = clean_entry_path(&target)
            .ok_or_else(|| Error::hostile(raw, "hardlink target climbs out of the layer"))?;
        let source = resolve_in_root(&self.root, &rel, false, false)
            .map_err(|e| Error::hostile(raw, format!("hardlink target: {e}")))?;
        let meta = fs::symlink_metadata(&source).map_err(|_| {
            Error::hostile(
                raw,
                format!("hardlink target {} is not in the layer", target.display()),
            )
        })?;
        if meta.is_dir() {
            return Err(Error::hostile(raw, "hardlink to a directory"));
        }
        if source == dest {
            return Ok(());
        }
        remove_existing(dest, false)?;
        fs::hard_link(&source, dest).map_err(|e| Error::io(dest, e))
    }

    fn node<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        dest: &Path,
        meta: &Meta,
    ) -> Result<(), Error> {
        let header = entry.header();
        let (kind, dev) = match header.entry_type() {
            EntryType::Fifo => (SFlag::S_IFIFO, 0),
            t => {
                if self.privilege != Access::Root {
                    self.skipped.push(format!("device node {}", dest.display()));
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = if t == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (kind, makedev(major.into(), minor.into()))
            }
        };
        remove_existing(dest, false)?;
        mknod(dest, kind, Mode::from_bits_truncate(0o600), dev)
            .map_err(|e| Error::io(dest, e.into()))?;
        self.finish_node(dest, meta)
    }

    /// Owner, then mode (a chown clears setuid bits), then xattrs (a chown clears
    /// `security.capability`), then mtime, for anything but directories and symlinks.
    fn finish_node(&mut self, dest: &Path, meta: &Meta) -> Result<(), Error> {
        self.chown(dest, meta)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode))
            .map_err(|e| Error::io(dest, e))?;
        self.set_xattrs(dest, meta)?;
        set_mtime(dest, meta.mtime)
    }

    fn set_owner_and_xattrs(&mut self, dest: &Path, meta: &Meta) -> Result<(), Error> {
        self.chown(dest, meta)?;
        self.set_xattrs(dest, meta)
    }

    fn chown(&mut self, dest: &Path, meta: &Meta) -> Result<(), Error> {
        match self.privilege {
            Access::Unprivileged => Ok(()),
            Access::Root => std::os::unix::fs::lchown(dest, Some(meta.uid), Some(meta.gid))
                .map_err(|e| Error::io(dest, e)),
            Access::UserNamespace => {
                // An id beyond the subordinate range cannot be represented: keep root's.
                if let Err(e) = std::os::unix::fs::lchown(dest, Some(meta.uid), Some(meta.gid)) {
                    self.skipped.push(format!(
                        "owner {}:{} of {}: {e}",
                        meta.uid,
                        meta.gid,
                        dest.display()
                    ));
                }
                Ok(())
            }
        }
    }

    fn set_xattrs(&mut self, dest: &Path, meta: &Meta) -> Result<(), Error> {
        for (name, value) in &meta.xattrs {
            match xattr::set(dest, name, value) {
                Ok(()) => {}
                Err(e) if self.privilege != Access::Root => {
                    self.skipped
                        .push(format!("xattr {name} on {}: {e}", dest.display()));
                }
                Err(e) => return Err(Error::io(dest, e)),
            }
        }
        Ok(())
    }

    /// Applies directory modes and times, deepest first; returns what was skipped.
    fn finish(mut self) -> Result<Vec<String>, Error> {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, meta) in &self.dirs {
            // A later entry may have replaced this directory, or one above it, with a
            // symlink; chmod follows symlinks, so only a directory still reached through
            // directories alone is touched.
            if !is_plain_dir(&self.root, dir) {
                continue;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode))
                .map_err(|e| Error::io(dir, e))?;
            set_mtime(dir, meta.mtime)?;
        }
        Ok(self.skipped)
    }
}

/// Copies `from` to `to` through `buf`.
fn copy_with(buf: &mut [u8], from: &mut impl Read, to: &mut impl io::Write) -> io::Result<()> {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// Whether `path` (below `root`) is a directory reached from `root` through directories
/// only, no symlink on the way.
fn is_plain_dir(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<Meta> {
    let h = entry.header();
    let id = |v: io::Result<u64>| -> io::Result<u32> {
        u32::try_from(v?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "id out of range"))
    };
    let mut meta = Meta {
        mode: h.mode()? & 0o7777,
        uid: id(h.uid())?,
        gid: id(h.gid())?,
        mtime: h.mtime()? as i64,
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // A layer must never steer overlayfs itself (redirects, opaque markers).
                if !overlay::is_overlay_xattr(name) {
                    meta.xattrs
                        .push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

/// Clears the way for a new entry at `dest`. An existing directory is kept when
/// `keep_dir` (a directory entry over a directory) and `true` is returned; anything else
/// there, a symlink included, is removed without being followed.
fn remove_existing(dest: &Path, keep_dir: bool) -> Result<bool, Error> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() && keep_dir => Ok(true),
        Ok(m) if m.is_dir() => fs::remove_dir_all(dest)
            .map(|_| false)
            .map_err(|e| Error::io(dest, e)),
        Ok(_) => fs::remove_file(dest)
            .map(|_| false)
            .map_err(|e| Error::io(dest, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dest, e)),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), Error> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io(path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h
    }

    /// Regression: entry names went through a lossy UTF-8 conversion, so `caf\xe9.txt`
    /// unpacked as `caf\u{fffd}.txt` and a non-UTF-8 directory appeared twice.
    #[test]
    fn non_utf8_names_unpack_byte_for_byte() {
        let mut b = tar::Builder::new(Vec::new());
        let dir = OsStr::from_bytes(b"dir-\xff\xfe");
        let file = Path::new(dir).join(OsStr::from_bytes(b"caf\xe9.txt"));
        let mut h = header();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, dir, io::empty()).unwrap();
        let mut h = header();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, &file, &b"hi"[..]).unwrap();
        let wh = Path::new(dir).join(OsStr::from_bytes(b".wh.gone-\xe9"));
        let mut h = header();
        h.set_size(0);
        b.append_data(&mut h, &wh, io::empty()).unwrap();
        let tar = b.into_inner().unwrap();
        let root = tempfile::tempdir().unwrap();
        unpack_as(&tar[..], root.path(), Access::Unprivileged).unwrap();
        let mut names: Vec<Vec<u8>> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        assert_eq!(names, vec![b"dir-\xff\xfe".to_vec()]);
        assert_eq!(fs::read(root.path().join(&file)).unwrap(), b"hi");
    }
}
