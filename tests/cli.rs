//! Operator commands: `doctor`, completions and the man page.

mod common;

use std::process::Command;

/// `doctor` as an unprivileged user without subordinate ids or the docker group: it names
/// what is missing, says how to fix it, and exits non-zero.
#[test]
fn doctor_names_what_is_missing_for_an_unprivileged_user() {
    common::require_root();
    let store = common::tempdir();
    common::run_ok(Command::new("chown").arg("cairnnoids").arg(store.path()));
    let out = common::run(
        Command::new("runuser")
            .args(["-u", "cairnnoids", "--", "env", "HOME=/home/cairnnoids"])
            .arg(format!("CAIRN_ROOT={}", store.path().display()))
            .arg(common::cairn_bin())
            .arg("doctor"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subordinate ids"), "{text}");
    assert!(
        text.contains("usermod --add-subuids"),
        "no fix given: {text}"
    );
    assert!(text.contains("MISSING  docker"), "{text}");
    assert_eq!(out.status.code(), Some(2), "{text}");
}

/// As root on this machine (scripts/setup provides everything) doctor passes.
#[test]
fn doctor_passes_where_builds_work() {
    common::require_root();
    let store = common::tempdir();
    let out = common::run_ok(common::cairn(store.path()).arg("doctor"));
    assert!(out.contains("a build can work here"), "{out}");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = common::run_ok(Command::new(common::cairn_bin()).args(["completions", shell]));
        assert!(
            out.contains("build") && out.contains("build-arg"),
            "{shell}: {out}"
        );
    }
    let man = common::run_ok(Command::new(common::cairn_bin()).arg("man"));
    assert!(man.contains(".TH cairn"), "{man}");
}
