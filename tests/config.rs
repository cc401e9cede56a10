//! The config file's settings reach every command: `platform` (documented, parsed, and once
//! never read) and `pull`; and `cairn pull` defaults to the platform `cairn build` does, so
//! a pull followed by `--pull=never` build finds the manifest it stored.

mod common;

use common::images;
use common::registry::Registry;
use std::fs;
use std::path::Path;
use std::process::Command;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `cairn` with a private store and the config file `config` (TOML text).
fn cairn(dir: &Path, config: &str) -> Command {
    let file = dir.join("config.toml");
    fs::write(&file, config).unwrap();
    let mut c = common::cairn(&dir.join("store"));
    c.env("CAIRN_CONFIG", &file);
    c
}

#[test]
fn config_platform_chooses_the_manifest_for_pull_and_build() {
    let reg = Registry::start();
    let list = images::push_manifest_list(&reg, "multiarch:1");
    let reference = format!("{}/multiarch:1", reg.addr);
    let dir = common::tempdir();
    let arm = "platform = \"linux/arm64\"\n";

    // `cairn pull` without --platform takes the config file's.
    let out = common::run(cairn(dir.path(), arm).args(["pull", "-q", &reference]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        list.arm64,
        "pull ignored the config's platform"
    );

    // A build keyed offline afterwards looks for that same manifest, and keys as an
    // explicit --platform=linux/arm64 does.
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {reference}\nRUN true\n"),
    )
    .unwrap();
    let key = |config: &str, extra: &[&str]| {
        let out = common::run(
            cairn(dir.path(), config)
                .args(["key", "--pull=never", "--progress=plain"])
                .args(extra)
                .arg(&ctx),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let from_config = key(arm, &[]);
    assert_eq!(from_config, key("", &["--platform", "linux/arm64"]));
    // The flag overrides the file.
    let out = common::run(
        cairn(dir.path(), arm)
            .args(["key", "--pull=never", "--platform", "linux/amd64"])
            .arg(&ctx),
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "amd64 was never pulled: {}",
        stderr(&out)
    );
}

#[test]
fn pull_and_build_default_to_the_same_platform() {
    let reg = Registry::start();
    let list = images::push_manifest_list(&reg, "multiarch:2");
    let reference = format!("{}/multiarch:2", reg.addr);
    let dir = common::tempdir();
    let out = common::run(cairn(dir.path(), "").args(["pull", "-q", &reference]));
    assert!(out.status.success(), "{}", stderr(&out));
    let host = cairn::Platform::host();
    let want = match host.architecture.as_str() {
        "amd64" => &list.amd64,
        "arm64" => &list.arm64,
        other => panic!("no test image for {other}"),
    };
    assert_eq!(
        &stdout(&out),
        want,
        "pull did not default to the host platform"
    );
    // The build after it needs no network: the host's manifest is stored.
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM {reference}\n")).unwrap();
    let out = common::run(
        cairn(dir.path(), "")
            .args(["key", "--pull=never"])
            .arg(&ctx),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn config_pull_policy_applies_to_pull() {
    // `pull = "never"` in the file: `cairn pull` opens no connection (exit 4, nothing
    // stored), and `--pull=missing` on the command line overrides it.
    let reg = Registry::start();
    images::push_manifest_list(&reg, "multiarch:3");
    let reference = format!("{}/multiarch:3", reg.addr);
    let dir = common::tempdir();
    let never = "pull = \"never\"\n";
    let out = common::run(cairn(dir.path(), never).args(["pull", "-q", &reference]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pull=never"), "{}", stderr(&out));
    let out =
        common::run(cairn(dir.path(), never).args(["pull", "-q", "--pull=missing", &reference]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bad_config_platform_is_a_usage_error_naming_the_file() {
    let dir = common::tempdir();
    let out = common::run(cairn(dir.path(), "platform = \"linux\"\n").args(["cache", "du"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("invalid platform"),
        "{err}"
    );
}
