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

/// The cgroup tests look for leftovers of this process: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The step's cgroup directories under cairn's own cgroups, if any are left.
fn leftover_cgroups() -> Vec<String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut left = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        for c in list.split(',').filter(|c| ["memory", "pids"].contains(c)) {
            let dir = std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join(path.trim_start_matches('/'));
            // Step cgroups are named `cairn-<pid of the cairn process>-<n>`. Left over are
            // this binary's own and those of cairn processes that have ended (every one this
            // test started); a cairn process still running elsewhere on the machine is not
            // this test's business.
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Some(pid) = cairn::sandbox::step_cgroup_owner(&e.file_name().to_string_lossy())
                else {
                    continue;
                };
                let ended = !std::path::Path::new(&format!("/proc/{pid}")).exists();
                if ended || pid == std::process::id() {
                    left.push(e.path().display().to_string());
                }
            }
        }
    }
    left
}

#[test]
fn a_step_over_its_memory_limit_is_killed_and_named() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Step::busybox();
    t.limits.memory = Some(128 << 20);
    // dd reads 500 MB of zeros into one buffer, which it must touch.
    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=500M", "count=1"];
    let (code, out) = t.run_argv(&dd);
    assert_eq!(code, 137, "{out}");
    assert!(
        out.contains("killed by the memory limit (--memory 134217728 bytes)"),
        "{out}"
    );
    assert!(leftover_cgroups().is_empty(), "{:?}", leftover_cgroups());
    // A step cgroup of a cairn that was killed (no such pid) is swept by the next step.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let pids = own.lines().find_map(|l| l.split_once(":pids:")).unwrap().1;
    let dead = std::path::Path::new("/sys/fs/cgroup/pids")
        .join(pids.trim_start_matches('/'))
        .join("cairn-4194999-0");
    std::fs::create_dir(&dead).unwrap();
    // Under the limit the same step is fine.
    t.limits.memory = Some(1 << 30);
    let (code, out) = t.run_argv(&dd);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("memory limit"), "{out}");
    assert!(!dead.exists(), "the dead cairn's cgroup is swept");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Step::busybox();
    t.limits.pids = Some(64);
    // A bounded bomb: each shell starts two more until fork fails; the step reports it.
    let (code, out) = t.run(
        "bomb() { bomb & bomb & wait; }; (bomb) 2>/dev/null; \
         ok=0; for i in $(seq 1 100); do sleep 1000 & ok=$((ok+1)); done 2>/dev/null; echo started=$ok; exit 1",
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("the step hit the pids limit (64 processes)"),
        "{out}"
    );
    assert!(leftover_cgroups().is_empty(), "{:?}", leftover_cgroups());
    // The host still forks.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn dev_shm_and_dev_mqueue_are_as_docker_has_them() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Step::busybox();
    t.limits.shm_size = Some(16 << 20);
    t.limits.ulimits = vec![cairn::sandbox::Ulimit {
        name: "nofile".into(),
        soft: 512,
        hard: 1024,
    }];
    let (code, out) = t.run("grep -E ' /dev/(shm|mqueue) ' /proc/mounts; df -k /dev/shm | tail -1; ulimit -n; ulimit -Hn");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("/dev/shm tmpfs") && out.contains("size=16384k"),
        "{out}"
    );
    assert!(out.contains("/dev/mqueue mqueue"), "{out}");
    assert!(out.contains("\n512\n1024\n"), "{out}");
}

/// Through the CLI: `--memory` reaches the step, which fails with exit 3 and a message
/// naming the limit; a bad size is a usage error.
#[test]
fn cairn_build_memory_flag_fails_the_step_with_exit_3_naming_the_limit() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg = common::registry::Registry::start();
    common::images::push_busybox(&reg, "contain/busybox:1");
    let root = common::tempdir();
    let ctx = common::tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/contain/busybox:1\nRUN [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=500M\", \"count=1\"]\n",
            reg.addr
        ),
    )
    .unwrap();
    let build = |extra: &[&str]| {
        common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--progress=plain", "-o", "type=oci,dest=/dev/null/none"])
                .args(extra),
        )
    };
    let out = build(&["--memory", "128m"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("RUN exited with 137"), "{err}");
    assert!(
        err.contains("killed by the memory limit (--memory 134217728 bytes)"),
        "{err}"
    );
    let out = build(&["--memory", "lots"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--memory \"lots\""), "{err}");
    assert!(leftover_cgroups().is_empty());
}
