//! Tar fixtures: a small builder that writes exactly the names it is given (hostile ones
//! included, which `tar::Builder` would clean), with PAX xattrs per entry.

use tar::{EntryType, Header};

struct Pending {
    header: Header,
    name: String,
    link: Option<String>,
    data: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Builds a layer tar entry by entry; `xattr` applies to the last entry added.
#[derive(Default)]
pub struct TarBuilder {
    entries: Vec<Pending>,
}

impl TarBuilder {
    fn push(
        &mut self,
        kind: EntryType,
        name: &str,
        (mode, uid, gid): (u32, u64, u64),
        data: &[u8],
        link: Option<&str>,
    ) {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        self.entries.push(Pending {
            header,
            name: name.to_string(),
            link: link.map(str::to_string),
            data: data.to_vec(),
            xattrs: vec![],
        });
    }

    pub fn dir(&mut self, name: &str, mode: u32, uid: u64, gid: u64) {
        self.push(EntryType::Directory, name, (mode, uid, gid), b"", None);
    }
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) {
        self.push(EntryType::Regular, name, (mode, uid, gid), data, None);
    }
    /// A file whose name is written as is, `..` and leading `/` included.
    pub fn raw_file(&mut self, name: &str, data: &[u8]) {
        self.file(name, data, 0o644, 0, 0);
    }
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.push(EntryType::Symlink, name, (0o777, 0, 0), b"", Some(target));
    }
    pub fn hardlink(&mut self, name: &str, target: &str) {
        self.push(EntryType::Link, name, (0o644, 0, 0), b"", Some(target));
    }
    pub fn fifo(&mut self, name: &str, mode: u32) {
        self.push(EntryType::Fifo, name, (mode, 0, 0), b"", None);
    }
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.push(EntryType::Char, name, (0o666, 0, 0), b"", None);
        let h = &mut self.entries.last_mut().unwrap().header;
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
    }
    pub fn xattr(&mut self, name: &str, value: &[u8]) {
        self.entries
            .last_mut()
            .unwrap()
            .xattrs
            .push((name.to_string(), value.to_vec()));
    }

    pub fn finish(self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for mut e in self.entries {
            if !e.xattrs.is_empty() {
                let keys: Vec<(String, Vec<u8>)> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                    .collect();
                b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .unwrap();
            }
            if e.name.len() < 100 && e.link.as_ref().map_or(true, |l| l.len() < 100) {
                let old = e.header.as_old_mut();
                old.name = [0; 100];
                old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
                if let Some(l) = &e.link {
                    old.linkname = [0; 100];
                    old.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
                e.header.set_cksum();
                b.append(&e.header, &e.data[..]).unwrap();
            } else {
                b.append_data(&mut e.header, &e.name, &e.data[..]).unwrap();
            }
        }
        b.into_inner().unwrap()
    }
}

/// A `security.capability` value (v2) granting CAP_NET_RAW, as `setcap cap_net_raw+ep` writes.
pub fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | effective
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}
