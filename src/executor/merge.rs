//! [`materialize`]: the merged view of a finished stage's layers, restricted to the paths a
//! `COPY --from` reads. Layers are unpacked in overlayfs form (whiteouts are 0/0 character
//! devices, opaque directories carry an `overlay.opaque` xattr), so the merge replays them
//! bottom to top in user space instead of mounting — no root needed, nothing to unmount.

use crate::error::{Error, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("COPY --from: cannot {what} {}", p.display()), e)
}

/// The part of a source pattern before its first wildcard, as a relative path.
fn fixed_prefix(pattern: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in pattern.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        if part.contains(['*', '?', '[']) {
            break;
        }
        if part == ".." {
            out.pop();
        } else {
            out.push(part);
        }
    }
    out
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| matches!(xattr::get(p, n), Ok(Some(v)) if v == b"y"))
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p).map_err(|e| io_err("remove", p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| io_err("remove", p, e)),
        Err(_) => Ok(()),
    }
}

/// Replays `lowers` (bottom first) into `out`, for the subtrees the `patterns` can reach.
pub fn materialize(lowers: &[PathBuf], patterns: &[String], out: &Path) -> Result<()> {
    let mut prefixes: Vec<PathBuf> = patterns.iter().map(|p| fixed_prefix(p)).collect();
    prefixes.sort();
    prefixes.dedup();
    for lower in lowers {
        for prefix in &prefixes {
            replay_ancestors(lower, prefix, out)?;
            let src = lower.join(prefix);
            if fs::symlink_metadata(&src).is_ok() {
                replay(&src, &out.join(prefix))?;
            }
        }
    }
    Ok(())
}

/// Applies whiteouts and opaque markers a layer puts on the ancestors of `prefix`.
fn replay_ancestors(lower: &Path, prefix: &Path, out: &Path) -> Result<()> {
    let mut rel = PathBuf::new();
    for comp in prefix.components() {
        rel.push(comp);
        let Ok(md) = fs::symlink_metadata(lower.join(&rel)) else {
            return Ok(());
        };
        if is_whiteout(&md) || !md.is_dir() {
            return remove_any(&out.join(&rel));
        }
        if is_opaque(&lower.join(&rel)) {
            return remove_any(&out.join(&rel));
        }
    }
    Ok(())
}

fn replay(src: &Path, dst: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| io_err("read", src, e))?;
    if is_whiteout(&md) {
        return remove_any(dst);
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
    }
    if md.is_dir() {
        let existing = fs::symlink_metadata(dst).ok();
        if is_opaque(src) || existing.as_ref().is_some_and(|m| !m.is_dir()) {
            remove_any(dst)?;
        }
        if fs::symlink_metadata(dst).is_err() {
            fs::create_dir(dst).map_err(|e| io_err("create", dst, e))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| io_err("chmod", dst, e))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| io_err("list", src, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_err("list", src, e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            replay(&e.path(), &dst.join(e.file_name()))?;
        }
        return Ok(());
    }
    remove_any(dst)?;
    if md.file_type().is_symlink() {
        let target = fs::read_link(src).map_err(|e| io_err("read link", src, e))?;
        std::os::unix::fs::symlink(&target, dst).map_err(|e| io_err("create link", dst, e))?;
    } else if md.is_file() {
        fs::copy(src, dst).map_err(|e| io_err("copy", src, e))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| io_err("chmod", dst, e))?;
    }
    // Devices, FIFOs and sockets are not copied by COPY --from.
    Ok(())
}

/// The metadata of `rel` in the merged view of `lowers` (topmost layer first), or `None`
/// when no layer has it or a whiteout hides it.
pub fn lookup(lowers: &[PathBuf], rel: &Path) -> Option<fs::Metadata> {
    for lower in lowers.iter().rev() {
        let p = lower.join(rel);
        if let Ok(md) = fs::symlink_metadata(&p) {
            return (!is_whiteout(&md)).then_some(md);
        }
        // An opaque ancestor in this layer hides everything below it in older layers.
        let mut anc = rel.parent();
        while let Some(a) = anc.filter(|a| !a.as_os_str().is_empty()) {
            if is_opaque(&lower.join(a)) {
                return None;
            }
            anc = a.parent();
        }
    }
    None
}

/// Gives the directories a COPY staged above its destination (and the destination itself
/// when it already existed) the mode and owner they have in the image, as BuildKit does by
/// copying onto the merged filesystem: `COPY f /home/coder/` must not make `/home/coder`
/// root-owned. Owners are set only where this process may (as root).
pub fn inherit_existing_dirs(lowers: &[PathBuf], staged_root: &Path, dest: &str) -> Result<()> {
    let dest = dest.trim_start_matches('/').trim_end_matches('/');
    let mut rel = PathBuf::new();
    let root = nix::unistd::geteuid().is_root();
    for comp in Path::new(dest).components() {
        rel.push(comp);
        let staged = staged_root.join(&rel);
        match fs::symlink_metadata(&staged) {
            Ok(md) if md.is_dir() => {}
            _ => break,
        }
        let Some(md) = lookup(lowers, &rel) else {
            break;
        };
        if !md.is_dir() {
            break;
        }
        fs::set_permissions(&staged, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| io_err("chmod", &staged, e))?;
        if root {
            std::os::unix::fs::lchown(&staged, Some(md.uid()), Some(md.gid()))
                .map_err(|e| io_err("chown", &staged, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_stops_at_wildcards() {
        assert_eq!(fixed_prefix("/out/bin/*.so"), PathBuf::from("out/bin"));
        assert_eq!(fixed_prefix("./app"), PathBuf::from("app"));
        assert_eq!(fixed_prefix("/"), PathBuf::new());
    }

    #[test]
    fn later_layers_win_and_opaque_dirs_hide_earlier_content() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("out"),
        );
        fs::create_dir_all(l1.join("app/old")).unwrap();
        fs::write(l1.join("app/old/f"), "old").unwrap();
        fs::write(l1.join("app/keep"), "v1").unwrap();
        fs::create_dir_all(l2.join("app")).unwrap();
        fs::write(l2.join("app/keep"), "v2").unwrap();
        materialize(&[l1.clone(), l2.clone()], &["/app".into()], &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("app/keep")).unwrap(), "v2");
        assert!(out.join("app/old/f").exists());
        // An opaque app/ in a third layer hides everything below it.
        let l3 = t.path().join("l3");
        fs::create_dir_all(l3.join("app")).unwrap();
        fs::write(l3.join("app/new"), "n").unwrap();
        if xattr::set(l3.join("app"), "user.overlay.opaque", b"y").is_ok() {
            let out2 = t.path().join("out2");
            materialize(&[l1, l2, l3], &["/app".into()], &out2).unwrap();
            assert!(!out2.join("app/keep").exists());
            assert!(out2.join("app/new").exists());
        }
    }

    /// Regression: `COPY README /home/coder/` made /home/coder root-owned (0755) in the
    /// image, undoing `useradd -m coder` from the RUN step before it.
    #[test]
    fn copy_keeps_the_owner_and_mode_of_existing_parent_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (lower, staged) = (t.path().join("lower"), t.path().join("staged"));
        fs::create_dir_all(lower.join("home/coder")).unwrap();
        fs::set_permissions(lower.join("home/coder"), fs::Permissions::from_mode(0o700)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::lchown(lower.join("home/coder"), Some(1000), Some(1000)).unwrap();
        }
        fs::create_dir_all(staged.join("home/coder/new")).unwrap();
        fs::write(staged.join("home/coder/README"), "x").unwrap();
        inherit_existing_dirs(&[lower], &staged, "/home/coder/").unwrap();
        let md = fs::metadata(staged.join("home/coder")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o700);
        if root {
            assert_eq!((md.uid(), md.gid()), (1000, 1000));
        }
        // A directory the COPY creates keeps its own metadata.
        assert_eq!(
            fs::metadata(staged.join("home/coder/new")).unwrap().mode() & 0o7777,
            0o755
        );
    }
}
