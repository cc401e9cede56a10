//! [`Netns`]: Linux network namespaces as separate "hosts" for tests — a registry on one,
//! builders on others — joined by veth pairs on a private test subnet that exists only
//! inside the namespaces. Nothing on the host changes: no bridge, route or firewall rule
//! of its own is touched, and every namespace (with its bridge and veth ends) is deleted on
//! drop.
//!
//! [`NetRegistry`] runs Debian's `docker-registry` inside a namespace, optionally with TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The private subnet the tests' namespaces use (never routed on the host).
pub const SUBNET: &str = "10.213.0";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) is needed for network-namespace tests");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with its loopback up. `tag` keeps names apart between tests.
    pub fn new(tag: &str) -> Netns {
        super::require_root();
        let name = format!("cairn-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Adds `addr/32` to the namespace's loopback (an address that is not 127/8, so cairn
    /// speaks HTTPS to it, reachable only from inside).
    pub fn add_local_addr(&self, addr: &str) {
        self.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }

    /// Waits until something accepts TCP connections on `host:port` inside the namespace.
    pub fn wait_tcp(&self, host: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .command("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {host}:{port} in {}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends inside it, and so their peers.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A LAN on a /24 of [`SUBNET`]: a bridge inside the hub namespace (which holds the hub's
/// address), and one veth pair per joined namespace, created inside the hub so nothing
/// ever appears on the host. Gone with the namespaces.
pub struct Lan<'a> {
    hub: &'a Netns,
}

impl<'a> Lan<'a> {
    /// The bridge `br0` in `hub`, with `hub_addr`.
    pub fn new(hub: &'a Netns, hub_addr: &str) -> Lan<'a> {
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["addr", "add", &format!("{hub_addr}/24"), "dev", "br0"]);
        hub.ip(&["link", "set", "br0", "up"]);
        Lan { hub }
    }

    /// Plugs `ns` into the LAN with address `addr`.
    pub fn join(&self, ns: &Netns, addr: &str) {
        let n = addr.rsplit('.').next().unwrap_or("0");
        let (hub_end, ns_end) = (format!("vh{n}"), format!("eth{n}"));
        self.hub.ip(&[
            "link", "add", &hub_end, "type", "veth", "peer", "name", &ns_end, "netns", &ns.name,
        ]);
        self.hub.ip(&["link", "set", &hub_end, "master", "br0"]);
        self.hub.ip(&["link", "set", &hub_end, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &ns_end]);
        ns.ip(&["link", "set", &ns_end, "up"]);
    }
}

/// A test CA and a server certificate for one IP address, made with openssl.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed for TLS tests");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir`, and (when `server_ip` is given) a server certificate it
/// signed for that address.
pub fn make_certs(dir: &Path, name: &str, server_ip: &str) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let subj = format!("/CN=cairn test CA {name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subj,
            "-keyout", "ca.key", "-out", "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={server_ip}"),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    Certs {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

/// `docker-registry serve` inside a namespace on `addr:port`; killed on drop.
pub struct NetRegistry {
    /// `ADDR:PORT`, as references name it.
    pub addr: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NetRegistry {
    pub fn start(ns: &Netns, addr: &str, port: u16, tls: Option<&Certs>) -> NetRegistry {
        let dir = tempfile::Builder::new()
            .prefix("cairn-netreg-")
            .tempdir()
            .unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(c) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.cert.display(),
                c.key.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = ns
            .command("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let r = NetRegistry {
            addr: format!("{addr}:{port}"),
            dir,
            child: Some(child),
        };
        ns.wait_tcp(addr, port);
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for NetRegistry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the registry, so this PID is the registry itself.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
