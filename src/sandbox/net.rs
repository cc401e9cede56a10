//! The default RUN network: the step's own network namespace, connected to the outside
//! through `slirp4netns` (Debian package of the same name, as rootless Podman and
//! BuildKit use it), a user-mode TCP/UDP stack that opens ordinary sockets on the host for
//! the step's connections. Nothing of the host's bridges, routes or firewall is touched, and
//! the code path is the same for root and rootless.
//!
//! It is started once the helper's user namespace has its id maps and before the step's
//! PID 1 is forked, configures the namespace's `eth0` (10.0.2.100, gateway 10.0.2.2),
//! and says so on its ready pipe; it runs until [`UserNet`] is dropped (killed by PID and
//! reaped), or cairn dies (its exit pipe closes). `--disable-host-loopback` keeps the
//! host's `127.0.0.1` services out of reach. `pasta` (passt) was measured first: about
//! 70 ms to start per step against about 3 ms for slirp4netns. A hand-written launcher:
//! slirp4netns is a program, not a library, and nothing on crates.io drives it.

use super::Error;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The program that connects a step's network namespace.
pub const SLIRP4NETNS: &str = "slirp4netns";

/// A running `slirp4netns` for one step; killed and reaped when dropped. It also exits by
/// itself when cairn dies (its exit pipe closes).
#[derive(Debug)]
pub struct UserNet {
    child: Child,
    _exit: OwnedFd,
}

/// A pipe whose ends are not closed on exec (slirp4netns inherits one end of each).
fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe().map_err(|e| Error::Message(format!("pipe for {SLIRP4NETNS}: {e}")))
}

fn close_on_exec(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

impl UserNet {
    /// Connects the network namespace of helper `pid` (whose user namespace owns it),
    /// logging into `dir`. Returns once the namespace is configured.
    pub fn start(pid: u32, dir: &Path) -> Result<UserNet, Error> {
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        close_on_exec(&ready_r);
        close_on_exec(&exit_w);
        let log_path = dir.join("slirp4netns.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(SLIRP4NETNS)
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg("--netns-type=path")
            .arg(format!("--userns-path=/proc/{pid}/ns/user"))
            .arg(format!("/proc/{pid}/ns/net"))
            .arg("eth0")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        drop(ready_w);
        drop(exit_r);
        let mut child = child.map_err(|e| {
            Error::Message(format!(
                "cannot start {SLIRP4NETNS} for the RUN network ({e}): install Debian's slirp4netns package, or build with --network=host"
            ))
        })?;
        let mut byte = [0u8; 1];
        let ready = std::fs::File::from(ready_r).read(&mut byte).unwrap_or(0) == 1;
        if ready {
            let _ = std::fs::remove_file(&log_path);
            return Ok(UserNet {
                child,
                _exit: exit_w,
            });
        }
        let _ = child.kill();
        let status = child.wait();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        let text = error_text(text.as_bytes());
        let hint = if text.contains("tun") {
            " (/dev/net/tun must be usable by this user: distributions make it mode 0666)"
        } else {
            ""
        };
        Err(Error::Message(format!(
            "{SLIRP4NETNS} could not connect the RUN network ({}): {text}{hint}; or build with --network=host",
            status.map(|s| s.to_string()).unwrap_or_default()
        )))
    }

    /// The stack's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The stack's own messages, one line.
fn error_text(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Drop for UserNet {
    /// Kills the stack; it is reaped in the background (its exit releases the step's
    /// network namespace and tap device, which takes the kernel tens of milliseconds).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        std::thread::spawn(move || nix::sys::wait::waitpid(pid, None));
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
