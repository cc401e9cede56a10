//! Docker's default seccomp profile, as every `RUN` step gets it unless it runs with
//! `--security=insecure`: the system calls Docker's profile refuses to a container holding
//! Docker's default capabilities fail with `EPERM` (`clone3` with `ENOSYS`, so that C
//! libraries fall back to `clone`, which the filter can inspect).
//!
//! Docker writes its profile as an allow list with `EPERM` for the rest, plus rules that
//! open calls to containers with extra capabilities. A step never has those capabilities
//! (`caps.rs`), so the profile comes down to the deny list below: every call Docker's
//! profile leaves out or reserves for a capability outside Docker's default set, `clone`
//! with namespace flags, `personality` with other than the allowed personas, and
//! `socket(AF_VSOCK)`. A deny list rather than the allow list: it does not break steps on
//! kernels with system calls newer than the list, which is also why Docker's own list
//! grows with every release. The filter is built with `seccompiler` (the rust-vmm crate
//! Firecracker uses) and installed after `no_new_privs`, right before the exec.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls refused outright (present on every architecture the crate builds for).
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("mbind", libc::SYS_mbind),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("move_pages", libc::SYS_move_pages),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("vhangup", libc::SYS_vhangup),
];

/// Refused calls that exist on x86-64 only.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[(&str, libc::c_long)] = &[
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("sysfs", libc::SYS_sysfs),
    ("_sysctl", libc::SYS__sysctl),
    ("uselib", libc::SYS_uselib),
    ("ustat", libc::SYS_ustat),
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[(&str, libc::c_long)] = &[];

/// The namespace flags of `clone` (Docker's mask `0x7E020000`): `CLONE_NEWNS`,
/// `CLONE_NEWCGROUP`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
/// `CLONE_NEWNET`.
const CLONE_NS_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The personas Docker's profile lets `personality` set (`PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32|UNAME26`, and the query `0xffffffff`).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`: Docker's profile refuses sockets of this family.
const AF_VSOCK: u64 = 40;

/// The names of the calls refused outright.
#[cfg(test)]
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED.iter().chain(DENIED_ARCH).map(|(n, _)| *n)
}

/// The two programs to install, in order: the `EPERM` rules and `clone3` → `ENOSYS`.
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .map_err(|e| format!("seccomp: {e}"))
    };
    let rule =
        |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(|e| format!("seccomp: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED.iter().chain(DENIED_ARCH) {
        rules.insert(*nr, vec![]);
    }
    // clone(flags, …) on the architectures whose first argument is the flags.
    let mut clone = Vec::new();
    for flag in CLONE_NS_FLAGS {
        clone.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone);
    let personality = PERSONAS
        .iter()
        .map(|&p| cond(0, SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, vec![rule(personality)?]);
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, AF_VSOCK)?])?],
    );
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    [eperm, clone3]
        .into_iter()
        .map(|f| f.try_into().map_err(|e| format!("seccomp: {e:?}")))
        .collect()
}

/// The sync calls a step's [`install_no_sync`] filter answers with success at once.
const SYNC_CALLS: &[libc::c_long] = &[
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sync_file_range,
];

/// The filter that turns a step's sync calls into no-ops that succeed (`SECCOMP_RET_ERRNO`
/// with errno 0 returns 0 without running the call), as `systemd-nspawn --suppress-sync`
/// does. Durability inside a step buys nothing: its upper directory is read back into a
/// layer that the store writes with its own fsync, and a step cut short by a crash is run
/// again. dpkg, for one, syncs every file it unpacks; those syncs are most of the time an
/// `apt-get install` spends on a virtual disk. Cache mounts lose the same durability, as
/// they hold nothing a build cannot make again.
pub fn no_sync_program() -> Result<BpfProgram, String> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let rules = SYNC_CALLS.iter().map(|&nr| (nr, vec![])).collect();
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(0), arch)
        .map_err(|e| format!("seccomp: {e}"))?
        .try_into()
        .map_err(|e| format!("seccomp: {e:?}"))
}

/// Installs [`no_sync_program`] on the calling thread (needs `no_new_privs`).
pub fn install_no_sync() -> Result<(), String> {
    seccompiler::apply_filter(&no_sync_program()?).map_err(|e| format!("install seccomp: {e}"))
}

/// Installs the profile on the calling thread (needs `no_new_privs`); it is inherited by
/// the exec and every process the step starts.
pub fn install() -> Result<(), String> {
    for program in programs()? {
        seccompiler::apply_filter(&program).map_err(|e| format!("install seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_programs_build_and_name_dockers_key_calls() {
        let p = super::programs().unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].len() > 60, "{}", p[0].len());
        let names: Vec<_> = super::denied_names().collect();
        for n in [
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "unshare",
            "setns",
            "mount",
        ] {
            assert!(names.contains(&n), "{n}");
        }
    }
}
