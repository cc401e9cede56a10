//! Helpers for the sandbox and rootfs tests: layer directories made from busybox or a
//! cached Debian minbase, a step runner, and tar fixtures.
#![allow(dead_code)]

use cairn::sandbox::{run_with, Limits, Network, RootMode, RunSpec, Security};
use cairn::userns::Privilege;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox root file system as one lower directory.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("busybox-layer");
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(layer.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", layer.join("bin/busybox"))
        .expect("busybox-static is installed by scripts/setup");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", layer.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        layer.join("etc/group"),
        "root:x:0:\nbob:x:1000:\nstaff:x:50:bob\n",
    )
    .unwrap();
    layer
}

/// One step's directories: lowers, a fresh upper and work dir.
pub struct Step {
    pub dir: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub network: Network,
    pub security: Security,
    pub limits: Limits,
    pub user: String,
    pub env: Vec<String>,
    pub mode: RootMode,
}

impl Step {
    pub fn new(lowers: Vec<PathBuf>, dir: tempfile::TempDir) -> Step {
        std::env::set_var(cairn::userns::EXE_ENV, env!("CARGO_BIN_EXE_cairn"));
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&work).unwrap();
        Step {
            dir,
            lowers,
            upper,
            work,
            network: Network::Host,
            security: Security::Sandbox,
            limits: Limits::default(),
            user: String::new(),
            env: vec![],
            mode: RootMode::Auto,
        }
    }

    pub fn busybox() -> Step {
        let dir = tempfile::Builder::new()
            .prefix("cairn-sbx-")
            .tempdir()
            .unwrap();
        let layer = busybox_layer(dir.path());
        Step::new(vec![layer], dir)
    }

    /// Runs `sh -c script`; returns the exit code and the output.
    pub fn run(&self, script: &str) -> (i32, String) {
        self.run_argv(&["/bin/sh", "-c", script])
    }

    pub fn run_argv(&self, argv: &[&str]) -> (i32, String) {
        let spec = RunSpec {
            lowers: self.lowers.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: "/".into(),
            network: self.network,
            security: self.security,
            limits: self.limits.clone(),
            hostname: "cairn-test".into(),
            stdin: None,
            mounts: Vec::new(),
        };
        let mut out = Vec::new();
        let code = run_with(
            &spec,
            &Privilege::detect(),
            self.mode,
            &mut |b| out.extend_from_slice(b),
            &mut |_| {},
        )
        .expect("the sandbox works");
        (code, String::from_utf8_lossy(&out).into_owned())
    }
}

/// The upper directory's entries, relative, sorted.
pub fn upper_entries(step: &Step) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(&step.upper)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&step.upper)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Each upper entry with its type, mode, owner, link count and size (not times or inodes).
pub fn describe_upper(step: &Step) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    upper_entries(step)
        .into_iter()
        .map(|rel| {
            let m = std::fs::symlink_metadata(step.upper.join(&rel)).unwrap();
            let size = if m.is_dir() { 0 } else { m.size() };
            // Overlayfs links its whiteouts to one shared inode; the count means nothing.
            let nlink = if m.file_type().is_char_device() {
                1
            } else {
                m.nlink()
            };
            format!(
                "{rel} {:o} {}:{} n{} s{size} r{}",
                m.mode(),
                m.uid(),
                m.gid(),
                nlink,
                m.rdev()
            )
        })
        .collect()
}

pub mod tars;

/// Where debootstrap's output is cached between test runs.
pub const TESTDATA: &str = "/var/tmp/cairn-testdata";

/// A Debian minbase root file system as one uncompressed tar (made once by debootstrap,
/// from the mirror in the machine's apt sources, and cached; a lock serialises makers).
pub fn debian_minbase_tar() -> PathBuf {
    let tar = Path::new(TESTDATA).join("rootfs-minbase.tar");
    if tar.exists() {
        return tar;
    }
    std::fs::create_dir_all(TESTDATA).unwrap();
    let lock = std::fs::File::create(Path::new(TESTDATA).join("rootfs-minbase.lock")).unwrap();
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| {
            if !tar.exists() {
                make_minbase_tar(&tar);
            }
            drop(held)
        })
        .unwrap_or_else(|(_, e)| panic!("lock the test data: {e}"));
    tar
}

fn make_minbase_tar(tar: &Path) {
    let build = Path::new(TESTDATA).join("rootfs-minbase.dir");
    let _ = std::fs::remove_dir_all(&build);
    let mirror = apt_mirror();
    let st = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&build)
        .arg(&mirror)
        .status()
        .expect("debootstrap is installed by scripts/setup");
    assert!(st.success(), "debootstrap from {mirror} failed");
    let tmp = tar.with_extension("tar.tmp");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&build)
        .arg("-cf")
        .arg(&tmp)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::rename(&tmp, tar).unwrap();
}

/// The first Debian mirror of the machine's apt sources (deb822 or one-line format).
fn apt_mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    for text in texts {
        for line in text.lines().map(str::trim) {
            let url = line
                .strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or(""))
                .or_else(|| {
                    line.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
                });
            if let Some(url) = url {
                if url.trim_end_matches('/').ends_with("/debian") {
                    return url.to_string();
                }
            }
        }
    }
    panic!("no Debian mirror in the machine's apt sources")
}

/// Every entry of a tree with type, mode, owner, size, link target, rdev, mtime and
/// xattrs, for comparing two unpackings.
pub fn describe_tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let link = std::fs::read_link(e.path())
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let size = if m.is_dir() { 0 } else { m.size() };
        let mut xattrs: Vec<String> = xattr::list(e.path())
            .unwrap()
            .map(|n| {
                format!(
                    "{}={:?}",
                    n.to_string_lossy(),
                    xattr::get(e.path(), &n).unwrap()
                )
            })
            .collect();
        xattrs.sort();
        out.push(format!(
            "{rel} {:o} {}:{} s{size} n{} r{} t{} {link} {}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.rdev(),
            if m.file_type().is_symlink() || m.is_dir() {
                0
            } else {
                m.mtime()
            },
            xattrs.join(",")
        ));
    }
    out
}

/// The Debian minbase unpacked once per test process (as root by `unpack_tar`, rootless
/// as root of a user namespace, the way `ensure_unpacked` does it) into
/// `/var/tmp/cairn-debian-<uid>-<pid>` (not a tmpfs: overlayfs and xattrs need a real file
/// system). A static is never dropped, so each process first sweeps the directories of
/// its user's dead test processes.
pub fn debian_layer() -> PathBuf {
    static LAYER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYER
        .get_or_init(|| {
            let uid = nix::unistd::geteuid().as_raw();
            sweep_dead_layers(uid);
            let dir =
                Path::new("/var/tmp").join(format!("cairn-debian-{uid}-{}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            let mut file =
                std::io::BufReader::new(std::fs::File::open(debian_minbase_tar()).unwrap());
            if uid == 0 {
                cairn::rootfs::unpack_tar(file, &dir, &Privilege::Root, &mut |_| {}).unwrap();
            } else {
                cairn::rootfs::unpack_as_container_root(
                    &Privilege::detect(),
                    &mut file,
                    &dir,
                    &mut |_| {},
                )
                .unwrap();
            }
            dir
        })
        .clone()
}

fn sweep_dead_layers(uid: u32) {
    let prefix = format!("cairn-debian-{uid}-");
    for entry in std::fs::read_dir("/var/tmp").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            remove_tree(&entry.path());
        }
    }
}

/// Removes a tree a step or a rootless unpack made (which may hold subordinate ids).
pub fn remove_tree(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = cairn::userns::remove_as_root(&Privilege::detect(), path);
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        remove_tree(self.dir.path());
    }
}

impl Step {
    /// A step on the Debian minbase plus `more` lowers stacked on it.
    pub fn debian(more: &[PathBuf]) -> Step {
        let dir = tempfile::Builder::new()
            .prefix("cairn-sbx-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut lowers = vec![debian_layer()];
        lowers.extend_from_slice(more);
        let mut step = Step::new(lowers, dir);
        step.env = vec!["DEBIAN_FRONTEND=noninteractive".into()];
        step
    }
}

/// The environment variable that marks the inner, unprivileged run of a rootless test.
const INNER: &str = "CAIRN_TEST_ROOTLESS_INNER";

/// For a rootless test: as root, re-runs this test binary's test `name` as the
/// unprivileged `cairntest` user (made by scripts/setup with subordinate ids) and asserts
/// it passed, returning `false`; in that inner run, returns `true`.
pub fn rootless_inner(name: &str) -> bool {
    rootless_inner_as("cairntest", name)
}

/// [`rootless_inner`] as another unprivileged user (`cairnnoids` has no subordinate ids).
pub fn rootless_inner_as(user: &str, name: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        assert!(
            !nix::unistd::geteuid().is_root(),
            "the inner run must be unprivileged"
        );
        return true;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to become cairntest (run scripts/test)"
    );
    // The cached Debian root lives in a directory only root writes: it is made here, as
    // root, so an inner run never has to make it (nor races a root test making it).
    debian_minbase_tar();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .arg(format!("{INNER}=1"))
        .arg(format!(
            "{}={}",
            cairn::userns::EXE_ENV,
            env!("CARGO_BIN_EXE_cairn")
        ))
        .arg("TMPDIR=/tmp")
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .output()
        .expect("runuser exists");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- inner run as {user}:\n{text}");
    assert!(
        out.status.success(),
        "the rootless run as {user} failed (is it set up? scripts/setup)"
    );
    assert!(
        text.contains("1 passed"),
        "the inner run did not run the test"
    );
    false
}

/// CPU time in clock ticks from `/proc/<who>/stat` (`self` or `thread-self`): utime and
/// stime, plus cutime and cstime of reaped children for `self`. A measure of cost that a
/// busy machine does not inflate the way it inflates wall time.
pub fn cpu_ticks(who: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // stat(5) fields 14-17 are the 12th to 15th after the state (field 3).
    let n = if who == "self" { 15 } else { 13 };
    fields[11..n]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}
