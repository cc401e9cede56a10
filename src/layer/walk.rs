//! [`collect`]: reads an overlay upper directory into the sorted list of normalised entries
//! a layer tar holds, converting overlay whiteouts and opaque directories to the OCI
//! (`.wh.`) form, mapping owners back to container ids and linking hardlinks to the first
//! path that carries their data.

use super::header::{Kind, TarEntry};
use super::{Error, LayerOptions};
use crate::idmap::host_to_container;
use crate::overlay::{is_overlay_xattr, read_opaque, OPAQUE_MARKER, WHITEOUT_PREFIX};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One entry to write, with where its data comes from.
#[derive(Debug)]
pub(crate) struct Source {
    pub entry: TarEntry,
    /// Whether the entry's data is the file at its path under the root (regular files;
    /// not a hardlink's later names). A flag, not a path: 100,000 entries would otherwise
    /// hold each path twice more (the writer joins the root when it opens the file).
    pub data: bool,
    /// Sort key when it is not the path: an opaque marker sorts right after its directory.
    key: Option<Vec<u8>>,
    /// `(dev, ino)` of regular files with more than one link.
    inode: Option<(u64, u64)>,
}

impl Source {
    fn sort_key(&self) -> &[u8] {
        self.key.as_deref().unwrap_or(&self.entry.path)
    }
}

/// Reads `root` (an overlay upper directory, or any tree) into layer entries, in tar order:
/// by path bytes, parents before children, each opaque marker before its directory's
/// other entries.
pub(crate) fn collect(root: &Path, opts: &LayerOptions) -> Result<Vec<Source>, Error> {
    let chown = opts.chown.as_ref().map(|c| {
        let p = c.prefix.as_os_str().as_bytes();
        let p = trim_slashes(p);
        (
            if p == b"." { Vec::new() } else { p.to_vec() },
            c.uid,
            c.gid,
        )
    });
    let mut out = Vec::new();
    let mut w = Walker {
        opts,
        chown,
        out: &mut out,
    };
    w.dir(root, &[])?;
    out.sort_by(|a, b| a.sort_key().cmp(b.sort_key()));
    link_hardlinks(&mut out);
    Ok(out)
}

struct Walker<'a> {
    opts: &'a LayerOptions,
    chown: Option<(Vec<u8>, u32, u32)>,
    out: &'a mut Vec<Source>,
}

impl Walker<'_> {
    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<(), Error> {
        let rd = fs::read_dir(dir).map_err(Error::io(dir))?;
        for child in rd {
            let child = child.map_err(Error::io(dir))?;
            let name = child.file_name();
            let path = child.path();
            let rel_child = join(rel, name.as_bytes());
            let md = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
            self.entry(&path, &rel_child, &md)?;
            if md.is_dir() {
                self.dir(&path, &rel_child)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &[u8], md: &fs::Metadata) -> Result<(), Error> {
        let ft = md.file_type();
        let (uid, gid) = self.owner(rel, md);
        let mtime = clamp(md.mtime(), self.opts.source_date_epoch);
        let mut e = TarEntry {
            path: rel.to_vec(),
            kind: Kind::Dir,
            mode: md.mode() & 0o7777,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        };
        let mut data = false;
        let mut inode = None;
        if crate::overlay::is_whiteout(md) {
            // An overlay whiteout: a regular empty file named `.wh.<name>`, as Docker writes it.
            let (parent, name) = split_last(rel);
            e.path = join(parent, &[WHITEOUT_PREFIX.as_bytes(), name].concat());
            e.kind = Kind::File { size: 0 };
            e.mode = 0o600;
            self.push(e, false, None);
            return Ok(());
        }
        e.xattrs = xattrs(path)?;
        if ft.is_dir() {
            if is_opaque(path)? {
                let marker = TarEntry {
                    path: join(rel, OPAQUE_MARKER.as_bytes()),
                    kind: Kind::File { size: 0 },
                    mode: e.mode & 0o777,
                    xattrs: BTreeMap::new(),
                    ..e.clone()
                };
                let key = [rel, b"/"].concat();
                self.out.push(Source {
                    entry: marker,
                    data: false,
                    key: Some(key),
                    inode: None,
                });
            }
        } else if ft.is_file() {
            e.kind = Kind::File { size: md.len() };
            data = true;
            if md.nlink() > 1 {
                inode = Some((md.dev(), md.ino()));
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(Error::io(path))?;
            e.kind = Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            };
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (dev_major(md.rdev()), dev_minor(md.rdev()));
            e.kind = if ft.is_char_device() {
                Kind::Char { major, minor }
            } else {
                Kind::Block { major, minor }
            };
        } else if ft.is_fifo() {
            e.kind = Kind::Fifo;
        } else {
            // Sockets cannot be archived; Docker skips them too.
            return Ok(());
        }
        self.push(e, data, inode);
        Ok(())
    }

    fn push(&mut self, entry: TarEntry, data: bool, inode: Option<(u64, u64)>) {
        self.out.push(Source {
            entry,
            data,
            key: None,
            inode,
        });
    }

    fn owner(&self, rel: &[u8], md: &fs::Metadata) -> (u32, u32) {
        if let Some((prefix, uid, gid)) = &self.chown {
            let under = prefix.is_empty()
                || rel == &prefix[..]
                || (rel.starts_with(prefix) && rel.get(prefix.len()) == Some(&b'/'));
            if under {
                return (*uid, *gid);
            }
        }
        (
            host_to_container(&self.opts.uid_maps, md.uid()),
            host_to_container(&self.opts.gid_maps, md.gid()),
        )
    }
}

/// Later links to an inode point at the first path (in tar order) that carries its data.
fn link_hardlinks(entries: &mut [Source]) {
    let mut first: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for s in entries.iter_mut() {
        let Some(ino) = s.inode else { continue };
        match first.get(&ino) {
            Some(target) => {
                s.entry.kind = Kind::HardLink {
                    target: target.clone(),
                };
                s.data = false;
            }
            None => {
                first.insert(ino, s.entry.path.clone());
            }
        }
    }
}

fn clamp(mtime: i64, epoch: Option<i64>) -> i64 {
    match epoch {
        Some(e) if mtime > e => e,
        _ => mtime,
    }
}

/// The xattrs to keep: all but overlayfs' own. An upper written with `metacopy` or
/// `redirect_dir` holds files whose data or directory contents live in a lower layer, which
/// a changeset cannot express: refuse it rather than write a wrong layer.
fn xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(Error::io(path)(e)),
    };
    for name in names {
        let n = name.as_bytes();
        if is_overlay_xattr(n) {
            if n.ends_with(b".metacopy") || n.ends_with(b".redirect") {
                return Err(Error::UnsupportedUpper {
                    path: path.to_path_buf(),
                    xattr: name.to_string_lossy().into_owned(),
                });
            }
            continue;
        }
        if let Some(v) = xattr::get(path, &name).map_err(Error::io(path))? {
            out.insert(n.to_vec(), v);
        }
    }
    Ok(out)
}

fn is_opaque(path: &Path) -> Result<bool, Error> {
    read_opaque(path).map_err(Error::io(path))
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

fn trim_slashes(mut p: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    while let [rest @ .., b'/'] = p {
        p = rest;
    }
    p
}

// glibc's gnu_dev_major/minor encoding.
fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_decode() {
        // /dev/null is 1:3, /dev/sda1 8:1; a big one exercises the high bits.
        assert_eq!((dev_major(0x103), dev_minor(0x103)), (1, 3));
        assert_eq!((dev_major(0x801), dev_minor(0x801)), (8, 1));
        let makedev = |ma: u64, mi: u64| {
            ((ma & 0xffff_f000) << 32)
                | ((ma & 0xfff) << 8)
                | ((mi & 0xffff_ff00) << 12)
                | (mi & 0xff)
        };
        let d = makedev(0x12345, 0x6789a);
        assert_eq!((dev_major(d), dev_minor(d)), (0x12345, 0x6789a));
    }

    #[test]
    fn helpers() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(trim_slashes(b"/app/"), b"app");
        assert_eq!(clamp(10, Some(5)), 5);
        assert_eq!(clamp(3, Some(5)), 3);
        assert_eq!(clamp(10, None), 10);
        assert!(is_overlay_xattr(b"trusted.overlay.origin"));
        assert!(!is_overlay_xattr(b"user.mime_type"));
    }
}
