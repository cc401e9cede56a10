//! The RUN sandbox against real namespaces: a busybox root for the fast checks, a Debian
//! minbase root (made by debootstrap, cached under /var/tmp/cairn-testdata) for apt,
//! useradd and setcap, as root and as the unprivileged `cairntest` user.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use cairn::sandbox::{Network, RootMode};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use support::*;

#[test]
fn echo_runs_and_reports_exit_codes() {
    common::require_root();
    let t = Step::busybox();
    let (code, out) = t.run("echo hello; echo oops >&2; exit 3");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("hello\n") && out.contains("oops\n"), "{out}");
    let (code, out) = t.run_argv(&["/no/such/binary"]);
    assert_eq!(code, 127, "{out}");
    let (code, _) = t.run("sh -c 'kill -9 $$'; exit $?");
    assert_eq!(code, 128 + 9);
}

#[test]
fn a_step_that_changes_nothing_leaves_an_empty_upper() {
    common::require_root();
    let t = Step::busybox();
    let (code, out) = t.run("cat /etc/resolv.conf /etc/hosts /etc/hostname >/dev/null && ls /proc/self /dev/pts /sys >/dev/null");
    assert_eq!(code, 0, "{out}");
    assert_eq!(upper_entries(&t), Vec::<String>::new());
}

#[test]
fn changes_land_in_the_upper_in_overlay_form() {
    common::require_root();
    let t = Step::busybox();
    let (code, out) = t.run(
        "rm /etc/group && mkdir -p /data/sub && echo x > /data/sub/f && ln /data/sub/f /data/hard \
         && ln -s sub/f /data/soft && rm -rf /root && mkdir /root && echo y > /root/new",
    );
    assert_eq!(code, 0, "{out}");
    let wh = std::fs::symlink_metadata(t.upper.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "rm gives a whiteout"
    );
    assert!(
        cairn::rootfs::overlay::is_opaque(&t.upper.join("root")),
        "rm -rf && mkdir gives an opaque dir"
    );
    let a = std::fs::metadata(t.upper.join("data/sub/f")).unwrap();
    let b = std::fs::metadata(t.upper.join("data/hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hardlink survives");
    assert_eq!(
        std::fs::read_link(t.upper.join("data/soft"))
            .unwrap()
            .to_str(),
        Some("sub/f")
    );
}

#[test]
fn resolv_conf_hosts_and_hostname_never_reach_the_upper() {
    common::require_root();
    let t = Step::busybox();
    let (code, out) = t.run("echo nameserver 9.9.9.9 >> /etc/resolv.conf && echo 1.2.3.4 x >> /etc/hosts && hostname; cat /etc/hostname");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "cairn-test\ncairn-test\n");
    assert_eq!(upper_entries(&t), Vec::<String>::new());
}

#[test]
fn the_host_is_out_of_reach() {
    common::require_root();
    let t = Step::busybox();
    let marker = t.dir.path().join("host-marker");
    std::fs::write(&marker, "secret").unwrap();
    std::env::set_var("CAIRN_HOST_SECRET", "leak");
    let script = format!(
        "test ! -e {m}; a=$?; (echo owned > {m}) 2>/dev/null; ls /proc | grep -c '^[0-9]'; env; exit $a",
        m = marker.display()
    );
    let (code, out) = t.run(&script);
    assert_eq!(code, 0, "host file visible: {out}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "secret");
    assert!(!out.contains("CAIRN_HOST_SECRET"), "host env leaked: {out}");
    assert!(out.contains("PATH=/usr/local/sbin"), "default PATH: {out}");
    let first = out.lines().next().unwrap_or_default().trim().to_string();
    let procs: usize = first.parse().unwrap_or_else(|_| panic!("{out}"));
    assert!(procs <= 4, "host processes visible: {out}");
}

#[test]
fn background_processes_do_not_survive_the_step() {
    common::require_root();
    let t = Step::busybox();
    let (code, out) = t.run(
        "sleep 1000 & sleep 1000 </dev/null >/dev/null 2>&1 & setsid sleep 1000 & echo started",
    );
    assert_eq!(code, 0, "{out}");
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 1000"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "stray: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn user_and_network_none() {
    common::require_root();
    let mut t = Step::busybox();
    t.user = "bob".into();
    t.network = Network::None;
    let (code, out) = t.run("id; ip -o link 2>/dev/null || cat /proc/net/dev; grep -E 'CapEff|NoNewPrivs' /proc/self/status");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("uid=1000(bob) gid=1000(bob) groups=50(staff),1000(bob)"),
        "{out}"
    );
    assert!(out.contains("lo") && !out.contains("eth0"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000000") && out.contains("NoNewPrivs:\t1"),
        "{out}"
    );
    t.user = String::new();
    let (_, out) = t.run("grep -E 'CapEff|CapBnd' /proc/self/status; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok");
    assert!(
        out.contains("CapEff:\t00000000a80425fb"),
        "docker's default set: {out}"
    );
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("ping-ok"), "loopback is up: {out}");
}

#[test]
fn the_copy_based_root_gives_the_same_upper() {
    common::require_root();
    let script =
        "rm /etc/group && mkdir -p /data/sub && echo x > /data/sub/f && ln /data/sub/f /data/hard \
                  && ln -s sub/f /data/soft && rm -rf /root && mkdir /root && echo y > /root/new \
                  && chmod 700 /tmp && echo z > /etc/resolv.conf";
    let uppers: Vec<Vec<String>> = [RootMode::Auto, RootMode::Copy]
        .into_iter()
        .map(|mode| {
            let mut t = Step::busybox();
            t.mode = mode;
            let (code, out) = t.run(script);
            assert_eq!(code, 0, "{mode:?}: {out}");
            assert!(
                cairn::rootfs::overlay::is_opaque(&t.upper.join("root")),
                "{mode:?}"
            );
            describe_upper(&t)
        })
        .collect();
    assert_eq!(uppers[0], uppers[1]);
}
