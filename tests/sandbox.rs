//! The RUN sandbox against real namespaces: a busybox root for the fast checks, a Debian
//! minbase root (made by debootstrap, cached under /var/tmp/cairn-testdata) for apt,
//! useradd and setcap, as root and as the unprivileged `cairntest` user.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use cairn::sandbox::{Network, RootMode};
use cairn::userns::Privilege;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use support::*;

fn echo_runs_and_reports_exit_codes() {
    let t = Step::busybox();
    let (code, out) = t.run("echo hello; echo oops >&2; exit 3");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("hello\n") && out.contains("oops\n"), "{out}");
    let (code, out) = t.run_argv(&["/no/such/binary"]);
    assert_eq!(code, 127, "{out}");
    let (code, _) = t.run("sh -c 'kill -9 $$'; exit $?");
    assert_eq!(code, 128 + 9);
}

fn a_step_that_changes_nothing_leaves_an_empty_upper() {
    let t = Step::busybox();
    let (code, out) = t.run("cat /etc/resolv.conf /etc/hosts /etc/hostname >/dev/null && ls /proc/self /dev/pts /sys >/dev/null");
    assert_eq!(code, 0, "{out}");
    assert_eq!(upper_entries(&t), Vec::<String>::new());
    std::fs::remove_dir_all(&t.work).expect("the work dir can be removed by its owner");
}

fn changes_land_in_the_upper_in_overlay_form() {
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
        cairn::overlay::is_opaque(&t.upper.join("root")),
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

fn resolv_conf_hosts_and_hostname_never_reach_the_upper() {
    let t = Step::busybox();
    let (code, out) = t.run("echo nameserver 9.9.9.9 >> /etc/resolv.conf && echo 1.2.3.4 x >> /etc/hosts && hostname; cat /etc/hostname");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "cairn-test\ncairn-test\n");
    assert_eq!(upper_entries(&t), Vec::<String>::new());
}

fn the_host_is_out_of_reach() {
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
    assert!(out.contains("HOME=/root"), "HOME from passwd: {out}");
    let first = out.lines().next().unwrap_or_default().trim().to_string();
    let procs: usize = first.parse().unwrap_or_else(|_| panic!("{out}"));
    assert!(procs <= 4, "host processes visible: {out}");
}

fn background_processes_do_not_survive_the_step() {
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

fn user_and_network_none() {
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

/// A step's sync calls succeed at once unless `--keep-fsync` asks for them: one more seccomp
/// filter (after Docker's profile and the clone3 one) answers them, and `sync` still exits 0.
fn sync_calls_are_answered_by_a_filter_unless_kept() {
    let mut t = Step::busybox();
    let probe = "grep Seccomp_filters /proc/self/status; sync && echo synced";
    let (code, out) = t.run(probe);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Seccomp_filters:\t3") && out.contains("synced"),
        "{out}"
    );
    t.limits.keep_fsync = true;
    let (code, out) = t.run(probe);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Seccomp_filters:\t2") && out.contains("synced"),
        "{out}"
    );
}

fn the_copy_based_root_gives_the_same_upper() {
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
            assert!(cairn::overlay::is_opaque(&t.upper.join("root")), "{mode:?}");
            describe_upper(&t)
        })
        .collect();
    assert_eq!(uppers[0], uppers[1]);
}

fn the_layer_tar_is_read_as_container_root() {
    let mut t = Step::busybox();
    t.user = "bob".into();
    let (code, out) = t.run("mkdir -m 700 /tmp/private && echo s > /tmp/private/secret && chmod 600 /tmp/private/secret");
    assert_eq!(code, 0, "{out}");
    if !nix::unistd::geteuid().is_root() {
        let outside = std::fs::read(t.upper.join("tmp/private/secret"));
        assert!(outside.is_err(), "the user alone cannot read it");
    }
    let mut tar = Vec::new();
    let opts = cairn::layer::LayerOptions::default();
    cairn::layer::tar_as_owner(&Privilege::detect(), &t.upper, &opts, &mut tar).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("tmp/private/secret") {
            assert_eq!(
                entry.header().uid().unwrap(),
                1000,
                "owners read as the container's ids"
            );
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            assert_eq!(body, "s\n");
            found = true;
        }
    }
    assert!(found, "the secret is in the layer");
}

fn a_copy_based_root_leaves_no_staging_behind() {
    let mut t = Step::busybox();
    t.mode = RootMode::Copy;
    t.user = "bob".into();
    let (code, out) = t.run("mkdir -m 700 /tmp/x && touch /tmp/x/y");
    assert_eq!(code, 0, "{out}");
    let left: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sandbox-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Each busybox check as root; the same checks run rootless below.
mod as_root {
    #[test]
    fn echo_runs_and_reports_exit_codes() {
        super::common::require_root();
        super::echo_runs_and_reports_exit_codes();
    }

    #[test]
    fn a_step_that_changes_nothing_leaves_an_empty_upper() {
        super::common::require_root();
        super::a_step_that_changes_nothing_leaves_an_empty_upper();
    }

    #[test]
    fn changes_land_in_the_upper_in_overlay_form() {
        super::common::require_root();
        super::changes_land_in_the_upper_in_overlay_form();
    }

    #[test]
    fn resolv_conf_hosts_and_hostname_never_reach_the_upper() {
        super::common::require_root();
        super::resolv_conf_hosts_and_hostname_never_reach_the_upper();
    }

    #[test]
    fn the_host_is_out_of_reach() {
        super::common::require_root();
        super::the_host_is_out_of_reach();
    }

    #[test]
    fn background_processes_do_not_survive_the_step() {
        super::common::require_root();
        super::background_processes_do_not_survive_the_step();
    }

    #[test]
    fn user_and_network_none() {
        super::common::require_root();
        super::user_and_network_none();
    }

    #[test]
    fn the_layer_tar_is_read_as_container_root() {
        super::common::require_root();
        super::the_layer_tar_is_read_as_container_root();
    }

    #[test]
    fn a_copy_based_root_leaves_no_staging_behind() {
        super::common::require_root();
        super::a_copy_based_root_leaves_no_staging_behind();
    }

    #[test]
    fn the_copy_based_root_gives_the_same_upper() {
        super::common::require_root();
        super::the_copy_based_root_gives_the_same_upper();
    }

    #[test]
    fn sync_calls_are_answered_by_a_filter_unless_kept() {
        super::common::require_root();
        super::sync_calls_are_answered_by_a_filter_unless_kept();
    }
}

#[test]
fn busybox_checks_rootless() {
    if rootless_inner("busybox_checks_rootless") {
        echo_runs_and_reports_exit_codes();
        a_step_that_changes_nothing_leaves_an_empty_upper();
        changes_land_in_the_upper_in_overlay_form();
        resolv_conf_hosts_and_hostname_never_reach_the_upper();
        the_host_is_out_of_reach();
        background_processes_do_not_survive_the_step();
        user_and_network_none();
        the_copy_based_root_gives_the_same_upper();
        the_layer_tar_is_read_as_container_root();
        a_copy_based_root_leaves_no_staging_behind();
        sync_calls_are_answered_by_a_filter_unless_kept();
    }
}

/// apt, useradd/chown, rm (whiteout), rm -rf + mkdir (opaque), a hardlink and a symlink,
/// setcap, then a second step on top of the first one's upper, on Debian minbase.
fn debian_steps() {
    let t = Step::debian(&[]);
    let (code, out) = t.run(
        "apt-get update -q && apt-get install -y -q python3-minimal libcap2-bin \
         && python3 -c 'print(6*7)' \
         && useradd -m coder && chown coder /home/coder \
         && rm /etc/issue && rm -rf /var/log/apt && mkdir /var/log/apt \
         && ln /etc/debian_version /etc/debian_version.hard && ln -s os-release /etc/os-release.soft \
         && cp /bin/true /usr/local/bin/capped && setcap cap_net_raw+ep /usr/local/bin/capped",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\n42\n"), "{out}");
    let (uids, _) = Privilege::detect().id_maps();
    let host = |id| cairn::idmap::container_to_host(&uids, id).unwrap();
    let home = std::fs::metadata(t.upper.join("home/coder")).unwrap();
    assert_eq!(
        home.uid(),
        host(1000),
        "coder owns /home/coder in the upper"
    );
    assert!(std::fs::read_to_string(t.upper.join("etc/passwd"))
        .unwrap()
        .contains("coder:x:1000:"));
    let issue = std::fs::symlink_metadata(t.upper.join("etc/issue")).unwrap();
    assert!(
        issue.file_type().is_char_device() && issue.rdev() == 0,
        "rm gives a whiteout"
    );
    assert!(cairn::overlay::is_opaque(&t.upper.join("var/log/apt")));
    let a = std::fs::symlink_metadata(t.upper.join("etc/debian_version.hard")).unwrap();
    assert!(a.nlink() == 2 && a.is_file());
    assert!(
        std::fs::symlink_metadata(t.upper.join("etc/os-release.soft"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        xattr::get(t.upper.join("usr/local/bin/capped"), "security.capability")
            .unwrap()
            .is_some()
    );
    assert!(t.upper.join("usr/bin/python3").exists());
    assert!(!t.upper.join("etc/resolv.conf").exists() && !t.upper.join("etc/hostname").exists());

    let first = t.upper.clone();
    let mut next = Step::debian(&[first]);
    next.user = "coder".into();
    let (code, out) = next.run(
        "id -un; getcap /usr/local/bin/capped; test ! -e /etc/issue && test -z \"$(ls /var/log/apt)\" \
         && touch /home/coder/mine && stat -c %U /home/coder/mine",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("coder\n") && out.contains("cap_net_raw=ep"),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(next.upper.join("home/coder/mine"))
            .unwrap()
            .uid(),
        host(1000)
    );
    drop(t);
}

#[test]
fn debian_apt_useradd_whiteouts_and_setcap_as_root() {
    common::require_root();
    debian_steps();
}

#[test]
fn debian_apt_useradd_whiteouts_and_setcap_rootless() {
    if rootless_inner("debian_apt_useradd_whiteouts_and_setcap_rootless") {
        debian_steps();
    }
}

#[test]
fn stdin_workdir_and_exec_form() {
    common::require_root();
    let t = Step::busybox();
    let spec = cairn::sandbox::RunSpec {
        lowers: t.lowers.clone(),
        upper: t.upper.clone(),
        work: t.work.clone(),
        argv: vec!["cat".into()],
        env: vec!["PATH=/bin".into()],
        user: "bob:staff".into(),
        workdir: "/srv/app".into(),
        network: Network::Host,
        security: Default::default(),
        limits: Default::default(),
        hostname: "h".into(),
        stdin: Some(b"from stdin\n".to_vec()),
        mounts: Vec::new(),
    };
    let mut out = Vec::new();
    let code = cairn::sandbox::run(
        &spec,
        &Privilege::Root,
        &mut |b| out.extend_from_slice(b),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((code, out.as_slice()), (0, &b"from stdin\n"[..]));
    assert!(
        t.upper.join("srv/app").is_dir(),
        "WORKDIR is created when missing"
    );
    let spec = cairn::sandbox::RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "pwd; id; echo $HOME".into()],
        stdin: None,
        ..spec
    };
    let mut out = Vec::new();
    cairn::sandbox::run(
        &spec,
        &Privilege::Root,
        &mut |b| out.extend_from_slice(b),
        &mut |_| {},
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with("\n/tmp\n"), "HOME of bob: {out}");
    assert!(
        out.starts_with("/srv/app\nuid=1000(bob) gid=50(staff) groups=50(staff)"),
        "{out}"
    );
}

#[test]
fn without_subordinate_ids_only_root_works() {
    if rootless_inner_as("cairnnoids", "without_subordinate_ids_only_root_works") {
        let t = Step::busybox();
        let (code, out) = t.run("id -u; touch /f; chown 1000 /f");
        assert_eq!(code, 1, "{out}");
        assert!(out.starts_with("0\n"), "{out}");
        let (uids, _) = Privilege::detect().id_maps();
        assert_eq!(uids.len(), 1);
    }
}

#[test]
fn a_hundred_and_twenty_long_named_lowers_fit_in_one_mount() {
    common::require_root();
    let base = Step::busybox();
    let mut lowers = base.lowers.clone();
    for i in 0..120 {
        // Store paths are long: layers/<64 hex digits>.
        let layer = base.dir.path().join(format!("{:064x}", i));
        std::fs::create_dir_all(layer.join("layers")).unwrap();
        std::fs::write(layer.join("layers").join(i.to_string()), "").unwrap();
        lowers.push(layer);
    }
    let dir = tempfile::Builder::new()
        .prefix("cairn-sbx-")
        .tempdir()
        .unwrap();
    let mut t = Step::new(lowers, dir);
    t.mode = RootMode::Overlay;
    let (code, out) = t.run("ls /layers | wc -l");
    assert_eq!((code, out.trim()), (0, "120"));
}
