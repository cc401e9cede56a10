//! A step's own mounts (`RUN --mount`): [`StepMount`]s the executor resolved, mounted by
//! [`mount_all`] into the new root after the special file systems and before the pivot,
//! while host paths (cache directories, agent sockets) are still reachable.
//!
//! Targets are resolved inside the root ([`resolve_in_root`]): a symlink in the image is
//! followed as the step would see it, an absolute link or `..` never leaves the root. A
//! target missing from the image is created (directory, or an empty file for a file
//! mount); the executor removes such stubs from the step's change afterwards, so they never
//! reach the layer. Secret bytes travel in the job's message, are written to a tmpfs mounted
//! (in the step's private mount namespace) on a scratch directory outside the root, and
//! bind-mounted from there: they never reach a disk, and the pivot leaves only the binds.

use super::sys::Syscall;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// One mount of a step, resolved by the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMount {
    /// Absolute path inside the step's root (WORKDIR already applied).
    pub target: String,
    pub kind: StepMountKind,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepMountKind {
    /// A host directory (cache mount, a bound copy) or socket (SSH agent).
    Bind {
        source: PathBuf,
        readonly: bool,
        /// Mode, uid and gid the source gets first (a cache directory just created, a
        /// step's own agent socket), set inside the user namespace so rootless ids are
        /// the step's.
        init: Option<(u32, u32, u32)>,
        /// The source is a file or socket, not a directory (the stub is a file).
        file: bool,
    },
    /// An empty tmpfs of at most `size` bytes.
    Tmpfs { size: Option<u64> },
    /// A read-only file with these bytes (a secret), mode and owner.
    Secret {
        bytes: SecretBytes,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// A secret's bytes: serialised only into the helper's message; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// `target` as the step would reach it from `root`: symlinks followed, absolute links and
/// `..` kept inside `root`. Missing components are taken as they are (they will be created).
pub fn resolve_in_root(root: &Path, target: &str) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = Path::new(target)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut out = PathBuf::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&name);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("mount target {target}: too many levels of symbolic links"),
                    ));
                }
                let link = std::fs::read_link(root.join(&candidate))?;
                if link.is_absolute() {
                    out = PathBuf::new();
                }
                let mut rest: Vec<OsString> = link
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                rest.extend(queue.drain(..));
                queue = rest.into();
            }
            _ => out = candidate,
        }
    }
    Ok(root.join(out))
}

/// Mounts every step mount under `root`, in the order written (a later mount may sit
/// inside an earlier one, as in BuildKit).
///
/// `scratch` is an empty directory outside the root where secrets get their tmpfs.
pub fn mount_all(
    sys: &dyn Syscall,
    root: &Path,
    scratch: &Path,
    mounts: &[StepMount],
) -> io::Result<()> {
    let mut secrets = 0;
    for m in mounts {
        let at = resolve_in_root(root, &m.target)?;
        if at == root {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot mount over / (mount target {})", m.target),
            ));
        }
        match &m.kind {
            StepMountKind::Bind {
                source,
                readonly,
                init,
                file,
            } => {
                if let Some((mode, uid, gid)) = init {
                    sys.chown(source, *mode, *uid, *gid)?;
                }
                stub(sys, &at, *file)?;
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                sys.mount(Some(source), &at, None, flags, None)?;
                if *readonly {
                    let locked = sys.locked_flags(&at)?;
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                    sys.mount(None, &at, None, flags | locked, None)?;
                }
            }
            StepMountKind::Tmpfs { size } => {
                stub(sys, &at, false)?;
                let data = size.map(|s| format!("size={s}"));
                let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &at,
                    Some("tmpfs"),
                    flags,
                    data.as_deref(),
                )?;
            }
            StepMountKind::Secret {
                bytes,
                mode,
                uid,
                gid,
            } => {
                if secrets == 0 {
                    sys.mkdir_all(scratch)?;
                    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
                    sys.mount(
                        Some(Path::new("tmpfs")),
                        scratch,
                        Some("tmpfs"),
                        flags,
                        Some("mode=700"),
                    )?;
                }
                secrets += 1;
                let source = scratch.join(secrets.to_string());
                sys.write_file(&source, &bytes.0, *mode, *uid, *gid)?;
                stub(sys, &at, true)?;
                sys.mount(Some(&source), &at, None, MsFlags::MS_BIND, None)?;
                let locked = sys.locked_flags(&at)?;
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                sys.mount(None, &at, None, flags | locked, None)?;
            }
        }
    }
    Ok(())
}

/// Makes the mount point: a directory, or an empty file (with its parent directories).
fn stub(sys: &dyn Syscall, at: &Path, file: bool) -> io::Result<()> {
    if file {
        if let Some(parent) = at.parent() {
            sys.mkdir_all(parent)?;
        }
        sys.touch(at)
    } else {
        sys.mkdir_all(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("real/sub", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |t: &str| resolve_in_root(root, t).unwrap();
        assert_eq!(r("/abs/x"), root.join("real/x"));
        assert_eq!(r("/escape/passwd"), root.join("etc/passwd"));
        assert_eq!(r("/rel/../y"), root.join("real/y"));
        assert_eq!(r("/../../missing/a"), root.join("missing/a"));
        assert!(resolve_in_root(root, "/loop/a").is_err());
    }
}
