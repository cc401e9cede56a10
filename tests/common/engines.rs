//! The Docker engines the tests load into: the machine's own (Docker 20.10, classic image
//! store, `/var/run/docker.sock`) and Docker Engine 26 with the containerd image store,
//! which `scripts/engines` runs beside it (cached; started here when it is not running),
//! on a unix socket and on TCP+TLS at 127.0.0.1 with certificates it makes with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Now, in seconds since the epoch.
pub fn now() -> f64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64()
}

/// One engine, as `DOCKER_HOST` (and TLS settings) reach it.
#[derive(Debug, Clone)]
pub struct Engine {
    pub name: &'static str,
    /// `DOCKER_HOST`.
    pub host: String,
    /// `DOCKER_CERT_PATH` with `DOCKER_TLS_VERIFY=1`, for TCP+TLS.
    pub cert_path: Option<PathBuf>,
    /// Image IDs are manifest digests (else config digests).
    pub containerd_store: bool,
}

impl Engine {
    /// Sets the environment that points the docker CLI (and cairn) at this engine.
    pub fn env<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env("DOCKER_HOST", &self.host)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        if let Some(p) = &self.cert_path {
            c.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", p);
        }
        c
    }

    /// The docker CLI pointed at this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        self.env(&mut c);
        c
    }

    /// The ID of `reference` in this engine, or `None`.
    pub fn image_id(&self, reference: &str) -> Option<String> {
        let out = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// How many times the engine loaded image `id` between `since` and `until` (seconds
    /// since the epoch, fractions allowed: the engine runs on this machine's clock). Other
    /// tests may load other images into the same engine meanwhile.
    pub fn loads_between(&self, id: &str, since: f64, until: f64) -> usize {
        let out = super::run_ok(self.docker().args([
            "events",
            "--since",
            &format!("{since:.9}"),
            "--until",
            &format!("{until:.9}"),
            "--filter",
            "type=image",
            "--filter",
            "event=load",
            "--format",
            "{{.ID}}",
        ]));
        out.lines().filter(|l| l.trim() == id).count()
    }

    /// Removes images, ignoring those that are not there.
    pub fn rmi(&self, refs: &[String]) {
        for r in refs {
            let _ = self.docker().args(["rmi", "-f", r]).output();
        }
    }
}

/// The machine's own engine (classic image store).
pub fn system() -> Engine {
    super::require_docker();
    Engine {
        name: "system",
        host: "unix:///var/run/docker.sock".into(),
        cert_path: None,
        containerd_store: false,
    }
}

pub const ENGINE26_SOCKET: &str = "/run/cairn-engine26/docker.sock";
pub const ENGINE26_TLS: &str = "/run/cairn-engine26/tls";
pub const ENGINE26_TCP: &str = "127.0.0.1:23760";

static STARTED: Mutex<bool> = Mutex::new(false);

/// Starts Docker Engine 26 (containerd image store) through `scripts/engines` unless it
/// is running; fails loudly when it cannot.
fn ensure_engine26() {
    super::require_root();
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engines");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} could not start Docker Engine 26:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    *started = true;
}

/// Docker Engine 26 with the containerd image store, on its unix socket.
pub fn engine26() -> Engine {
    ensure_engine26();
    Engine {
        name: "engine26",
        host: format!("unix://{ENGINE26_SOCKET}"),
        cert_path: None,
        containerd_store: true,
    }
}

/// The same engine over TCP with TLS (client certificate, CA of its own).
pub fn engine26_tls() -> Engine {
    ensure_engine26();
    Engine {
        name: "engine26-tls",
        host: format!("tcp://{ENGINE26_TCP}"),
        cert_path: Some(PathBuf::from(ENGINE26_TLS)),
        containerd_store: true,
    }
}

/// An sshd of the test's own on 127.0.0.1, run in Engine 26's Debian root (where the
/// docker CLI is) with `DOCKER_HOST` set to that engine, so that `ssh://root@127.0.0.1:PORT`
/// reaches Engine 26 through `docker system dial-stdio` as the docker CLI does it. `path`
/// holds an `ssh` that uses the test's key and trusts the test's host key. Killed by PID
/// when dropped.
pub struct Sshd {
    child: std::process::Child,
    pub port: u16,
    /// A directory to put first on `PATH`.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start() -> Sshd {
        ensure_engine26();
        let root = Path::new("/var/cache/cairn-engines/trixie");
        let dir = tempfile::Builder::new()
            .prefix("cairn-sshd-")
            .tempdir_in(root.join("tmp"))
            .unwrap();
        let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
        for key in ["host_key", "client_key"] {
            super::run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(dir.path().join(key)),
            );
        }
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let port = super::registry::free_port();
        std::fs::write(
            dir.path().join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\n\
                 PermitRootLogin prohibit-password\nAuthorizedKeysFile {0}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPidFile none\n\
                 SetEnv DOCKER_HOST=unix://{ENGINE26_SOCKET}\n",
                inside.display()
            ),
        )
        .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F /dev/null -i {} -o StrictHostKeyChecking=no \
                 -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR \"$@\"\n",
                dir.path().join("client_key").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let r = root.display();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "set -e; mount -t proc proc {r}/proc; mount --rbind /dev {r}/dev; \
                 mount -t tmpfs tmpfs {r}/run; mkdir -p {r}/run/sshd {r}{run}; \
                 mount --bind {run} {r}{run}; \
                 exec chroot {r} /usr/sbin/sshd -D -e -f {cfg}",
                run = "/run/cairn-engine26",
                cfg = inside.join("sshd_config").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut sshd = Sshd {
            child,
            port,
            path: bin,
            _dir: dir,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sshd;
            }
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!(
                    "sshd exited {status}: {}",
                    std::fs::read_to_string(sshd._dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("sshd did not listen on 127.0.0.1:{port}");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
