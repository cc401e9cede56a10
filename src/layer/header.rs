//! [`TarEntry`]: one normalised layer entry, and the only place that turns it into tar
//! header bytes. Every header is USTAR; a PAX extended header precedes it only when a field
//! does not fit USTAR (long or non-ASCII path or link, big ids, size or mtime) or the entry
//! has xattrs. Never GNU long names or sparse entries, no atime/ctime, empty uname/gname.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use tar::{Builder, EntryType, Header};

/// The largest value an 8-byte octal USTAR field holds (uid, gid, mode).
const MAX_OCTAL_8: u64 = 0o7777777;
/// The largest value a 12-byte octal USTAR field holds (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// What kind of entry, with the data each kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A regular file of `size` bytes; its data is passed to [`append`].
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A later link to a file already written at `target` (relative to the layer root).
    HardLink {
        target: Vec<u8>,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// A normalised entry: path relative to the layer root (no leading `/`, no trailing `/`),
/// owner already mapped to container ids, mtime already clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarEntry {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Appends `e` (and its data, for files) to `b`.
pub(crate) fn append<W: Write>(
    b: &mut Builder<W>,
    e: &TarEntry,
    data: Option<&mut dyn Read>,
) -> io::Result<()> {
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut h = Header::new_ustar();

    let mut name = e.path.clone();
    if e.kind == Kind::Dir {
        name.push(b'/');
    }
    if !set_ustar_path(&mut h, &name) {
        pax.insert("path".into(), name.clone());
        set_truncated_name(&mut h, &name);
    }

    let (ty, size) = match &e.kind {
        Kind::Dir => (EntryType::Directory, 0),
        Kind::File { size } => (EntryType::Regular, *size),
        Kind::Symlink { .. } => (EntryType::Symlink, 0),
        Kind::HardLink { .. } => (EntryType::Link, 0),
        Kind::Char { .. } => (EntryType::Char, 0),
        Kind::Block { .. } => (EntryType::Block, 0),
        Kind::Fifo => (EntryType::Fifo, 0),
    };
    h.set_entry_type(ty);
    if let Kind::Symlink { target } | Kind::HardLink { target } = &e.kind {
        if target.len() <= 100 && target.is_ascii() {
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        } else {
            pax.insert("linkpath".into(), target.clone());
            let n = target.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&target[..n]);
        }
    }
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = e.kind {
        // Devices with numbers over 7 octal digits do not exist on Linux (12/20 bits).
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }

    h.set_mode(e.mode & 0o7777);
    set_id(&mut h, &mut pax, "uid", e.uid);
    set_id(&mut h, &mut pax, "gid", e.gid);
    if size > MAX_OCTAL_12 {
        pax.insert("size".into(), size.to_string().into_bytes());
        h.set_size(0);
    } else {
        h.set_size(size);
    }
    if e.mtime < 0 || e.mtime as u64 > MAX_OCTAL_12 {
        pax.insert("mtime".into(), e.mtime.to_string().into_bytes());
        h.set_mtime(0);
    } else {
        h.set_mtime(e.mtime as u64);
    }
    for (k, v) in &e.xattrs {
        let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(k));
        pax.insert(key, v.clone());
    }

    if !pax.is_empty() {
        append_pax(b, &e.path, &pax)?;
    }
    h.set_cksum();
    match data {
        Some(r) => b.append(&h, r),
        None => b.append(&h, io::empty()),
    }
}

fn set_id(h: &mut Header, pax: &mut BTreeMap<String, Vec<u8>>, key: &str, id: u32) {
    let v = if u64::from(id) > MAX_OCTAL_8 {
        pax.insert(key.into(), id.to_string().into_bytes());
        0
    } else {
        u64::from(id)
    };
    if key == "uid" {
        h.set_uid(v)
    } else {
        h.set_gid(v)
    }
}

/// Writes a PAX extended header (`x`) with `records` in key order. Its own header is fixed
/// (name `PaxHeaders/<base>`, mode 0o644, owner 0, mtime 0) so it adds no variance.
fn append_pax<W: Write>(
    b: &mut Builder<W>,
    path: &[u8],
    records: &BTreeMap<String, Vec<u8>>,
) -> io::Result<()> {
    let mut body = Vec::new();
    for (k, v) in records {
        // "<len> <key>=<value>\n" where <len> counts itself.
        let rest = k.len() + v.len() + 3;
        let mut len = rest + rest.to_string().len();
        if len.to_string().len() + rest != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut h = Header::new_ustar();
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    let mut name = b"PaxHeaders/".to_vec();
    name.extend(base.iter().map(|&c| if c.is_ascii() { c } else { b'_' }));
    set_truncated_name(&mut h, &name);
    h.set_entry_type(EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(body.len() as u64);
    h.set_cksum();
    b.append(&h, &body[..])
}

/// Stores `path` in the USTAR name (and prefix) fields, as Go's `splitUSTARPath` does;
/// false when it does not fit or is not ASCII (then a PAX `path` record is needed).
fn set_ustar_path(h: &mut Header, path: &[u8]) -> bool {
    if !path.is_ascii() || path.is_empty() {
        return false;
    }
    let ustar = h.as_ustar_mut().expect("ustar header");
    if path.len() <= 100 {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at a '/' so that the prefix is ≤ 155 bytes and the name is 1..=100 bytes.
    let limit = path.len().min(156);
    let Some(i) = path[..limit].iter().rposition(|&c| c == b'/') else {
        return false;
    };
    let (prefix, name) = (&path[..i], &path[i + 1..]);
    if prefix.is_empty() || name.is_empty() || name.len() > 100 || prefix.len() > 155 {
        return false;
    }
    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    ustar.name[..name.len()].copy_from_slice(name);
    true
}

fn set_truncated_name(h: &mut Header, name: &[u8]) {
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8], kind: Kind) -> TarEntry {
        TarEntry {
            path: path.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        }
    }

    fn write(entries: &[TarEntry]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for e in entries {
            let data = vec![
                b'x';
                if let Kind::File { size } = e.kind {
                    size as usize
                } else {
                    0
                }
            ];
            append(&mut b, e, Some(&mut &data[..])).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn short_entries_need_no_pax() {
        let bytes = write(&[
            entry(b"bin", Kind::Dir),
            entry(b"bin/sh", Kind::File { size: 3 }),
        ]);
        assert_eq!(bytes.len(), 512 * 3 + 1024);
        let mut ar = tar::Archive::new(&bytes[..]);
        let es: Vec<_> = ar.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(es[0].path_bytes().as_ref(), b"bin/");
        assert_eq!(es[0].header().entry_type(), EntryType::Directory);
        let h = es[1].header();
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o4755, 1000, 1000)
        );
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.as_ustar().unwrap().magic, *b"ustar\0");
    }

    #[test]
    fn long_and_odd_fields_use_pax() {
        let long = [b"d/".repeat(120), b"file".to_vec()].concat();
        let mut big = entry(b"big", Kind::File { size: 0 });
        big.uid = 3_000_000;
        big.mtime = -5;
        big.xattrs.insert(b"user.k".to_vec(), b"v\0bin".to_vec());
        let link = entry(
            b"l",
            Kind::Symlink {
                target: b"x".repeat(150),
            },
        );
        let utf = entry("caf\u{e9}".as_bytes(), Kind::File { size: 1 });
        let bytes = write(&[entry(&long, Kind::File { size: 1 }), big, link, utf]);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut es = ar.entries().unwrap();
        let e = es.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), &long[..]);
        let mut e2 = es.next().unwrap().unwrap();
        // The reader applies the PAX uid over the USTAR field.
        assert_eq!(e2.header().uid().unwrap(), 3_000_000);
        let px: Vec<_> = e2
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        let keys: Vec<_> = px.iter().map(|p| p.key().unwrap().to_string()).collect();
        assert_eq!(keys, ["SCHILY.xattr.user.k", "mtime", "uid"]);
        assert_eq!(px[0].value_bytes(), b"v\0bin");
        assert_eq!(px[2].value_bytes(), b"3000000");
        let e3 = es.next().unwrap().unwrap();
        assert_eq!(
            e3.link_name_bytes().unwrap().as_ref(),
            &b"x".repeat(150)[..]
        );
        let e4 = es.next().unwrap().unwrap();
        assert_eq!(e4.path_bytes().as_ref(), "caf\u{e9}".as_bytes());
    }

    #[test]
    fn ustar_split_matches_go() {
        let p = [b"a".repeat(150), b"/".to_vec(), b"b".repeat(99)].concat();
        let mut h = Header::new_ustar();
        assert!(set_ustar_path(&mut h, &p));
        assert_eq!(h.path_bytes().as_ref(), &p[..]);
        let too_long = [b"a".repeat(156), b"/b".to_vec()].concat();
        assert!(!set_ustar_path(&mut Header::new_ustar(), &too_long));
    }
}
