//! The re-executed helper: reads its [`Job`], unshares the namespaces, waits for the
//! parent to write the id maps, then forks the step's PID 1 and reports how it ended (or,
//! for the rootless layer jobs, unpacks or removes a tree as root of the namespace).
//!
//! It must stay single-threaded up to the fork (see the module docs of `sandbox`).

use super::protocol::{ChildSpec, Job, Report, GO};
use super::{init, sys, Network};
use crate::rootfs::{skipped_summary, unpack_tar_as, Privilege};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Runs the helper; its reports go to stderr, the parent's control channel.
pub fn main() -> ExitCode {
    let report = match helper() {
        Ok(r) => r,
        Err(e) => Report::Failed(e),
    };
    send(&report);
    match report {
        Report::Exit(_) => ExitCode::SUCCESS,
        _ => ExitCode::from(7),
    }
}

/// Writes one report line to the parent.
pub fn send(report: &Report) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", report.to_line());
    let _ = err.flush();
}

fn helper() -> Result<Report, String> {
    // Die with the parent: a killed cairn must not leave a step running.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set pdeathsig: {e}"))?;
    // The parent may have died before the line above took effect: then nothing would ever
    // send the signal, and we would have been re-parented to init.
    let parent = std::env::var(super::helper::PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok());
    if parent.is_some_and(|p: i32| nix::unistd::getppid().as_raw() != p) {
        return Err("cairn exited before the sandbox helper started".into());
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let job: Job = serde_json::from_str(&read_line(&mut input)?)
        .map_err(|e| format!("bad sandbox job: {e}"))?;
    let mut flags = CloneFlags::CLONE_NEWUSER;
    if let Job::Run(spec) = &job {
        flags |= CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        if spec.run.network == Network::None {
            flags |= CloneFlags::CLONE_NEWNET;
        }
    }
    unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    send(&Report::Userns);
    if read_line(&mut input)? != GO {
        return Err("the parent could not write the id maps".into());
    }
    become_root()?;
    match job {
        Job::Run(spec) => {
            // The forked PID 1 must not inherit a locked stdin.
            drop(input);
            run_step(&spec)
        }
        Job::Unpack { target } => {
            let skipped = unpack_tar_as(&mut input, &target, Privilege::UserNamespace)
                .map_err(|e| e.to_string())?;
            if let Some(first) = skipped.first() {
                send(&Report::Warning(skipped_summary(&target, &skipped, first)));
            }
            Ok(Report::Exit(0))
        }
        Job::Remove { path } => std::fs::remove_dir_all(&path)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("remove {}: {e}", path.display())),
        Job::CopyRoot {
            layers,
            dest,
            snapshot,
        } => super::copyroot::make(&layers, &dest, &snapshot)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("copy-based root: {e}")),
        Job::CopyChanges {
            snapshot,
            root,
            upper,
        } => super::copyroot::changes(&snapshot, &root, &upper)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("copy-based root: {e}")),
        Job::LayerTar { dir, mut opts } => {
            // Inside the namespace owners already read as the container's ids.
            opts.uid_maps = vec![crate::idmap::IdMap::IDENTITY];
            opts.gid_maps = vec![crate::idmap::IdMap::IDENTITY];
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::layer::write_tar(&dir, out, &opts)
                .map(|()| Report::Exit(0))
                .map_err(|e| format!("layer of {}: {e}", dir.display()))
        }
    }
}

fn run_step(spec: &ChildSpec) -> Result<Report, String> {
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => init::main(spec),
        ForkResult::Parent { child } => {
            send(&Report::Init(child.as_raw()));
            wait_for(child)
        }
    }
}

fn read_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("read from the parent: {e}"))?;
    Ok(line.trim_end().to_string())
}

/// Becomes root of the new user namespace, now that the maps exist.
fn become_root() -> Result<(), String> {
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid in the user namespace: {e}"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid in the user namespace: {e}"))
}

/// Waits for the step's PID 1; its end is the end of every process of the step. (A PID 1
/// that fails before its exec has reported why itself; the parent lets that win.)
fn wait_for(child: nix::unistd::Pid) -> Result<Report, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Report::Exit(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Report::Exit(128 + sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("wait for the step: {e}")),
        }
    }
}
