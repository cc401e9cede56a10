//! [`LayerStack`]: unpacked layer directories (overlayfs form, bottom first) read as the
//! merged view overlayfs would show, without mounting anything: [`LayerStack::lookup`]
//! finds where a path's visible version lives, and [`LayerStack::materialize`] copies the
//! visible subtrees under some prefixes into a directory. USER resolution reads
//! `/etc/passwd` through it, COPY reads `--from` sources and the owners of existing
//! directories through it, so both honour whiteouts and opaque directories alike.
//!
//! The one rule: going down from the top, the first layer that has an entry at a path
//! decides; a whiteout there, or a whiteout, a non-directory or an opaque directory on any
//! ancestor in a layer, hides everything below it in older layers.

use crate::overlay::{is_opaque, is_whiteout};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A failure while materializing, naming what was being done to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}: {source}", path.display())]
pub struct Error {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Layer directories, bottom (base) first, as an image's layers are listed.
#[derive(Debug, Clone, Copy)]
pub struct LayerStack<'a> {
    lowers: &'a [PathBuf],
}

impl<'a> LayerStack<'a> {
    pub fn new(lowers: &'a [PathBuf]) -> LayerStack<'a> {
        LayerStack { lowers }
    }

    /// Where the merged view's `rel` lives (the path in the topmost layer that shows it),
    /// or `None` when no layer has it or a whiteout, a file or an opaque directory above
    /// it hides it.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        let parts: Vec<_> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            return self.lowers.last().cloned();
        }
        for layer in self.lowers.iter().rev() {
            let mut path = layer.clone();
            for (i, part) in parts.iter().enumerate() {
                path.push(part);
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    break;
                };
                if is_whiteout(&meta) {
                    return None;
                }
                if i + 1 == parts.len() {
                    return Some(path);
                }
                if !meta.is_dir() {
                    return None;
                }
                if is_opaque(&path) {
                    return below_opaque(path, &parts[i + 1..]);
                }
            }
        }
        None
    }

    /// The metadata of `rel` in the merged view (not following a final symlink).
    pub fn metadata(&self, rel: &Path) -> Option<fs::Metadata> {
        fs::symlink_metadata(self.lookup(rel)?).ok()
    }

    /// Replays the layers bottom to top into `out`, restricted to the subtrees under
    /// `prefixes` (relative paths): later layers win, whiteouts remove, opaque directories
    /// replace. Regular files, directories and symlinks are copied with their modes and
    /// (where this process may set them) owners; names of one inode within a layer stay
    /// hard links; devices, FIFOs and sockets are not copied.
    pub fn materialize(&self, prefixes: &[PathBuf], out: &Path) -> Result<(), Error> {
        let mut prefixes = prefixes.to_vec();
        prefixes.sort();
        prefixes.dedup();
        for lower in self.lowers {
            let mut links = Links::new();
            for prefix in &prefixes {
                replay_ancestors(lower, prefix, out)?;
                let src = lower.join(prefix);
                if fs::symlink_metadata(&src).is_ok() {
                    replay(&src, &out.join(prefix), &mut links)?;
                }
            }
        }
        Ok(())
    }
}

/// `rest` below the opaque directory `dir`, in that directory's layer alone.
fn below_opaque(mut path: PathBuf, rest: &[&std::ffi::OsStr]) -> Option<PathBuf> {
    for (i, part) in rest.iter().enumerate() {
        path.push(part);
        let meta = fs::symlink_metadata(&path).ok()?;
        if is_whiteout(&meta) || (i + 1 < rest.len() && !meta.is_dir()) {
            return None;
        }
    }
    Some(path)
}

fn remove_any(p: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p).map_err(err("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(err("remove", p)),
        Err(_) => Ok(()),
    }
}

/// Applies whiteouts and opaque markers a layer puts on the ancestors of `prefix`.
fn replay_ancestors(lower: &Path, prefix: &Path, out: &Path) -> Result<(), Error> {
    let mut rel = PathBuf::new();
    for comp in prefix.components() {
        rel.push(comp);
        let Ok(md) = fs::symlink_metadata(lower.join(&rel)) else {
            return Ok(());
        };
        if is_whiteout(&md) || !md.is_dir() || is_opaque(&lower.join(&rel)) {
            return remove_any(&out.join(&rel));
        }
    }
    Ok(())
}

/// The first copy of each multiply-linked inode of one layer, by (device, inode).
type Links = std::collections::HashMap<(u64, u64), PathBuf>;

/// Gives `dst` the owner of `md`; a process that may not (rootless) leaves its own.
fn keep_owner(dst: &Path, md: &fs::Metadata) -> Result<(), Error> {
    match std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other.map_err(err("chown", dst)),
    }
}

fn replay(src: &Path, dst: &Path, links: &mut Links) -> Result<(), Error> {
    let md = fs::symlink_metadata(src).map_err(err("read", src))?;
    if is_whiteout(&md) {
        return remove_any(dst);
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(err("create", parent))?;
    }
    if md.is_dir() {
        let existing = fs::symlink_metadata(dst).ok();
        if is_opaque(src) || existing.as_ref().is_some_and(|m| !m.is_dir()) {
            remove_any(dst)?;
        }
        if fs::symlink_metadata(dst).is_err() {
            fs::create_dir(dst).map_err(err("create", dst))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
        keep_owner(dst, &md)?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(err("list", src))?
            .collect::<std::io::Result<_>>()
            .map_err(err("list", src))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            replay(&e.path(), &dst.join(e.file_name()), links)?;
        }
        return Ok(());
    }
    remove_any(dst)?;
    if md.file_type().is_symlink() {
        let target = fs::read_link(src).map_err(err("read link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(err("create link", dst))?;
        keep_owner(dst, &md)?;
    } else if md.is_file() {
        let first = (md.nlink() > 1)
            .then(|| links.get(&(md.dev(), md.ino())))
            .flatten()
            .filter(|first| first.is_file());
        if let Some(first) = first {
            fs::hard_link(first, dst).map_err(err("link", dst))?;
            return Ok(());
        }
        fs::copy(src, dst).map_err(err("copy", src))?;
        // Owner first: chown clears set-id bits the mode then restores.
        keep_owner(dst, &md)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
        if md.nlink() > 1 {
            links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::{make_whiteout, mark_opaque};

    fn layer(root: &Path, name: &str, files: &[(&str, Option<&str>)]) -> PathBuf {
        let l = root.join(name);
        fs::create_dir_all(&l).unwrap();
        for (path, body) in files {
            let p = l.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match body {
                Some(b) => fs::write(&p, b).unwrap(),
                None => make_whiteout(&p).unwrap(),
            }
        }
        l
    }

    fn read(stack: &LayerStack<'_>, rel: &str) -> Option<String> {
        stack
            .lookup(Path::new(rel))
            .map(|p| fs::read_to_string(p).unwrap())
    }

    #[test]
    fn the_topmost_layer_wins_and_whiteouts_hide() {
        let t = tempfile::tempdir().unwrap();
        let base = layer(
            t.path(),
            "base",
            &[("etc/passwd", Some("v1")), ("etc/group", Some("g"))],
        );
        let top = layer(t.path(), "top", &[("etc/passwd", Some("v2"))]);
        let gone = layer(t.path(), "gone", &[("etc/group", None)]);
        let lowers = [base, top, gone];
        let stack = LayerStack::new(&lowers);
        assert_eq!(read(&stack, "etc/passwd").as_deref(), Some("v2"));
        assert_eq!(read(&stack, "/etc/passwd").as_deref(), Some("v2"));
        assert_eq!(stack.lookup(Path::new("etc/group")), None);
        assert_eq!(stack.lookup(Path::new("etc/shadow")), None);
        assert_eq!(
            read(&LayerStack::new(&lowers[..1]), "etc/group").as_deref(),
            Some("g")
        );
    }

    #[test]
    fn a_whiteout_on_an_ancestor_hides_everything_below() {
        let t = tempfile::tempdir().unwrap();
        let base = layer(
            t.path(),
            "base",
            &[("opt/app/bin/run", Some("old")), ("opt/keep", Some("k"))],
        );
        let mid = layer(t.path(), "mid", &[("opt/app", None)]);
        let lowers = [base.clone(), mid.clone()];
        let stack = LayerStack::new(&lowers);
        assert_eq!(stack.lookup(Path::new("opt/app/bin/run")), None);
        assert_eq!(stack.lookup(Path::new("opt/app")), None);
        assert!(stack.metadata(Path::new("opt/app/bin")).is_none());
        assert_eq!(read(&stack, "opt/keep").as_deref(), Some("k"));
        // A layer above the whiteout brings the directory back with only its own content.
        let top = layer(t.path(), "top", &[("opt/app/new", Some("n"))]);
        let lowers = [base.clone(), mid.clone(), top];
        let stack = LayerStack::new(&lowers);
        assert_eq!(read(&stack, "opt/app/new").as_deref(), Some("n"));
        assert_eq!(stack.lookup(Path::new("opt/app/bin/run")), None);
        // A file replacing an ancestor directory hides it as well.
        let file = layer(t.path(), "file", &[("opt", Some("now a file"))]);
        let lowers = [base.clone(), file];
        assert_eq!(LayerStack::new(&lowers).lookup(Path::new("opt/keep")), None);
        // Materializing honours the ancestor whiteout the same way.
        let out = t.path().join("out");
        LayerStack::new(&[base, mid])
            .materialize(&[PathBuf::from("opt/app/bin")], &out)
            .unwrap();
        assert!(!out.join("opt/app/bin/run").exists());
    }

    #[test]
    fn opaque_directories_hide_older_layers() {
        let t = tempfile::tempdir().unwrap();
        let base = layer(
            t.path(),
            "base",
            &[("app/old/f", Some("old")), ("app/keep", Some("v1"))],
        );
        let mid = layer(t.path(), "mid", &[("app/keep", Some("v2"))]);
        let lowers = [base.clone(), mid.clone()];
        let out = t.path().join("out");
        LayerStack::new(&lowers)
            .materialize(&[PathBuf::from("app")], &out)
            .unwrap();
        assert_eq!(fs::read_to_string(out.join("app/keep")).unwrap(), "v2");
        assert!(out.join("app/old/f").exists());
        let top = layer(t.path(), "top", &[("app/new", Some("n"))]);
        if mark_opaque(&top.join("app")).is_err() {
            panic!("this file system takes no user xattrs; run the tests on one that does");
        }
        let lowers = [base, mid, top];
        let stack = LayerStack::new(&lowers);
        assert_eq!(stack.lookup(Path::new("app/keep")), None);
        assert_eq!(stack.lookup(Path::new("app/old/f")), None);
        assert_eq!(read(&stack, "app/new").as_deref(), Some("n"));
        assert!(stack.metadata(Path::new("app")).unwrap().is_dir());
        let out2 = t.path().join("out2");
        stack.materialize(&[PathBuf::from("app")], &out2).unwrap();
        assert!(!out2.join("app/keep").exists());
        assert!(out2.join("app/new").exists());
    }
}
