//! [`RunJob`]: a step as a job of the privilege broker's helper. The helper has unshared
//! the namespaces and become root of the user namespace; this forks the step's PID 1
//! (which builds the root and execs the command, `init.rs`) and reports how it ended.
//!
//! The helper must stay single-threaded up to the fork (see the module docs of `sandbox`).

use super::mounts::RootSource;
use super::net::NET_READY;
use super::{init, sys, Network, RunSpec};
use crate::userns::{send, Job, Namespaces, Report};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, StdinLock};
use std::path::PathBuf;

/// Everything the helper needs to run a step, resolved by the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub run: RunSpec,
    /// The empty mount point that becomes the step's `/`.
    pub root: PathBuf,
    pub source: RootSource,
    /// Holds `resolv.conf`, `hosts` and `hostname` for the step.
    pub etc_files: PathBuf,
    /// The parent's staging directory, where relative overlay lowers are resolved.
    pub staging: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// HOME for a step whose environment has none: the user's home in the image.
    pub home: String,
}

/// Run one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunJob(pub Box<ChildSpec>);

impl Job for RunJob {
    const KIND: &'static str = "run";

    fn namespaces(&self) -> Namespaces {
        Namespaces {
            mount: true,
            pid: true,
            uts: true,
            ipc: true,
            net: self.0.run.network != Network::Host,
        }
    }

    fn run(self, input: StdinLock<'static>) -> Result<Report, String> {
        // The forked PID 1 must not inherit a locked stdin.
        drop(input);
        run_step(&self.0)
    }
}

fn run_step(spec: &ChildSpec) -> Result<Report, String> {
    // Under the default network the stack is still starting: PID 1 builds the root
    // meanwhile and waits on this pipe before it drops its privileges (`init.rs`).
    let net_ready = match spec.run.network {
        Network::Default => Some(
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("pipe for the network's readiness: {e}"))?,
        ),
        Network::Host | Network::None => None,
    };
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => init::main(spec, net_ready.map(|(r, _)| r)),
        ForkResult::Parent { child } => {
            send(&Report::Init(child.as_raw()));
            if let Some((_, ready_w)) = net_ready {
                // The parent's line once the stack has configured the namespace; anything
                // else closes the pipe unwritten, and PID 1 fails before its exec.
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
                if line.trim_end() == NET_READY {
                    let _ = nix::unistd::write(&ready_w, b"1");
                }
            }
            wait_for(child)
        }
    }
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
