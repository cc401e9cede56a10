//! [`materialize`]: the merged view of a finished stage's layers, restricted to the paths a
//! `COPY --from` reads, and [`inherit_existing_dirs`]: the image's own metadata for the
//! directories a COPY stages above its destination. Both read the layers through the
//! [`LayerStack`] (overlayfs form, replayed in user space — no root needed, nothing to
//! unmount).

use crate::error::{Error, Result};
use crate::stack::LayerStack;
use crate::userns::Privilege;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// The source patterns with the symlinks on their directory part resolved inside the
/// stage's merged root (`/sub -> /out/sub` makes `/sub/foo` read `/out/sub/foo`), as
/// BuildKit resolves a source path in the source's own root. The last component and
/// everything from the first wildcard on are kept as written.
pub fn resolve_patterns(lowers: &[PathBuf], patterns: &[String]) -> Vec<String> {
    let stack = LayerStack::new(lowers);
    patterns
        .iter()
        .map(|p| resolve_pattern(&stack, p))
        .collect()
}

fn resolve_pattern(stack: &LayerStack<'_>, pattern: &str) -> String {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let fixed = parts
        .iter()
        .position(|p| p.contains(['*', '?', '[']))
        .unwrap_or(parts.len())
        .min(parts.len().saturating_sub(1));
    if fixed == 0 {
        return pattern.to_string();
    }
    // Walk the directory part, replacing each symlink by its target (40 hops at most, as
    // the kernel allows); `..` never climbs above the root.
    let mut todo: Vec<String> = parts[..fixed].iter().rev().map(|s| s.to_string()).collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    let mut changed = false;
    while let Some(part) = todo.pop() {
        if part == ".." {
            at.pop();
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        at.push(&part);
        let Some(md) = stack.metadata(&at) else {
            continue;
        };
        if !md.file_type().is_symlink() || hops >= 40 {
            continue;
        }
        let Some(target) = stack.lookup(&at).and_then(|p| fs::read_link(p).ok()) else {
            continue;
        };
        hops += 1;
        changed = true;
        at.pop();
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            at = PathBuf::new();
        }
        todo.extend(target.split('/').rev().map(str::to_string));
    }
    if !changed {
        return pattern.to_string();
    }
    let mut out = format!("/{}", at.to_string_lossy());
    for p in &parts[fixed..] {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(p);
    }
    if pattern.ends_with('/') {
        out.push('/');
    }
    out
}

/// Replays `lowers` (bottom first) into `out`, for the subtrees the `patterns` can reach.
pub fn materialize(lowers: &[PathBuf], patterns: &[String], out: &Path) -> Result<()> {
    let prefixes: Vec<PathBuf> = patterns.iter().map(|p| fixed_prefix(p)).collect();
    LayerStack::new(lowers)
        .materialize(&prefixes, out)
        .map_err(|e| Error::Internal(format!("COPY --from: {e}")))
}

/// Gives the directories a COPY staged above its destination (and the destination itself
/// when it already existed) the mode and owner they have in the image, as BuildKit does by
/// copying onto the merged filesystem: `COPY f /home/coder/` must not make `/home/coder`
/// root-owned. Owners are set only where this process may (as root). Returns the staged
/// directories (relative) that already existed.
pub fn inherit_existing_dirs(
    lowers: &[PathBuf],
    staged_root: &Path,
    dest: &str,
    privilege: &Privilege,
) -> Result<Vec<PathBuf>> {
    let mut existing = Vec::new();
    let dest = dest.trim_start_matches('/').trim_end_matches('/');
    let mut rel = PathBuf::new();
    let stack = LayerStack::new(lowers);
    let root = privilege.is_root();
    for comp in Path::new(dest).components() {
        rel.push(comp);
        let staged = staged_root.join(&rel);
        match fs::symlink_metadata(&staged) {
            Ok(md) if md.is_dir() => {}
            _ => break,
        }
        let Some(md) = stack.metadata(&rel) else {
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
        existing.push(rel.clone());
    }
    Ok(existing)
}

/// `COPY --chown` on what a COPY staged, as BuildKit applies it: every entry the COPY
/// creates (the parents it creates included) gets the owner; the directories that already
/// existed in the image (`existing`, relative) keep theirs. Set-id bits survive the chown.
pub fn chown_created(staged_root: &Path, existing: &[PathBuf], uid: u32, gid: u32) -> Result<()> {
    fn walk(dir: &Path, rel: &Path, existing: &[PathBuf], ids: (u32, u32)) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let entry = entry.map_err(|e| io_err("list", dir, e))?;
            let path = entry.path();
            let rel = rel.join(entry.file_name());
            let md = fs::symlink_metadata(&path).map_err(|e| io_err("read", &path, e))?;
            if !existing.contains(&rel) {
                std::os::unix::fs::lchown(&path, Some(ids.0), Some(ids.1))
                    .map_err(|e| io_err("chown", &path, e))?;
                if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(md.mode() & 0o7777))
                        .map_err(|e| io_err("chmod", &path, e))?;
                }
            }
            if md.is_dir() {
                walk(&path, &rel, existing, ids)?;
            }
        }
        Ok(())
    }
    walk(staged_root, Path::new(""), existing, (uid, gid))
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

    /// Regression: `COPY README /home/coder/` made /home/coder root-owned (0755) in the
    /// image, undoing `useradd -m coder` from the RUN step before it.
    #[test]
    fn copy_keeps_the_owner_and_mode_of_existing_parent_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (lower, staged) = (t.path().join("lower"), t.path().join("staged"));
        fs::create_dir_all(lower.join("home/coder")).unwrap();
        fs::set_permissions(lower.join("home/coder"), fs::Permissions::from_mode(0o700)).unwrap();
        let privilege = Privilege::detect();
        let root = privilege.is_root();
        if root {
            std::os::unix::fs::lchown(lower.join("home/coder"), Some(1000), Some(1000)).unwrap();
        }
        fs::create_dir_all(staged.join("home/coder/new")).unwrap();
        fs::write(staged.join("home/coder/README"), "x").unwrap();
        inherit_existing_dirs(&[lower], &staged, "/home/coder/", &privilege).unwrap();
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
