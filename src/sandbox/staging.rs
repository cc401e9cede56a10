//! [`Staging`]: the parent's per-step scratch directory. It holds the mount point of the
//! step's root, the step's `resolv.conf`/`hosts`/`hostname`, and one extra, topmost lower
//! layer that provides the mount points the sandbox needs (`/proc`, `/dev`, `/sys` and the
//! three `/etc` files) so that none of them is ever created in the step's upper directory.
//! Its directories copy the owner, mode and mtime of the image's own, so a copy-up of, say,
//! `/etc` records the image's metadata, not ours.

use super::mounts::ETC_FILES;
use super::{Network, RunSpec};
use crate::stack::LayerStack;
use crate::userns::{remove_as_root, Privilege};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The scratch directory of one step, removed on drop.
pub struct Staging {
    dir: tempfile::TempDir,
    privilege: Privilege,
}

impl Staging {
    /// Creates it next to the step's upper directory.
    pub fn new(spec: &RunSpec, privilege: &Privilege) -> io::Result<Staging> {
        let parent = spec.upper.parent().unwrap_or(Path::new("/tmp"));
        let dir = tempfile::Builder::new()
            .prefix(".sandbox-")
            .tempdir_in(parent)?;
        let staging = Staging {
            dir,
            privilege: privilege.clone(),
        };
        fs::create_dir(staging.root())?;
        staging.write_etc_files(spec)?;
        staging.make_top_layer(&spec.lowers)?;
        Ok(staging)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn etc_files(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn top_layer(&self) -> PathBuf {
        self.dir.path().join("top")
    }

    /// The staging directory itself: the helper works from here, so that the overlay
    /// options can name lowers by the short links of [`Staging::link_lowers`].
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Links `l/0`, `l/1`, … to `lowers` and returns those relative names: a page of
    /// mount options then holds hundreds of lowers instead of a few dozen store paths
    /// (Docker's overlay2 driver does the same).
    pub fn link_lowers(&self, lowers: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
        let dir = self.dir.path().join("l");
        fs::create_dir(&dir)?;
        let mut names = Vec::with_capacity(lowers.len());
        for (i, lower) in lowers.iter().enumerate() {
            let name = Path::new("l").join(i.to_string());
            std::os::unix::fs::symlink(std::path::absolute(lower)?, self.dir.path().join(&name))?;
            names.push(name);
        }
        Ok(names)
    }

    /// A directory for the copy-based fallback's merged root.
    pub fn copy_dir(&self) -> PathBuf {
        self.dir.path().join("copy")
    }

    fn write_etc_files(&self, spec: &RunSpec) -> io::Result<()> {
        let dir = self.etc_files();
        fs::create_dir(&dir)?;
        let resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        let resolv = match spec.network {
            Network::Default => super::net::resolv_conf(&String::from_utf8_lossy(&resolv)).into(),
            Network::Host | Network::None => resolv,
        };
        fs::write(dir.join("resolv.conf"), resolv)?;
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
            spec.hostname
        );
        fs::write(dir.join("hosts"), hosts)?;
        fs::write(dir.join("hostname"), format!("{}\n", spec.hostname))
    }

    fn make_top_layer(&self, lowers: &[PathBuf]) -> io::Result<()> {
        let top = self.top_layer();
        fs::create_dir(&top)?;
        for name in ["etc", "proc", "dev", "sys"] {
            fs::create_dir(top.join(name))?;
        }
        for name in ETC_FILES {
            fs::write(top.join("etc").join(name), b"")?;
        }
        let stack = LayerStack::new(lowers);
        for name in ["etc", "proc", "dev", "sys"] {
            if let Some(image) = stack.lookup(Path::new(name)) {
                copy_dir_metadata(&image, &top.join(name), self.privilege.is_root())?;
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    /// A rootless copy-based root holds files of the step's users (subordinate ids) that
    /// the user alone cannot remove; the namespace's root can.
    fn drop(&mut self) {
        if std::fs::remove_dir_all(self.dir.path()).is_err() {
            let _ = remove_as_root(&self.privilege, self.dir.path());
        }
    }
}

/// Owner (when `as_root`), mode and mtime of directory `from` onto `to`.
fn copy_dir_metadata(from: &Path, to: &Path, as_root: bool) -> io::Result<()> {
    let meta = fs::metadata(from)?;
    if !meta.is_dir() {
        return Ok(());
    }
    if as_root {
        std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::set_permissions(to, meta.permissions())?;
    let t = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        to,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}
