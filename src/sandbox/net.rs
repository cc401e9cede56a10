//! The default RUN network: the step's own network namespace, connected to the outside
//! through `pasta` (Debian package `passt`), a user-mode TCP/UDP stack that opens ordinary
//! sockets on the host for the step's connections. Nothing of the host's bridges, routes
//! or firewall is touched, and the code path is the same for root and rootless.
//!
//! `pasta` is started once the helper's user namespace has its id maps and before the
//! step's PID 1 is forked, configures the namespace's interface, address, routes and
//! loopback, then runs in the background until [`UserNet`] is dropped (killed by PID).
//! It is started without port forwarding in either direction and without mapping the
//! gateway address to the host, so the host's `127.0.0.1` services stay out of reach.
//! A hand-written launcher: pasta is a program, not a library, and nothing on crates.io
//! drives it.

use super::Error;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};

/// The program that connects a step's network namespace.
pub const PASTA: &str = "pasta";

/// A running `pasta` for one step; killed when dropped.
#[derive(Debug)]
pub struct UserNet {
    pid: i32,
}

impl UserNet {
    /// pasta's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Connects the network namespace of helper `pid` (whose user namespace owns it),
    /// writing pasta's pid file into `dir`. Returns once the namespace is configured.
    pub fn start(pid: u32, dir: &Path) -> Result<UserNet, Error> {
        let pid_file = dir.join("pasta.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = Command::new(PASTA);
        if nix::unistd::geteuid().is_root() {
            // pasta drops to "nobody" by default, which may not enter the user namespace.
            cmd.args(["--runas", "0:0"]);
        }
        cmd.args(["--config-net", "--quiet", "--no-map-gw"])
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .arg("--pid")
            .arg(&pid_file)
            .arg("--netns")
            .arg(format!("/proc/{pid}/ns/net"))
            .arg("--userns")
            .arg(format!("/proc/{pid}/ns/user"))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| {
            Error::Message(format!(
                "cannot start {PASTA} for the RUN network ({e}): install Debian's passt package, or build with --network=host"
            ))
        })?;
        let daemon = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&pid_file);
        match daemon {
            Some(pid) if out.status.success() && pid > 0 => Ok(UserNet { pid }),
            _ => {
                if let Some(pid) = daemon.filter(|&p| p > 0) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let text = error_text(&out.stderr);
                let hint = if text.contains("tun") {
                    " (/dev/net/tun must be usable by this user: distributions make it mode 0666)"
                } else {
                    ""
                };
                Err(Error::Message(format!(
                    "{PASTA} could not connect the RUN network ({}): {text}{hint}; or build with --network=host",
                    out.status
                )))
            }
        }
    }
}

/// pasta's own messages, without the noise it prints when there is no syslog.
fn error_text(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Drop for UserNet {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn syslog_noise_is_dropped() {
        let t = super::error_text(b"Failed to send 3 bytes to syslog\nNo such netns\n\n");
        assert_eq!(t, "No such netns");
    }
}
