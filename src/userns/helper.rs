//! [`Helper`]: one re-executed helper process (this binary with [`HELPER_ARG`]), its pipes
//! and the parent's half of the id-map handshake; and [`child_main`], the helper's own
//! side: read the job, unshare, wait for the maps, become root of the namespace, and hand
//! the job to the dispatcher the caller passes (the one closed list of job kinds).
//!
//! The helper must stay single-threaded up to its `unshare(CLONE_NEWUSER)`, which fails
//! in a multi-threaded process: `main` hands the hidden argument to it before anything
//! else can start a thread.

use super::job::{Envelope, Job, Namespaces};
use super::protocol::{Report, GO};
use super::{write_maps, Error, Privilege};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use std::io::{BufRead, BufReader, StdinLock, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

/// The hidden first argument that makes `main` run the helper instead of the CLI.
pub const HELPER_ARG: &str = "__cairn-sandbox";

/// The environment variable naming the binary to re-execute (tests point it at cairn).
pub const EXE_ENV: &str = "CAIRN_SANDBOX_EXE";

/// Tells the helper which process started it, so it can tell whether that one is gone.
const PARENT_ENV: &str = "CAIRN_SANDBOX_PARENT";

/// A started helper that has been sent its job.
pub struct Helper {
    pub child: Child,
    pub stdin: ChildStdin,
    /// The control channel: one [`Report`] per line.
    pub stderr: BufReader<ChildStderr>,
    /// The job's output, when captured.
    pub stdout: Option<ChildStdout>,
}

impl Helper {
    /// Starts the helper with an empty environment, in its own process group (Ctrl-C
    /// reaches cairn, which decides), and sends it `job`.
    pub fn spawn<J: Job>(job: &J, capture_stdout: bool) -> Result<Helper, Error> {
        let envelope = Envelope {
            kind: J::KIND.to_string(),
            namespaces: job.namespaces(),
            job: serde_json::to_value(job)
                .map_err(|e| Error::Message(format!("encode the {} job: {e}", J::KIND)))?,
        };
        let line = serde_json::to_string(&envelope)
            .map_err(|e| Error::Message(format!("encode the {} job: {e}", J::KIND)))?;
        let exe = std::env::var_os(EXE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| "/proc/self/exe".into());
        let mut child = Command::new(&exe)
            .arg(HELPER_ARG)
            .env_clear()
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::Message(format!(
                    "cannot start the sandbox helper {}: {e}",
                    exe.display()
                ))
            })?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let stdout = child.stdout.take();
        if let Err(e) = writeln!(stdin, "{line}") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Message(format!(
                "cannot send the job to the sandbox helper: {e}"
            )));
        }
        Ok(Helper {
            child,
            stdin,
            stderr,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Writes the maps of helper `pid`'s new user namespace and lets it go on (or tells it
/// to give up when the maps cannot be written).
pub fn answer_userns(stdin: &mut ChildStdin, pid: u32, privilege: &Privilege) -> Result<(), Error> {
    let answer = write_maps(pid, privilege);
    let go = if answer.is_ok() { GO } else { "abort" };
    let _ = writeln!(stdin, "{go}");
    answer
}

/// Writes one report line to the parent.
pub fn send(report: &Report) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", report.to_line());
    let _ = err.flush();
}

/// The helper process: runs the job it is sent through `dispatch` (which knows every job
/// kind and calls [`perform`] with the right type) and reports how it ended on stderr.
pub fn child_main(
    dispatch: fn(&str, serde_json::Value, StdinLock<'static>) -> Result<Report, String>,
) -> ExitCode {
    let report = match helper(dispatch) {
        Ok(r) => r,
        Err(e) => Report::Failed(e),
    };
    send(&report);
    match report {
        Report::Exit(_) => ExitCode::SUCCESS,
        _ => ExitCode::from(7),
    }
}

/// Decodes a job of type `J` and runs it (for the dispatcher).
pub fn perform<J: Job>(
    job: serde_json::Value,
    input: StdinLock<'static>,
) -> Result<Report, String> {
    let job: J = serde_json::from_value(job).map_err(|e| format!("bad {} job: {e}", J::KIND))?;
    job.run(input)
}

fn helper(
    dispatch: fn(&str, serde_json::Value, StdinLock<'static>) -> Result<Report, String>,
) -> Result<Report, String> {
    // Die with the parent: a killed cairn must not leave a step running.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set pdeathsig: {e}"))?;
    // The parent may have died before the line above took effect: then nothing would ever
    // send the signal, and we would have been re-parented to init.
    let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    if parent.is_some_and(|p: i32| nix::unistd::getppid().as_raw() != p) {
        return Err("cairn exited before the sandbox helper started".into());
    }
    let mut input = std::io::stdin().lock();
    let envelope: Envelope = serde_json::from_str(&read_line(&mut input)?)
        .map_err(|e| format!("bad sandbox job: {e}"))?;
    unshare(clone_flags(envelope.namespaces)).map_err(|e| format!("unshare namespaces: {e}"))?;
    send(&Report::Userns);
    if read_line(&mut input)? != GO {
        return Err("the parent could not write the id maps".into());
    }
    become_root()?;
    dispatch(&envelope.kind, envelope.job, input)
}

fn clone_flags(ns: Namespaces) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER;
    for (wanted, flag) in [
        (ns.mount, CloneFlags::CLONE_NEWNS),
        (ns.pid, CloneFlags::CLONE_NEWPID),
        (ns.uts, CloneFlags::CLONE_NEWUTS),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.net, CloneFlags::CLONE_NEWNET),
    ] {
        if wanted {
            flags |= flag;
        }
    }
    flags
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
