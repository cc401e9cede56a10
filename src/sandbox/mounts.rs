//! [`build_root`]: the mount sequence that turns a prepared directory into a step's root
//! file system, written against the `Syscall` trait so its order is tested without privileges.
//!
//! Runs in the sandbox's init process, inside the new user, mount and PID namespaces.
//! Device nodes are bind-mounted from the host because nothing mounted in a user
//! namespace may hold usable device nodes; `/sys` falls back to a read-only bind of the
//! host's when the step shares the host's network namespace (sysfs may then not be mounted).

use super::sys::Syscall;
use nix::mount::MsFlags;
use std::io;
use std::path::{Path, PathBuf};

/// Where a step's root comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootSource {
    /// An overlay mount with these options.
    Overlay(String),
    /// A prepared directory (the copy-based fallback), bind-mounted.
    Bind(PathBuf),
}

/// What [`build_root`] needs.
pub struct RootPlan<'a> {
    /// The (empty) mount point that becomes `/`.
    pub root: &'a Path,
    pub source: RootSource,
    /// A directory holding `resolv.conf`, `hosts` and `hostname` for the step.
    pub etc_files: &'a Path,
    /// The size of `/dev/shm` in bytes (`--shm-size`; Docker's 64 MiB when `None`).
    pub shm_size: Option<u64>,
    /// The step's own mounts (`RUN --mount`), mounted last.
    pub step_mounts: &'a [super::stepmounts::StepMount],
}

/// Device nodes bind-mounted from the host into `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Files the step sees but never writes into its layer.
pub const ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];
/// Kernel interfaces Docker hides (`/dev/null` over files) or makes read-only.
const MASKED: [&str; 4] = [
    "proc/kcore",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
];
const READ_ONLY: [&str; 4] = ["proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus"];

/// Mounts everything under `plan.root`, then pivots into it.
pub fn build_root(sys: &dyn Syscall, plan: &RootPlan) -> io::Result<()> {
    let root = plan.root;
    // Nothing we mount may propagate back to the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    match &plan.source {
        RootSource::Overlay(opts) => sys.mount(
            Some(Path::new("overlay")),
            root,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts),
        )?,
        RootSource::Bind(dir) => sys.mount(
            Some(dir),
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?,
    }
    mount_proc(sys, root)?;
    mount_dev(sys, root, plan.shm_size)?;
    mount_sys(sys, root)?;
    for name in ETC_FILES {
        let target = root.join("etc").join(name);
        sys.mount(
            Some(&plan.etc_files.join(name)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    super::stepmounts::mount_all(sys, root, &plan.etc_files.join("secrets"), plan.step_mounts)?;
    sys.pivot_root(root)
}

fn mount_proc(sys: &dyn Syscall, root: &Path) -> io::Result<()> {
    let proc = root.join("proc");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(Some(Path::new("proc")), &proc, Some("proc"), flags, None)?;
    for path in MASKED {
        let target = root.join(path);
        if target.exists() {
            sys.mount(
                Some(Path::new("/dev/null")),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for path in READ_ONLY {
        let target = root.join(path);
        if target.exists() {
            bind_read_only(sys, &target, &target)?;
        }
    }
    Ok(())
}

fn mount_dev(sys: &dyn Syscall, root: &Path, shm_size: Option<u64>) -> io::Result<()> {
    let dev = root.join("dev");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        sys.touch(&target)?;
        sys.mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    let pts = dev.join("pts");
    sys.mkdir_all(&pts)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    sys.mkdir_all(&shm)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        flags,
        Some(&format!(
            "mode=1777,size={}k",
            shm_size.unwrap_or(64 << 20).div_ceil(1024)
        )),
    )?;
    // POSIX message queues of the step's own IPC namespace, as Docker mounts them.
    let mqueue = dev.join("mqueue");
    sys.mkdir_all(&mqueue)?;
    sys.mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))?;
    }
    Ok(())
}

fn mount_sys(sys: &dyn Syscall, root: &Path) -> io::Result<()> {
    let target = root.join("sys");
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if sys
        .mount(
            Some(Path::new("sysfs")),
            &target,
            Some("sysfs"),
            flags,
            None,
        )
        .is_ok()
    {
        return Ok(());
    }
    bind_read_only(sys, Path::new("/sys"), &target)
}

/// Bind-mounts `source` on `target` and remounts it read-only, keeping the flags a user
/// namespace may not clear.
fn bind_read_only(sys: &dyn Syscall, source: &Path, target: &Path) -> io::Result<()> {
    sys.mount(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let locked = sys.locked_flags(target)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
    sys.mount(None, target, None, flags, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every call; fails mounts of the file system types in `fail`.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
        fail: Vec<&'static str>,
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            _: Option<&str>,
        ) -> io::Result<()> {
            let src = source.map(|s| s.display().to_string()).unwrap_or_default();
            let ty = fstype.unwrap_or("-");
            let ro = if flags.contains(MsFlags::MS_RDONLY) {
                " ro"
            } else {
                ""
            };
            self.calls
                .borrow_mut()
                .push(format!("mount {ty} {src} {}{ro}", target.display()));
            if self.fail.contains(&ty) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("pivot {}", new_root.display()));
            Ok(())
        }
        fn mkdir_all(&self, path: &Path) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("mkdir {}", path.display()));
            Ok(())
        }
        fn touch(&self, path: &Path) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("touch {}", path.display()));
            Ok(())
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("ln {} {}", target.display(), link.display()));
            Ok(())
        }
        fn locked_flags(&self, _: &Path) -> io::Result<MsFlags> {
            Ok(MsFlags::MS_NOSUID)
        }
        fn chown(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("chown {} {mode:o} {uid}:{gid}", path.display()));
            Ok(())
        }
        fn write_file(&self, p: &Path, b: &[u8], mode: u32, _: u32, _: u32) -> io::Result<()> {
            self.calls.borrow_mut().push(format!(
                "write {} {} bytes {mode:o}",
                p.display(),
                b.len()
            ));
            Ok(())
        }
    }

    fn plan(source: RootSource) -> RootPlan<'static> {
        RootPlan {
            root: Path::new("/nonexistent/r"),
            source,
            etc_files: Path::new("/nonexistent/f"),
            shm_size: None,
            step_mounts: &[],
        }
    }

    #[test]
    fn root_is_private_then_overlay_then_specials_then_pivot() {
        let rec = Recorder::default();
        build_root(&rec, &plan(RootSource::Overlay("lowerdir=/l".into()))).unwrap();
        let calls = rec.calls.into_inner();
        assert_eq!(calls[0], "mount -  /");
        assert_eq!(calls[1], "mount overlay overlay /nonexistent/r");
        assert_eq!(calls[2], "mount proc proc /nonexistent/r/proc");
        assert!(calls.contains(&"mount - /dev/null /nonexistent/r/dev/null".to_string()));
        assert!(calls.contains(&"mount sysfs sysfs /nonexistent/r/sys ro".to_string()));
        let resolv = calls
            .iter()
            .position(|c| c == "mount - /nonexistent/f/resolv.conf /nonexistent/r/etc/resolv.conf");
        assert!(resolv.is_some(), "{calls:#?}");
        assert_eq!(calls.last().unwrap(), "pivot /nonexistent/r");
    }

    #[test]
    fn step_mounts_come_after_the_specials_and_before_the_pivot() {
        use super::super::stepmounts::{SecretBytes, StepMount, StepMountKind};
        let rec = Recorder::default();
        let mounts = [
            StepMount {
                target: "/c".into(),
                kind: StepMountKind::Bind {
                    source: "/store/cache".into(),
                    readonly: true,
                    init: Some((0o750, 7, 8)),
                    file: false,
                },
            },
            StepMount {
                target: "/t".into(),
                kind: StepMountKind::Tmpfs { size: Some(1024) },
            },
            StepMount {
                target: "/run/secrets/tok".into(),
                kind: StepMountKind::Secret {
                    bytes: SecretBytes(b"xyz".to_vec()),
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            },
        ];
        let plan = RootPlan {
            step_mounts: &mounts,
            ..plan(RootSource::Overlay("lowerdir=/l".into()))
        };
        build_root(&rec, &plan).unwrap();
        let calls = rec.calls.into_inner();
        let at = |c: &str| {
            calls
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{c} missing: {calls:#?}"))
        };
        let resolv = at("mount - /nonexistent/f/resolv.conf /nonexistent/r/etc/resolv.conf");
        let chown = at("chown /store/cache 750 7:8");
        let bind = at("mount - /store/cache /nonexistent/r/c");
        let tmpfs = at("mount tmpfs tmpfs /nonexistent/r/t");
        let scratch = at("mount tmpfs tmpfs /nonexistent/f/secrets");
        let write = at("write /nonexistent/f/secrets/1 3 bytes 400");
        let secret = at("mount - /nonexistent/f/secrets/1 /nonexistent/r/run/secrets/tok");
        assert!(resolv < chown && chown < bind && bind < tmpfs, "{calls:#?}");
        assert!(
            tmpfs < scratch && scratch < write && write < secret,
            "{calls:#?}"
        );
        assert_eq!(calls[bind + 1], "mount -  /nonexistent/r/c ro");
        assert_eq!(
            calls[secret + 1],
            "mount -  /nonexistent/r/run/secrets/tok ro"
        );
        assert_eq!(calls.last().unwrap(), "pivot /nonexistent/r");
    }

    #[test]
    fn sys_falls_back_to_a_read_only_bind() {
        let rec = Recorder {
            fail: vec!["sysfs"],
            ..Default::default()
        };
        build_root(&rec, &plan(RootSource::Bind("/copy".into()))).unwrap();
        let calls = rec.calls.into_inner();
        assert_eq!(calls[1], "mount - /copy /nonexistent/r");
        let i = calls
            .iter()
            .position(|c| c == "mount - /sys /nonexistent/r/sys")
            .unwrap();
        assert_eq!(calls[i + 1], "mount -  /nonexistent/r/sys ro");
    }
}
