//! The default RUN network: the step's own network namespace, connected to the outside
//! through `slirp4netns` (Debian package of the same name, as rootless Podman and
//! BuildKit use it), a user-mode TCP/UDP stack that opens ordinary sockets on the host for
//! the step's connections. Nothing of the host's bridges, routes or firewall is touched, and
//! the code path is the same for root and rootless.
//!
//! It is started once the helper's user namespace has its id maps and before the step's
//! PID 1 is forked, configures the namespace's `eth0` (10.0.2.100, gateway 10.0.2.2),
//! and says so on its ready pipe; it runs until [`UserNet`] is dropped (killed by PID and
//! reaped in the background), or cairn dies (its exit pipe closes). It is not in the step's
//! cgroup: its exit removes the tap device, which takes the kernel tens of milliseconds of
//! RCU grace periods, and nothing of the step waits for that. `--disable-host-loopback` keeps the
//! host's `127.0.0.1` services out of reach. `pasta` (passt) was measured first: about
//! 70 ms to start per step against about 3 ms for slirp4netns. A hand-written launcher:
//! slirp4netns is a program, not a library, and nothing on crates.io drives it.

use super::Error;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The line the parent sends a default-network step's helper once the stack has
/// configured the namespace (anything else, or none, and the step fails before its exec).
pub const NET_READY: &str = "net";

/// The program that connects a step's network namespace.
pub const SLIRP4NETNS: &str = "slirp4netns";

/// The stack's DNS forwarder inside the namespace (network address + 3): it relays to the
/// host's own resolver, from the host's network, so it reaches one on loopback too.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// The step's `resolv.conf` under the default network, from the host's `host` text. A
/// nameserver on the host's loopback (`127.0.0.53` of systemd-resolved, a local dnsmasq)
/// is unreachable from the step's namespace, and so is an IPv6 one (the stack gives the
/// step IPv4 only): they are dropped, as Docker does; the first one dropped becomes
/// [`SLIRP_DNS`] in its place, and so does an empty list, which is what Podman gives its
/// slirp4netns containers. Search domains, options and comments are kept; a host whose
/// nameservers are all reachable keeps its file as it is.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::with_capacity(host.len() + 32);
    let (mut forwarder, mut servers) = (false, 0);
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let reachable = match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => {
                match addr.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(a)) => !a.is_loopback(),
                    // Also `fe80::1%eth0` and other forms `IpAddr` does not read.
                    _ => false,
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        if reachable {
            servers += 1;
            out.push_str(line);
            out.push('\n');
        } else if !forwarder {
            forwarder = true;
            servers += 1;
            out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
        }
    }
    if servers == 0 {
        out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
    }
    out
}

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
    /// Starts connecting the network namespace of helper `pid` (whose user namespace owns
    /// it), logging into `dir`; [`UserNet::ready`] says when the namespace is configured.
    /// The two are apart so that the step's root is built while the stack starts.
    pub fn spawn(pid: u32, dir: &Path) -> Result<Starting, Error> {
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        close_on_exec(&ready_r);
        close_on_exec(&exit_w);
        let log_path = dir.join("slirp4netns.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(SLIRP4NETNS);
        command.env_clear();
        // Found on cairn's PATH (without one in its environment, exec would search only
        // its default /bin:/usr/bin).
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let child = command
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg("--netns-type=path")
            .arg(format!("--userns-path=/proc/{pid}/ns/user"))
            .arg(format!("/proc/{pid}/ns/net"))
            .arg("eth0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        drop(ready_w);
        drop(exit_r);
        let child = child.map_err(|e| {
            Error::Message(format!(
                "cannot start {SLIRP4NETNS} for the RUN network ({e}): install Debian's slirp4netns package, or build with --network=host"
            ))
        })?;
        Ok(Starting {
            net: UserNet {
                child,
                _exit: exit_w,
            },
            ready: ready_r,
            log_path,
        })
    }
}

/// A stack that is starting: [`Starting::ready`] waits until it has configured the
/// namespace (or failed to).
#[derive(Debug)]
pub struct Starting {
    net: UserNet,
    ready: OwnedFd,
    log_path: std::path::PathBuf,
}

impl Starting {
    /// Waits for the stack's ready signal; the running stack, or why it failed.
    pub fn ready(self) -> Result<UserNet, Error> {
        let Starting {
            mut net,
            ready,
            log_path,
        } = self;
        let mut byte = [0u8; 1];
        let ready = std::fs::File::from(ready).read(&mut byte).unwrap_or(0) == 1;
        if ready {
            let _ = std::fs::remove_file(&log_path);
            return Ok(net);
        }
        let _ = net.child.kill();
        let status = net.child.wait();
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
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        std::thread::spawn(move || nix::sys::wait::waitpid(pid, None));
    }
}

#[cfg(test)]
mod tests {
    use super::resolv_conf;

    #[test]
    fn a_loopback_resolver_becomes_the_stacks_forwarder() {
        let systemd = "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        assert_eq!(
            resolv_conf(systemd),
            "# stub\nnameserver 10.0.2.3\noptions edns0 trust-ad\nsearch lan\n"
        );
        let mixed = "nameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::53\n";
        assert_eq!(
            resolv_conf(mixed),
            "nameserver 10.0.2.3\nnameserver 192.0.2.53\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 10.0.2.3\n");
        assert_eq!(
            resolv_conf("search example.org\n"),
            "search example.org\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn reachable_resolvers_are_kept_as_they_are() {
        let host = "nameserver 10.255.255.53\n  nameserver\t192.0.2.1 \n;comment\n";
        assert_eq!(resolv_conf(host), host);
    }

    #[test]
    fn syslog_noise_is_dropped() {
        let t = super::error_text(b"Failed to send 3 bytes to syslog\nNo such netns\n\n");
        assert_eq!(t, "No such netns");
    }
}
