//! Containment of a RUN step against real namespaces: Docker's default seccomp profile
//! (`keyctl`, `unshare -U` and friends fail with EPERM while useradd and apt-get work; off
//! with `--security=insecure`). As root and as the unprivileged `cairntest` user.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use cairn::sandbox::Security;
use support::*;

/// `keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)` and `unshare -U` from perl
/// and util-linux of Debian minbase, then useradd and apt-get.
const PROBE: &str = r#"perl -e '$r = syscall(250, 0, -3, 0); print "keyctl=$r ", ($r < 0 ? $! : "ok"), "\n"'
perl -e '$r = syscall(321, 0, 0, 0); print "bpf=$r $!\n"'
unshare -U true 2>&1 && echo unshare=ok
useradd -m probe && id -un probe
apt-get update -q >/dev/null && echo apt=ok
"#;

fn seccomp_blocks_dockers_calls_with_eperm() {
    let mut t = Step::debian(&[]);
    let (code, out) = t.run(PROBE);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("keyctl=-1 Operation not permitted"), "{out}");
    assert!(out.contains("bpf=-1 Operation not permitted"), "{out}");
    assert!(
        out.contains("Operation not permitted") && !out.contains("unshare=ok"),
        "{out}"
    );
    assert!(out.contains("\nprobe\n") && out.contains("apt=ok"), "{out}");

    // Without the profile the same keyctl call reaches the kernel.
    t = Step::debian(&[]);
    t.security = Security::Insecure;
    let (_, out) = t.run(PROBE);
    assert!(!out.contains("keyctl=-1 Operation not permitted"), "{out}");
}

#[test]
fn seccomp_blocks_dockers_calls_with_eperm_as_root() {
    common::require_root();
    seccomp_blocks_dockers_calls_with_eperm();
}

#[test]
fn containment_checks_rootless() {
    if rootless_inner("containment_checks_rootless") {
        seccomp_blocks_dockers_calls_with_eperm();
    }
}
