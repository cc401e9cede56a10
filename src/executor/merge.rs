//! [`materialize`]: the merged view of a finished stage's layers, restricted to the paths a
//! `COPY --from` reads (after [`resolve_patterns`] resolved the symlinks on their way inside
//! that stage's root); [`inherit_existing_dirs`]: the image's own metadata for the
//! directories a COPY stages above its destination; [`follow_image_symlinks`]: staged
//! directories moved to where the image's symlinks point; [`chown_created`]: `--chown` on
//! what the COPY created. All read the layers through the [`LayerStack`] (overlayfs form,
//! replayed in user space — no root needed, nothing to unmount).

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

/// Follows the image's symlinks under what a COPY or ADD staged, as BuildKit's copy onto the
/// merged root does: a staged directory at a path that is a symlink in the image
/// (`link -> /real`, `var/run -> ../run`) has its content moved to the link's target,
/// resolved inside the image's root, so the layer does not replace the link. The
/// directories it creates on the way exist in the image and get its mode and owner (owner
/// as root only); their relative paths are added to `existing`.
pub fn follow_image_symlinks(
    lowers: &[PathBuf],
    staged_root: &Path,
    privilege: &Privilege,
    existing: &mut Vec<PathBuf>,
) -> Result<()> {
    let stack = LayerStack::new(lowers);
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = staged_root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| io_err("list", &dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_err("list", &dir, e))?;
        names.sort();
        for name in names {
            let child = rel.join(&name);
            let staged = staged_root.join(&child);
            let is_dir = fs::symlink_metadata(&staged).is_ok_and(|m| m.is_dir());
            if !is_dir {
                continue;
            }
            // Nothing below a path the image lacks can be one of its symlinks.
            let Some(in_image) = stack.metadata(&child) else {
                continue;
            };
            let is_link = in_image.file_type().is_symlink();
            let target = if is_link {
                resolve_in_stack(&stack, &child)
            } else {
                None
            };
            let Some(target) = target.filter(|t| !t.starts_with(&child) && *t != child) else {
                todo.push(child);
                continue;
            };
            // The target's directories exist in the image: stage them with its metadata.
            let mut at = PathBuf::new();
            for comp in target.components() {
                at.push(comp);
                let p = staged_root.join(&at);
                if fs::symlink_metadata(&p).is_err() {
                    fs::create_dir(&p).map_err(|e| io_err("create", &p, e))?;
                    if let Some(md) = stack.metadata(&at).filter(|m| m.is_dir()) {
                        fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() & 0o7777))
                            .map_err(|e| io_err("chmod", &p, e))?;
                        if privilege.is_root() {
                            std::os::unix::fs::lchown(&p, Some(md.uid()), Some(md.gid()))
                                .map_err(|e| io_err("chown", &p, e))?;
                        }
                    }
                    existing.push(at.clone());
                }
            }
            move_into(&staged, &staged_root.join(&target))?;
            fs::remove_dir_all(&staged).map_err(|e| io_err("remove", &staged, e))?;
            todo.push(PathBuf::new());
            break;
        }
    }
    Ok(())
}

/// `rel` with every symlink on it resolved in the merged view, inside its root (40 hops
/// at most); `None` when a hop is unreadable.
fn resolve_in_stack(stack: &LayerStack<'_>, rel: &Path) -> Option<PathBuf> {
    let mut todo: Vec<String> = rel
        .to_string_lossy()
        .split('/')
        .rev()
        .map(str::to_string)
        .collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => at.push(&part),
        }
        if !stack
            .metadata(&at)
            .is_some_and(|m| m.file_type().is_symlink())
        {
            continue;
        }
        hops += 1;
        if hops > 40 {
            return None;
        }
        let target = fs::read_link(stack.lookup(&at)?).ok()?;
        let target = target.to_string_lossy().into_owned();
        at.pop();
        if target.starts_with('/') {
            at = PathBuf::new();
        }
        todo.extend(target.split('/').rev().map(str::to_string));
    }
    Some(at)
}

/// The first directory of the absolute path `dir` (relative, as written) that the image
/// lacks, its symlinks followed inside its root; `None` when the whole path exists. A
/// non-directory on the way is mkdir's "not a directory".
pub fn first_missing_dir(lowers: &[PathBuf], dir: &str) -> Result<Option<PathBuf>> {
    let stack = LayerStack::new(lowers);
    let mut rel = PathBuf::new();
    for comp in Path::new(dir.trim_start_matches('/')).components() {
        rel.push(comp);
        let Some(resolved) = resolve_in_stack(&stack, &rel) else {
            return Ok(Some(rel));
        };
        match stack.metadata(&resolved) {
            None => return Ok(Some(rel)),
            Some(md) if md.is_dir() => {}
            Some(_) => {
                return Err(Error::Usage(format!(
                    "mkdir {dir}: /{} is not a directory",
                    rel.display()
                )))
            }
        }
    }
    Ok(None)
}

/// Moves the children of directory `from` into directory `to`, merging directories.
fn move_into(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).map_err(|e| io_err("list", from, e))? {
        let entry = entry.map_err(|e| io_err("list", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let src_dir = fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir());
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && src_dir => move_into(&src, &dst)?,
            Ok(m) => {
                if m.is_dir() {
                    fs::remove_dir_all(&dst).map_err(|e| io_err("remove", &dst, e))?;
                } else {
                    fs::remove_file(&dst).map_err(|e| io_err("remove", &dst, e))?;
                }
                fs::rename(&src, &dst).map_err(|e| io_err("move", &src, e))?;
            }
            Err(_) => fs::rename(&src, &dst).map_err(|e| io_err("move", &src, e))?,
        }
    }
    Ok(())
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
