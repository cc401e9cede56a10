//! Shared helpers for the integration tests: a temporary directory, the cairn binary, and
//! (in submodules) the real registry and base images the harness provides.
//!
//! Tests that need root, the registry or Docker fail loudly when one is missing; they never
//! skip themselves. `scripts/test` provides them all.
#![allow(dead_code)]

pub mod engines;
pub mod images;
pub mod netns;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cairn binary cargo built for these tests.
pub fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// A `cairn` command with a private store under `root`.
pub fn cairn(root: &Path) -> Command {
    let mut c = Command::new(cairn_bin());
    c.env("CAIRN_ROOT", root).env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Runs a command and returns its output, printing both streams on failure to help debugging.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        eprintln!(
            "command {cmd:?} exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "command failed: {cmd:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails loudly unless running as root (these tests need namespaces and mounts).
pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test needs root (run it through scripts/test, which provides everything)"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fails loudly unless the Docker Engine answers.
pub fn require_docker() {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs a running Docker Engine (scripts/setup starts one)"
    );
}

/// The full path of program `name` on `PATH`; fails loudly when it is not there.
pub fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("this test needs {name} on PATH (scripts/setup installs it)"))
}

/// A fresh temporary directory removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cairn-test-")
        .tempdir()
        .unwrap()
}
