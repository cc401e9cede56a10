//! The binary starts, lists its subcommands and documents its exit codes.

mod common;

#[test]
fn help_lists_subcommands_and_exit_codes() {
    let out = common::run_ok(std::process::Command::new(common::cairn_bin()).arg("--help"));
    for sub in ["build", "pull", "parse", "inspect", "cache", "key"] {
        assert!(out.contains(sub), "--help lacks {sub}: {out}");
    }
    assert!(out.contains("exit codes"), "{out}");
}

#[test]
fn unknown_flag_is_usage_error() {
    let out =
        common::run(std::process::Command::new(common::cairn_bin()).args(["build", "--bogus"]));
    assert_eq!(out.status.code(), Some(2));
}
