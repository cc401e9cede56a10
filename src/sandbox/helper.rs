//! [`Helper`]: one re-executed sandbox helper process (this binary with [`CHILD_ARG`]),
//! its pipes, and the parent's half of the id-map handshake.

use super::idmaps::{id_maps, write_maps};
use super::protocol::{Job, GO};
use super::{Error, CHILD_ARG, EXE_ENV};
use std::io::{BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

/// Tells the helper which process started it, so it can tell whether that one is gone.
pub(crate) const PARENT_ENV: &str = "CAIRN_SANDBOX_PARENT";

/// A started helper that has been sent its job.
pub struct Helper {
    pub child: Child,
    pub stdin: ChildStdin,
    /// The control channel: one report per line.
    pub stderr: BufReader<ChildStderr>,
    /// The step's output, when captured.
    pub stdout: Option<ChildStdout>,
}

impl Helper {
    /// Starts the helper with an empty environment, in its own process group (Ctrl-C
    /// reaches cairn, which decides), and sends it `job`.
    pub fn spawn(job: &Job, capture_stdout: bool) -> Result<Helper, Error> {
        let exe = std::env::var_os(EXE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| "/proc/self/exe".into());
        let mut child = Command::new(&exe)
            .arg(CHILD_ARG)
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
        let line = serde_json::to_string(job)
            .map_err(|e| Error::Message(format!("encode the sandbox job: {e}")))?;
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
pub fn answer_userns(stdin: &mut ChildStdin, pid: u32) -> Result<(), Error> {
    let answer = id_maps().and_then(|(u, g)| write_maps(pid, &u, &g));
    let go = if answer.is_ok() { GO } else { "abort" };
    let _ = writeln!(stdin, "{go}");
    answer
}
