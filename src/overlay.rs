//! Overlay vocabulary, in one leaf module shared by the unpacker (`rootfs`), the sandbox,
//! the layer stack and the layer writer (`layer::walk`): how a whiteout and an opaque
//! directory look on disk in overlayfs form (a 0/0 character device, an `overlay.opaque`
//! xattr) and in OCI form (`.wh.<name>`, `.wh..wh..opq`), which xattrs belong to overlayfs,
//! and the mount options that stack unpacked layers under a step's fresh upper directory.

use std::io;
use std::path::{Path, PathBuf};

/// The OCI whiteout prefix: `.wh.<name>` in a layer tar deletes `<name>` below it.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The OCI opaque-directory marker: its directory hides everything below it.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Name of the opaque marker xattr, after the namespace prefix.
const OPAQUE: &str = "opaque";

/// The xattr namespace overlayfs uses: `trusted.` for a mount in the initial user
/// namespace, `user.` (with the `userxattr` mount option) inside a user namespace.
pub fn xattr_prefix(rootless: bool) -> &'static str {
    if rootless {
        "user.overlay."
    } else {
        "trusted.overlay."
    }
}

/// Creates an overlay whiteout at `path`: a character device 0/0 (which the kernel lets
/// unprivileged users create since Linux 5.8).
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)
}

/// Whether `meta` describes an overlay whiteout.
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Marks `dir` opaque: lower layers' entries below it are hidden. Every sandbox mounts its
/// overlay inside a user namespace, where a `trusted.` xattr is invisible even to a
/// sandbox started by real root, so the marker is always the `user.` one.
pub fn mark_opaque(dir: &Path) -> io::Result<()> {
    xattr::set(dir, format!("{}{OPAQUE}", xattr_prefix(true)), b"y")
}

/// Whether `dir` carries an opaque marker in either namespace (an unreadable marker
/// counts as none; [`read_opaque`] tells the difference).
pub fn is_opaque(dir: &Path) -> bool {
    [false, true].iter().any(|&rootless| {
        let name = format!("{}{OPAQUE}", xattr_prefix(rootless));
        matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y")
    })
}

/// Whether `dir` carries an opaque marker in either namespace; a file system without
/// xattrs has none, any other failure to read them is an error.
pub fn read_opaque(dir: &Path) -> io::Result<bool> {
    for rootless in [false, true] {
        let name = format!("{}{OPAQUE}", xattr_prefix(rootless));
        match xattr::get(dir, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Whether an xattr name belongs to overlayfs, so a layer must never set it itself.
pub fn is_overlay_xattr(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Mount options for an overlay of `lowers` (bottom first, as layers are listed) under
/// `upper`. `userxattr` is for mounts inside a user namespace. Features that would leave
/// anything but plain files, whiteouts and opaque markers in the upper directory
/// (metacopy, redirects, the inode index) are turned off so the upper is exactly the change
/// (`userxattr` implies redirects off and refuses being told so).
pub fn mount_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
) -> io::Result<String> {
    if lowers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "overlay needs a lower directory",
        ));
    }
    let mut all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    all.extend([upper, work]);
    for p in &all {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) || s.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("overlay cannot take the path {s:?}"),
            ));
        }
    }
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off,metacopy=off",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    opts.push_str(if userxattr {
        ",userxattr"
    } else {
        ",redirect_dir=off"
    });
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_listed_top_first() {
        let lowers = [
            PathBuf::from("/s/base"),
            PathBuf::from("/s/mid"),
            PathBuf::from("/s/top"),
        ];
        let o = mount_options(&lowers, Path::new("/u"), Path::new("/w"), true).unwrap();
        assert!(
            o.starts_with("lowerdir=/s/top:/s/mid:/s/base,upperdir=/u,workdir=/w,"),
            "{o}"
        );
        assert!(o.ends_with(",userxattr"));
        assert!(mount_options(
            &[PathBuf::from("/a:b")],
            Path::new("/u"),
            Path::new("/w"),
            false
        )
        .is_err());
        assert!(mount_options(&[], Path::new("/u"), Path::new("/w"), false).is_err());
    }

    #[test]
    fn whiteouts_and_opaque_markers_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let wh = dir.path().join("gone");
        make_whiteout(&wh).unwrap();
        assert!(is_whiteout(&std::fs::symlink_metadata(&wh).unwrap()));
        assert!(!is_opaque(dir.path()));
        mark_opaque(dir.path()).unwrap();
        assert!(is_opaque(dir.path()));
    }
}
