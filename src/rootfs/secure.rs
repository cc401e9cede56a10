//! Path handling that never leaves the unpack target: entry names are cleaned lexically
//! and every intermediate directory is resolved as if the target were `/` (a symlink to
//! `/etc` inside a layer means the layer's own `etc`, never the host's).
//!
//! This is sound because the unpacker is the only writer of the target while it works:
//! once a path is resolved to real directories, nothing can swap one for a symlink.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up, as the kernel's limit.
const MAX_LINK_HOPS: usize = 40;

/// Cleans a tar entry name into a relative path of plain components: leading `/` and `.`
/// are dropped; a `..` that would climb above the root is refused (`None`).
pub fn clean_entry_path(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// Resolves `rel` inside `root`, following symlinks in every component chroot-style
/// (absolute targets restart at `root`, `..` stops at `root`) except the last one when
/// `follow_last` is false. Missing intermediate directories are created (mode 0755) when
/// `create_missing` is set. The result is `root` joined with symlink-free components.
pub fn resolve_in_root(
    root: &Path,
    rel: &Path,
    follow_last: bool,
    create_missing: bool,
) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(rel).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let last = pending.is_empty();
        let candidate = join(root, &resolved).join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && (!last || follow_last) => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Ok(meta) if !last && !meta.is_dir() => {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !last && create_missing => {
                std::fs::create_dir(&candidate)?;
                resolved.push(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && last => resolved.push(name),
            Err(e) => return Err(e),
        }
    }
    Ok(join(root, &resolved))
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn cleaning_contains_absolute_and_refuses_escapes() {
        assert_eq!(
            clean_entry_path(Path::new("/etc/passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(
            clean_entry_path(Path::new("./a/../b")).unwrap(),
            Path::new("b")
        );
        assert_eq!(clean_entry_path(Path::new("./")).unwrap(), Path::new(""));
        assert_eq!(clean_entry_path(Path::new("../x")), None);
        assert_eq!(clean_entry_path(Path::new("a/../../x")), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        for link in ["abs", "rel"] {
            let p = resolve_in_root(root, &Path::new(link).join("passwd"), false, false).unwrap();
            assert_eq!(p, root.join("etc/passwd"));
        }
        assert_eq!(
            resolve_in_root(root, Path::new("abs"), false, false).unwrap(),
            root.join("abs")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("abs"), true, false).unwrap(),
            root.join("etc")
        );
        let e = resolve_in_root(root, Path::new("loop/x"), false, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let made = resolve_in_root(root, Path::new("new/deeper/file"), false, true).unwrap();
        assert_eq!(made, root.join("new/deeper/file"));
        assert!(root.join("new/deeper").is_dir());
    }
}
