//! Re-checking unpacked layer directories (`layers/<diffID hex>`) against the layer blobs
//! they came from, for `cairn cache verify`.
//!
//! A directory cannot be re-hashed into its diffID (the tar it came from fixed an entry
//! order and headers that a directory does not keep), so the check replays the blob's tar
//! instead: every entry must be in the directory with the same type, size, content hash
//! and link target, and the directory must hold nothing else. Whiteouts (`.wh.x`) are
//! expected as overlay whiteouts (character devices 0/0), opaque markers are xattrs and
//! not compared. Owners and modes are not compared (a rootless unpack maps them), and
//! files this user cannot read are counted as unchecked rather than reported.

use super::{Error, Store};
use crate::codec::decompressed;
use crate::digest::{Digest, HashingReader};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

/// What a layer's tar says a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    File {
        size: u64,
        sha256: Digest,
    },
    Dir,
    Symlink(PathBuf),
    /// A hard link to an earlier path of the same layer, resolved once the tar is read.
    Link(PathBuf),
    Whiteout,
    /// Devices, FIFOs: only the kind is compared.
    Special,
}

/// The outcome of one directory's check.
#[derive(Debug, Default)]
pub(crate) struct DirCheck {
    /// The first difference found, if any.
    pub problem: Option<String>,
    /// Regular files this user could not read.
    pub unchecked: usize,
}

/// Which layer blob each diffID came from, as the stored manifests (with their configs) and
/// executor states say.
pub(crate) fn origins(store: &Store, scan_limit: u64) -> Result<BTreeMap<Digest, Digest>, Error> {
    let mut out = BTreeMap::new();
    for (d, size) in super::maintain::blobs(store)? {
        if size > scan_limit {
            continue;
        }
        let Ok(bytes) = fs::read(store.blob_path(&d)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let Some(layers) = v.get("layers").and_then(|l| l.as_array()) else {
            continue;
        };
        let digest_at = |x: &serde_json::Value, k: &str| {
            x.get(k)
                .and_then(|s| s.as_str())
                .and_then(|s| Digest::parse(s).ok())
        };
        // Executor states name both per layer.
        for l in layers {
            if let (Some(blob), Some(diff)) = (digest_at(l, "digest"), digest_at(l, "diff_id")) {
                out.insert(diff, blob);
            }
        }
        // Manifests pair their layers with their config's diffIDs, in order.
        let Some(config) = v.get("config").and_then(|c| digest_at(c, "digest")) else {
            continue;
        };
        let Ok(cbytes) = fs::read(store.blob_path(&config)) else {
            continue;
        };
        let Ok(c) = serde_json::from_slice::<serde_json::Value>(&cbytes) else {
            continue;
        };
        let diffs = c
            .pointer("/rootfs/diff_ids")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        for (l, diff) in layers.iter().zip(&diffs) {
            let diff = diff.as_str().and_then(|s| Digest::parse(s).ok());
            if let (Some(blob), Some(diff)) = (digest_at(l, "digest"), diff) {
                out.insert(diff, blob);
            }
        }
    }
    Ok(out)
}

/// Compares `dir` with the layer `blob`.
pub(crate) fn check_dir(store: &Store, blob: &Digest, dir: &Path) -> Result<DirCheck, Error> {
    let path = store.blob_path(blob);
    let file = store.open_blob(blob)?;
    let expected = read_expectations(file).map_err(super::io_err(&path))?;
    Ok(compare(&expected, dir))
}

fn read_expectations(file: fs::File) -> io::Result<BTreeMap<PathBuf, Expect>> {
    let mut archive = tar::Archive::new(decompressed(file)?);
    let mut out = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(rel) = clean(&entry.path()?) else {
            continue;
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == ".wh..wh..opq" {
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            out.insert(rel.with_file_name(hidden), Expect::Whiteout);
            continue;
        }
        let kind = entry.header().entry_type();
        let expect = if kind.is_dir() {
            Expect::Dir
        } else if kind.is_symlink() {
            Expect::Symlink(entry.link_name()?.unwrap_or_default().into_owned())
        } else if kind.is_hard_link() {
            let target = entry.link_name()?.unwrap_or_default();
            Expect::Link(clean(&target).unwrap_or_default())
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut r = HashingReader::new(&mut entry);
            io::copy(&mut r, &mut io::sink())?;
            let (_, sha256, size) = r.finish();
            Expect::File { size, sha256 }
        } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        } else {
            Expect::Special
        };
        out.insert(rel, expect);
    }
    let links: Vec<(PathBuf, PathBuf)> = out
        .iter()
        .filter_map(|(p, e)| match e {
            Expect::Link(t) => Some((p.clone(), t.clone())),
            _ => None,
        })
        .collect();
    for (p, target) in links {
        let resolved = out.get(&target).cloned().unwrap_or(Expect::Special);
        out.insert(p, resolved);
    }
    Ok(out)
}

/// A tar entry path relative to the layer root (`./a/b/` → `a/b`); `None` for the root.
fn clean(p: &Path) -> Option<PathBuf> {
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    (!rel.as_os_str().is_empty()).then_some(rel)
}

fn compare(expected: &BTreeMap<PathBuf, Expect>, dir: &Path) -> DirCheck {
    let mut check = DirCheck::default();
    let mut seen = 0usize;
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                check.problem = Some(format!("cannot walk: {e}"));
                return check;
            }
        };
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let Some(want) = expected.get(rel) else {
            check.problem = Some(format!("{} is not in the layer", rel.display()));
            return check;
        };
        seen += 1;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                check.problem = Some(format!("{}: {e}", rel.display()));
                return check;
            }
        };
        let ft = meta.file_type();
        let ok = match want {
            Expect::Dir => ft.is_dir(),
            Expect::Symlink(t) => {
                ft.is_symlink() && fs::read_link(entry.path()).ok().as_ref() == Some(t)
            }
            Expect::Whiteout => crate::overlay::is_whiteout(&meta),
            Expect::Special => !(ft.is_dir() || ft.is_file() || ft.is_symlink()),
            Expect::Link(_) => false,
            Expect::File { size, sha256 } => {
                if !ft.is_file() || meta.len() != *size {
                    false
                } else {
                    match file_digest(entry.path()) {
                        Ok(d) => &d == sha256,
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            check.unchecked += 1;
                            true
                        }
                        Err(_) => false,
                    }
                }
            }
        };
        if !ok {
            check.problem = Some(format!("{} differs from the layer", rel.display()));
            return check;
        }
    }
    if seen != expected.len() {
        let missing = expected
            .keys()
            .find(|p| fs::symlink_metadata(dir.join(p)).is_err())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "an entry".into());
        check.problem = Some(format!("{missing} is missing"));
    }
    check
}

fn file_digest(p: &Path) -> io::Result<Digest> {
    let mut r = HashingReader::new(BufReader::with_capacity(256 * 1024, fs::File::open(p)?));
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.finish().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_directory_matches_its_tar_until_touched() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("etc/", None),
            ("etc/motd", Some(b"hi\n")),
            ("etc/.wh..wh..opq", Some(b"")),
        ]);
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), &tar).unwrap();
        let expected = read_expectations(fs::File::open(f.path()).unwrap()).unwrap();
        assert_eq!(expected.len(), 2, "{expected:?}");
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/motd"), b"hi\n").unwrap();
        assert_eq!(compare(&expected, root).problem, None);

        fs::write(root.join("etc/motd"), b"ho\n").unwrap();
        let p = compare(&expected, root).problem.unwrap();
        assert!(p.contains("etc/motd differs"), "{p}");

        fs::write(root.join("etc/motd"), b"hi\n").unwrap();
        fs::write(root.join("etc/extra"), b"").unwrap();
        let p = compare(&expected, root).problem.unwrap();
        assert!(p.contains("etc/extra is not in the layer"), "{p}");

        fs::remove_file(root.join("etc/extra")).unwrap();
        fs::remove_file(root.join("etc/motd")).unwrap();
        let p = compare(&expected, root).problem.unwrap();
        assert!(p.contains("etc/motd is missing"), "{p}");
    }
}
