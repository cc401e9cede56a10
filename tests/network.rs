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
