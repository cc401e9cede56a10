//! What RUN steps change — a whiteout, an opaque directory, a hardlink, a symlink — comes
//! out right in every consumer of cairn's outputs: `docker run` after `--load`, `podman
//! load` and `skopeo inspect` of the docker-archive, and `umoci unpack` of the OCI layout.

mod common;

use common::registry::Registry;
use std::fs;
use std::path::Path;
use std::process::Command;

const CHECK: &str = "test ! -e /etc/motd && echo whiteout-ok; \
    test ! -e /data/old && test -e /data/new && echo opaque-ok; \
    test \"$(stat -c %i /data/new)\" = \"$(stat -c %i /data/link)\" && echo hardlink-ok; \
    test \"$(readlink /data/sym)\" = new && echo symlink-ok";

fn assert_all(out: &str, who: &str) {
    for w in ["whiteout-ok", "opaque-ok", "hardlink-ok", "symlink-ok"] {
        assert!(out.contains(w), "{who}: {w} missing in {out:?}");
    }
}

/// The same checks on an unpacked root on the host.
fn check_tree(root: &Path) -> String {
    let mut out = String::new();
    if !root.join("etc/motd").exists() {
        out.push_str("whiteout-ok ");
    }
    if !root.join("data/old").exists() && root.join("data/new").exists() {
        out.push_str("opaque-ok ");
    }
    use std::os::unix::fs::MetadataExt;
    if fs::metadata(root.join("data/new")).unwrap().ino()
        == fs::metadata(root.join("data/link")).unwrap().ino()
    {
        out.push_str("hardlink-ok ");
    }
    if fs::read_link(root.join("data/sym")).unwrap() == Path::new("new") {
        out.push_str("symlink-ok");
    }
    out
}

#[test]
fn run_changes_survive_docker_podman_skopeo_and_umoci() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "outputs/busybox:1");
    let ctx = common::tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/outputs/busybox:1\n\
             RUN echo hi > /etc/motd && mkdir -p /data && echo old > /data/old\n\
             RUN rm /etc/motd && rm -rf /data && mkdir /data && echo new > /data/new && ln /data/new /data/link && ln -s new /data/sym\n",
            reg.addr
        ),
    )
    .unwrap();
    let root = common::tempdir();
    let out = common::tempdir();
    let tag = "cairn-test/outputs:1";
    let archive = out.path().join("img.tar");
    let layout = out.path().join("oci");
    common::run_ok(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args([
                "-t",
                tag,
                "--load",
                "--compression=gzip",
                "--progress=plain",
            ])
            .arg("-o")
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg("-o")
            .arg(format!("type=oci,dest={}", layout.display())),
    );
    assert_all(
        &common::run_ok(Command::new("docker").args(["run", "--rm", tag, "sh", "-c", CHECK])),
        "docker run",
    );

    let inspect = common::run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{inspect}");

    let podman = common::run_ok(Command::new("podman").args(["load", "-i"]).arg(&archive));
    let loaded = podman
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .map(str::trim)
        .unwrap_or(tag)
        .to_string();
    let podman_run = common::run(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        &loaded,
        "sh",
        "-c",
        CHECK,
    ]));
    if podman_run.status.success() {
        assert_all(&String::from_utf8_lossy(&podman_run.stdout), "podman run");
    } else {
        // podman may not be able to run containers on this machine; its image store must
        // still hold the right tree.
        let mount = common::run_ok(Command::new("podman").args(["image", "mount", &loaded]));
        assert_all(&check_tree(Path::new(mount.trim())), "podman image mount");
        let _ = Command::new("podman")
            .args(["image", "unmount", &loaded])
            .output();
    }
    let _ = Command::new("podman").args(["rmi", "-f", &loaded]).output();

    let bundle = out.path().join("bundle");
    let refname = fs::read_to_string(layout.join("index.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&refname).unwrap();
    let name = r["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    common::run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{name}", layout.display()))
            .arg(&bundle),
    );
    assert_all(&check_tree(&bundle.join("rootfs")), "umoci unpack");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}
