//! The default RUN network against real namespaces: each step has its own network
//! namespace connected through `slirp4netns`, so the host's 127.0.0.1 services and interfaces are
//! out of reach while DNS and `apt-get update` against Debian's mirror work; `none` is
//! empty and `host` is the host's. As root and as the unprivileged `cairntest` user.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use cairn::sandbox::Network;
use support::*;

/// A listener on the host's loopback, accepting in the background.
fn host_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

fn host_loopback_and_interfaces_are_out_of_reach() {
    let port = host_listener();
    let probe = format!(
        "if nc -w 3 127.0.0.1 {port} </dev/null; then echo CONNECTED; else echo REFUSED; fi; \
         if nc -w 3 10.0.2.2 {port} </dev/null; then echo GATEWAY-CONNECTED; fi; \
         cat /proc/net/dev; ip -4 route"
    );
    let mut t = Step::busybox();
    t.network = Network::Host;
    let (code, host) = t.run(&probe);
    assert_eq!(code, 0, "{host}");
    assert!(
        host.contains("CONNECTED"),
        "the probe must reach the listener from the host's network: {host}"
    );
    t.network = Network::Default;
    let (code, out) = t.run(&probe);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    assert!(
        !out.contains("GATEWAY-CONNECTED"),
        "the stack's gateway must not lead to the host's loopback: {out}"
    );
    assert!(!out.contains("docker0"), "host interfaces visible: {out}");
    assert!(out.contains("lo:"), "{out}");
    assert!(
        out.contains("default via"),
        "the step has a route out: {out}"
    );
    t.network = Network::None;
    let (code, out) = t.run(&probe);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("REFUSED") && !out.contains("default via"),
        "{out}"
    );
}

fn apt_get_update_works_through_the_user_mode_stack() {
    let mut t = Step::debian(&[]);
    t.network = Network::Default;
    let (code, out) = t.run("apt-get update -q && getent hosts $(sed -n 's#^deb [a-z]*://\\([^/]*\\)/.*#\\1#p' /etc/apt/sources.list | head -1)");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Reading package lists"), "{out}");
}

#[test]
fn host_loopback_and_interfaces_are_out_of_reach_as_root() {
    common::require_root();
    host_loopback_and_interfaces_are_out_of_reach();
}

#[test]
fn apt_get_update_works_through_the_user_mode_stack_as_root() {
    common::require_root();
    apt_get_update_works_through_the_user_mode_stack();
}

#[test]
fn network_checks_rootless() {
    if rootless_inner("network_checks_rootless") {
        host_loopback_and_interfaces_are_out_of_reach();
        apt_get_update_works_through_the_user_mode_stack();
    }
}

/// A build context holding busybox and a Dockerfile that installs its applets and then
/// runs `steps` (each a line after the `RUN` keyword).
fn busybox_context(dir: &std::path::Path, steps: &[&str]) {
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("busybox-static");
    let mut dockerfile = String::from(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    );
    for s in steps {
        dockerfile.push_str(&format!("RUN {s}\n"));
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// `cairn build` of `ctx` run inside the test namespace `ns`, with `/etc/resolv.conf`
/// replaced by `resolv` when given (in the private mount namespace `ip netns exec` makes,
/// so the host's file is untouched).
fn build_in(
    ns: &common::netns::Netns,
    store: &std::path::Path,
    ctx: &std::path::Path,
    resolv: Option<&std::path::Path>,
) -> std::process::Command {
    let mount = resolv
        .map(|r| format!("mount --bind '{}' /etc/resolv.conf && ", r.display()))
        .unwrap_or_default();
    let mut c = ns.command("sh");
    c.arg("-c")
        .arg(format!("{mount}exec \"$0\" \"$@\""))
        .arg(common::cairn_bin())
        .args(["build", "--progress=plain", "--allow", "network.host", "-o"])
        .arg(format!("type=oci,dest={}", store.join("out").display()))
        .arg(ctx)
        .env("CAIRN_ROOT", store);
    c
}

/// A DNS server on `127.0.0.1:53` inside `ns` that answers A queries for `name` with
/// `addr` (and every other query with no records), serving until the process ends.
fn dns_responder(ns: &common::netns::Netns, name: &'static str, addr: [u8; 4]) {
    let path = format!("/var/run/netns/{}", ns.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The network namespace is per thread: only this one moves.
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if let Some(answer) = dns_answer(&buf[..n], name, addr) {
                let _ = sock.send_to(&answer, peer);
            }
        }
    });
    rx.recv().expect("the DNS responder listens");
}

/// The answer to one DNS query (RFC 1035 wire format): `addr` for an A query on `name`.
fn dns_answer(query: &[u8], name: &str, addr: [u8; 4]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let hit = qtype == 1 && labels.join(".") == name;
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, hit as u8, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if hit {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&addr);
    }
    Some(out)
}

/// With a host resolver on loopback (as systemd-resolved's 127.0.0.53), a default-network
/// step's resolv.conf names the stack's forwarder instead, which reaches that resolver;
/// `none` and `host` steps keep the host's file as it is.
#[test]
fn a_loopback_resolver_is_reached_through_the_stacks_forwarder() {
    common::require_root();
    let ns = common::netns::Netns::new("dns");
    dns_responder(&ns, "probe.cairn.test", [192, 0, 2, 77]);
    let dir = common::tempdir();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search cairn.test\nnameserver 127.0.0.1\n").unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let show = "tr '\\n' ' ' </etc/resolv.conf";
    busybox_context(
        &ctx,
        &[
            &format!("echo \"DEFAULT[$({show})]\""),
            &format!("--network=none echo \"NONE[$({show})]\""),
            &format!("--network=host echo \"HOST[$({show})]\""),
            "nslookup probe.cairn.test",
        ],
    );
    let store = dir.path().join("store");
    let out = common::run(&mut build_in(&ns, &store, &ctx, Some(&resolv)));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("DEFAULT[search cairn.test nameserver 10.0.2.3 ]"),
        "{text}"
    );
    assert!(
        text.contains("NONE[search cairn.test nameserver 127.0.0.1 ]"),
        "{text}"
    );
    assert!(
        text.contains("HOST[search cairn.test nameserver 127.0.0.1 ]"),
        "{text}"
    );
    assert!(text.contains("192.0.2.77"), "{text}");
}

/// The device and inode of a network namespace file (`/proc/PID/ns/net`, a bind mount).
fn ns_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Processes (live or zombie) in any of the network namespaces `ids`.
fn processes_in(ids: &[(u64, u64)]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if ns_id(&format!("/proc/{pid}/ns/net")).is_some_and(|id| ids.contains(&id)) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// Waits (up to a minute: the kernel finishes killing processes in its own time) until no
/// process is left in the namespaces `ids`; fails with the ones left.
fn assert_nothing_left_in(ids: &[(u64, u64)], what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = processes_in(ids);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: processes left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The network stacks and namespaces of a build go with it, whether it ends or is killed
/// (SIGKILL while a step runs). cairn runs in a test namespace of its own, so every
/// process it leaves in the host's network (a stack) or in a step's is found there.
#[test]
fn no_stack_or_namespace_outlives_a_build_even_a_killed_one() {
    common::require_root();
    for kill in [false, true] {
        let ns = common::netns::Netns::new(if kill { "killed" } else { "ended" });
        let outer = ns_id(&format!("/var/run/netns/{}", ns.name)).unwrap();
        let dir = common::tempdir();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let last = if kill { "sleep 1000" } else { "true" };
        busybox_context(
            &ctx,
            &[
                "true",
                &format!("echo \"STEP-NS[$(stat -L -c '%d %i' /proc/self/ns/net)]\"; {last}"),
            ],
        );
        let store = dir.path().join("store");
        let mut child = build_in(&ns, &store, &ctx, None)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut step = None;
        let mut log = String::new();
        for line in std::io::BufRead::lines(stderr) {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            let id = line
                .split_once("STEP-NS[")
                .and_then(|(_, r)| r.split_once(']'))
                .and_then(|(id, _)| id.split_once(' '))
                .and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)));
            if id.is_some() {
                step = id;
                if kill {
                    child.kill().unwrap();
                    break;
                }
            }
        }
        let status = child.wait().unwrap();
        let step = step.unwrap_or_else(|| panic!("the step did not print its namespace: {log}"));
        assert_ne!(
            step, outer,
            "the step must have a network of its own: {log}"
        );
        if !kill {
            assert!(status.success(), "{log}");
        }
        let what = if kill {
            "after SIGKILL"
        } else {
            "after the build"
        };
        assert_nothing_left_in(&[outer, step], what);
    }
}

/// A stack that cannot connect the namespace (here a stand-in `slirp4netns` that fails
/// after it started, while the step's root is being built) fails the step with the
/// stack's own message, and the step's command never runs.
#[test]
fn a_stack_that_fails_fails_the_step_with_its_message() {
    common::require_root();
    let dir = common::tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("slirp4netns");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'stand-in stack: no tap device' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    busybox_context(&ctx, &["echo RAN-$((40+2))"]);
    let store = dir.path().join("store");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = common::run(
        common::cairn(&store)
            .env("PATH", path)
            .args(["build", "--progress=plain", "-o"])
            .arg(format!(
                "type=oci,dest={}",
                dir.path().join("out").display()
            ))
            .arg(&ctx),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("slirp4netns could not connect the RUN network")
            && text.contains("stand-in stack: no tap device"),
        "{text}"
    );
    assert!(!text.contains("RAN-42"), "{text}");
}
