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

/// A context whose image is busybox plus `/x` holding `x`: no base image, no RUN.
fn busybox_context(dir: &Path, x: &str) {
    fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    fs::write(dir.join("x"), x).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY x /x\nCMD [\"/bin/busybox\", \"cat\", \"/x\"]\n",
    )
    .unwrap();
}

/// `cairn build` of `ctx` with `outputs` (`-o` each); the `--format json` result.
fn build_to(root: &Path, ctx: &Path, outputs: &[String]) -> serde_json::Value {
    let mut c = common::cairn(root);
    c.arg("build").arg(ctx).args([
        "--progress=plain",
        "--format=json",
        "-t",
        "cairn-test/out:1",
    ]);
    for o in outputs {
        c.arg("-o").arg(o);
    }
    let out = common::run_ok(&mut c);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn layer_media_types(layout: &Path, manifest: &str) -> Vec<String> {
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// With the store's default (zstd) layers and no output options, every output is read by
/// umoci, skopeo and podman with their default flags; BuildKit's per-output compression
/// options give what they ask for.
#[test]
fn every_output_reads_with_default_flags() {
    let root = common::tempdir();
    let ctx = common::tempdir();
    busybox_context(ctx.path(), "hello");
    let out = common::tempdir();
    let oci = |name: &str, opts: &str| {
        let dir = out.path().join(name);
        (
            dir.clone(),
            format!("type=oci,dest={}{opts}", dir.display()),
        )
    };
    let (plain, plain_spec) = oci("oci", "");
    let (raw, raw_spec) = oci("raw", ",compression=uncompressed");
    let (zstd, zstd_spec) = oci("zstd", ",compression=zstd");
    let (fast, fast_spec) = oci(
        "fast",
        ",compression=gzip,compression-level=1,force-compression=true",
    );
    let archive = out.path().join("img.tar");
    let gz_archive = out.path().join("img-gz.tar");
    let r = build_to(
        root.path(),
        ctx.path(),
        &[
            plain_spec,
            raw_spec,
            zstd_spec,
            fast_spec,
            format!("type=docker,dest={}", archive.display()),
            format!("type=docker,dest={},compression=gzip", gz_archive.display()),
        ],
    );
    let index = |dir: &Path| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        v["manifests"][0]["digest"].as_str().unwrap().to_string()
    };
    // The first output's manifest is the one reported.
    assert_eq!(r["manifest_digest"], index(&plain).as_str());
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    assert_eq!(layer_media_types(&plain, &index(&plain)), [gzip, gzip]);
    assert_eq!(layer_media_types(&fast, &index(&fast)), [gzip, gzip]);
    assert_ne!(index(&fast), index(&plain), "another level, other bytes");
    let tar = "application/vnd.oci.image.layer.v1.tar";
    assert_eq!(layer_media_types(&raw, &index(&raw)), [tar, tar]);
    let zst = "application/vnd.oci.image.layer.v1.tar+zstd";
    assert_eq!(layer_media_types(&zstd, &index(&zstd)), [zst, zst]);

    for dir in [&plain, &raw, &fast] {
        let bundle = out.path().join(format!(
            "bundle-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        common::run_ok(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:1", dir.display()))
                .arg(&bundle),
        );
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs/x")).unwrap(),
            "hello"
        );
    }
    for (i, src) in [
        format!("oci:{}:1", plain.display()),
        format!("oci:{}:1", raw.display()),
        format!("oci:{}:1", zstd.display()),
        format!("docker-archive:{}", archive.display()),
        format!("docker-archive:{}", gz_archive.display()),
        format!("oci-archive:{}", archive.display()),
    ]
    .iter()
    .enumerate()
    {
        let dest = format!("dir:{}", out.path().join(format!("copy{i}")).display());
        common::run_ok(Command::new("skopeo").args(["copy", src, &dest]));
    }
    // Podman mounts its store's overlay directory on itself: unmounted when done.
    let _unmount = UnmountOnDrop(out.path().join("podman-root").join("overlay"));
    // podman load, in a store of this test's own: the archives and the layouts.
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(out.path().join("podman-root"))
            .arg("--runroot")
            .arg(out.path().join("podman-run"));
        c
    };
    for a in [&archive, &gz_archive] {
        let loaded = common::run_ok(podman().args(["load", "-i"]).arg(a));
        assert!(loaded.contains("cairn-test/out:1"), "{loaded}");
    }
    // podman 4.3 names a loaded layout after the path it is given, which must then be
    // lowercase: give it the directory's own name.
    for dir in [&plain, &raw, &zstd, &fast] {
        let loaded = common::run_ok(
            podman()
                .current_dir(out.path())
                .args(["load", "-i"])
                .arg(dir.file_name().unwrap()),
        );
        assert!(loaded.contains("Loaded image"), "{loaded}");
    }
}

/// An output that already holds exactly this image is not written to on a no-op build;
/// one that differs (damaged, or another image) is.
#[test]
fn outputs_holding_this_image_are_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let root = common::tempdir();
    let ctx = common::tempdir();
    busybox_context(ctx.path(), "one");
    let out = common::tempdir();
    let layout = out.path().join("oci");
    let archive = out.path().join("img.tar");
    let specs = [
        format!("type=oci,dest={}", layout.display()),
        format!("type=docker,dest={}", archive.display()),
    ];
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec(), m.len())
    };
    let first = build_to(root.path(), ctx.path(), &specs);
    // The mode of any file the user creates (0666 less the umask), not a temporary file's.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let plain = out.path().join("plain");
    fs::File::create(&plain).unwrap();
    assert_eq!(mode(&archive), mode(&plain));
    let (index0, archive0) = (stamp(&layout.join("index.json")), stamp(&archive));
    let again = build_to(root.path(), ctx.path(), &specs);
    assert_eq!(again["all_cached"], "true");
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);
    assert_eq!(
        stamp(&layout.join("index.json")),
        index0,
        "layout rewritten"
    );
    assert_eq!(stamp(&archive), archive0, "archive rewritten");

    // Damaged outputs are written again, whole and readable.
    let blobs: Vec<_> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fs::remove_file(&blobs[0]).unwrap();
    let f = fs::OpenOptions::new().append(true).open(&archive).unwrap();
    f.set_len(archive0.3 - 1024).unwrap();
    build_to(root.path(), ctx.path(), &specs);
    assert!(blobs[0].exists());
    assert_eq!(fs::metadata(&archive).unwrap().len(), archive0.3);
    common::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("docker-archive:{}", archive.display())),
    );
    common::run_ok(
        Command::new("skopeo")
            .args(["copy"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("dir:{}", out.path().join("copy").display())),
    );

    // Another image: both rewritten.
    fs::write(ctx.path().join("x"), "two").unwrap();
    let changed = build_to(root.path(), ctx.path(), &specs);
    assert_ne!(changed["manifest_digest"], first["manifest_digest"]);
    assert_ne!(stamp(&layout.join("index.json")), index0);
    assert_ne!(stamp(&archive).0, archive0.0);
}

/// `dest=/dev/stdout` (a pipe here) is written to, not replaced by a file.
#[test]
fn archive_to_a_pipe() {
    let root = common::tempdir();
    let ctx = common::tempdir();
    busybox_context(ctx.path(), "piped");
    let out = common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args([
                "-q",
                "-t",
                "cairn-test/pipe:1",
                "-o",
                "type=docker,dest=/dev/stdout",
            ]),
    );
    assert!(out.status.success());
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Unmounts a path when dropped (a mount this test's podman made), so its temporary
/// directory can go.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
}
