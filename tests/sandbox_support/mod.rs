//! Helpers for the sandbox and rootfs tests: layer directories made from busybox or a
//! cached Debian minbase, a step runner, and tar fixtures.
#![allow(dead_code)]

use cairn::sandbox::{run_with, Network, RootMode, RunSpec};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox root file system as one lower directory.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("busybox-layer");
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
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
    pub user: String,
    pub env: Vec<String>,
    pub mode: RootMode,
}

impl Step {
    pub fn new(lowers: Vec<PathBuf>, dir: tempfile::TempDir) -> Step {
        std::env::set_var(cairn::sandbox::EXE_ENV, env!("CARGO_BIN_EXE_cairn"));
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
            hostname: "cairn-test".into(),
            stdin: None,
        };
        let mut out = Vec::new();
        let code = run_with(&spec, self.mode, &mut |b| out.extend_from_slice(b))
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
