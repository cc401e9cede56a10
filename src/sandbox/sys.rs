//! Every system call of the sandbox behind one seam: the [`Syscall`] trait (mounts and the
//! file operations that shape the new root, so their order is unit-tested with a recording
//! fake, as youki does), and the few calls `nix` does not wrap safely. This is the only
//! file of the crate allowed `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::io;
use std::path::Path;

/// The mount-namespace operations that build a step's root.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `pivot_root(new_root, new_root)` then a lazy unmount of the old root, leaving the
    /// process in `/` of the new root with the host's tree unreachable.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates an empty regular file to bind-mount over, if nothing is there yet.
    fn touch(&self, path: &Path) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// The mount flags (`nosuid`, `nodev`, `noexec`, …) a read-only remount of a bind
    /// mount of `path` must keep, because a user namespace may not clear them.
    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags>;
    /// Sets a mount source's mode and owner (a cache directory just created).
    fn chown(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()>;
    /// Writes a file with these bytes, mode and owner (a secret, on a private tmpfs).
    fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()>;
}

/// The real thing.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        mount(source, target, fstype, flags, data).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "mount {} on {}: {e}",
                    fstype.unwrap_or("bind"),
                    target.display()
                ),
            )
        })
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".")?;
        umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        Ok(())
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(()),
            Err(_) => std::fs::File::create(path).map(drop),
        }
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn chown(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags> {
        use nix::sys::statvfs::{statvfs, FsFlags};
        let f = statvfs(path)?.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }
}

/// Forks the (single-threaded) sandbox helper.
pub fn fork() -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: only called from the re-executed sandbox helper, which never starts a
    // thread, so the child cannot inherit a lock held by another thread.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Drops every capability not in `keep` (a bit set) from the bounding set, so no exec
/// can gain it back.
pub fn drop_bounding_caps(keep: u64, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no memory.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // A capability this kernel does not know is not there to drop.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    // SAFETY: as above, integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Sets the effective, permitted and inheritable capability sets to `caps`.
pub fn set_caps(caps: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| {
        let v = (caps >> shift) as u32;
        Data {
            effective: v,
            permitted: v,
            inheritable: v,
        }
    };
    let data = [half(0), half(32)];
    // SAFETY: capset(2) with a version-3 header reads exactly two `Data` structs, which
    // `data` provides; both pointers outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
    const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
    // Binding the wildcard address needs no interface, so this works while lo is down.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write a `struct ifreq` (40 bytes, the name
    // then a short), which `IfReq` lays out and which lives across both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS as _, &mut req as *mut IfReq) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS as _, &mut req as *mut IfReq) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
