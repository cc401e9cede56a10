//! Pulling from the real `docker-registry` the harness starts: multi-layer images, digests,
//! manifest lists, offline fallback and `--pull=never`.

mod common;

use cairn::store::Store;
use cairn::Digest;
use common::images;
use common::registry::Registry;
use std::net::TcpListener;
use std::process::Command;

fn pull(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::run(common::cairn(root).arg("pull").args(args))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn harness_pushes_busybox_and_restarts() {
    let mut reg = Registry::start();
    let digest = images::push_busybox(&reg, "busybox:1");
    assert!(Digest::parse(&digest).is_ok(), "{digest}");
    let raw = common::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/busybox:1", reg.addr)),
    );
    assert_eq!(Digest::of_bytes(raw.as_bytes()).to_string(), digest);
    reg.restart();
    assert_eq!(common::registry::http_status(&reg.addr, "/v2/"), Some(200));
    reg.stop();
    assert_eq!(common::registry::http_status(&reg.addr, "/v2/"), None);
}

#[test]
fn pulls_multi_layer_image_and_by_digest() {
    let reg = Registry::start();
    let digest = images::push_multi_layer(&reg, "multi:1", 3);
    let root = common::tempdir();
    let reference = format!("{}/multi:1", reg.addr);
    let out = pull(root.path(), &[&reference]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), digest);

    // Every blob is in the store, verified, with the Docker media types kept.
    let store = Store::open(root.path()).unwrap();
    let r = cairn::registry::Reference::parse(&reference).unwrap();
    let opts = cairn::registry::RegistryOptions {
        quiet: true,
        ..Default::default()
    };
    let img = cairn::registry::pull(
        &store,
        &r,
        &"linux/amd64".parse().unwrap(),
        cairn::registry::PullPolicy::Never,
        &opts,
    )
    .unwrap();
    assert_eq!(img.manifest_digest.as_str(), digest);
    assert_eq!(img.layers.len(), 4);
    for l in &img.layers {
        assert_eq!(
            l.media_type().to_string(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let d = Digest::parse(l.digest().as_ref()).unwrap();
        assert_eq!(
            std::fs::metadata(store.blob_path(&d)).unwrap().len(),
            l.size()
        );
    }
    let verify = common::run_ok(common::cairn(root.path()).args(["cache", "verify"]));
    assert!(verify.contains("all good"), "{verify}");
    assert!(std::fs::read_dir(root.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());

    // By digest, into a fresh store.
    let fresh = common::tempdir();
    let by_digest = format!("{}/multi@{digest}", reg.addr);
    let out = pull(fresh.path(), &[&by_digest]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), digest);

    // inspect prints the stored manifest and config.
    let json = common::run_ok(common::cairn(root.path()).args(["inspect", &reference]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["manifest_digest"], digest);
    assert_eq!(v["config"]["architecture"], "amd64");
    assert_eq!(v["manifest"]["layers"].as_array().unwrap().len(), 4);
    let ls = common::run_ok(common::cairn(root.path()).args(["cache", "ls"]));
    assert!(ls.contains(&reference), "{ls}");

    // Regression: `cairn inspect … | head` panicked on the closed pipe.
    let mut child = common::cairn(root.path())
        .args(["inspect", &reference])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn manifest_list_gives_the_requested_platform() {
    let reg = Registry::start();
    let list = images::push_manifest_list(&reg, "multiarch:1");
    let root = common::tempdir();
    let reference = format!("{}/multiarch:1", reg.addr);
    let amd = pull(root.path(), &[&reference]);
    assert_eq!(stdout(&amd), list.amd64, "{}", stderr(&amd));
    let arm = pull(root.path(), &["--platform", "linux/arm64", &reference]);
    assert_eq!(stdout(&arm), list.arm64, "{}", stderr(&arm));
    let arm = pull(root.path(), &["--platform", "linux/aarch64/v8", &reference]);
    assert_eq!(stdout(&arm), list.arm64);
    let none = pull(root.path(), &["--platform", "linux/s390x", &reference]);
    assert_eq!(none.status.code(), Some(4));
    let err = stderr(&none);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64/v8"),
        "{err}"
    );
    // The tag records the index, from which both platforms resolve offline.
    let store = Store::open(root.path()).unwrap();
    let tag = store.tag_get(&reference).unwrap().unwrap();
    assert_eq!(tag.digest.as_str(), list.index);
}

#[test]
fn offline_pulls_use_the_store() {
    let mut reg = Registry::start();
    let digest = images::push_busybox(&reg, "busybox:1");
    let root = common::tempdir();
    let reference = format!("{}/busybox:1", reg.addr);
    assert_eq!(stdout(&pull(root.path(), &[&reference])), digest);

    // The registry is gone; something listens on its port to catch any connection.
    reg.stop();
    let port = reg.addr.rsplit(':').next().unwrap();
    let spy = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    spy.set_nonblocking(true).unwrap();
    let never = pull(root.path(), &["--pull=never", &reference]);
    assert!(never.status.success());
    assert_eq!(stdout(&never), digest);
    assert!(spy.accept().is_err(), "--pull=never opened a connection");
    drop(spy);

    // Default policy: warning, stored digest. --pull=always: a clear failure.
    let missing = pull(root.path(), &["--pull=missing", &reference]);
    assert!(missing.status.success());
    assert_eq!(stdout(&missing), digest);
    let warn = stderr(&missing);
    assert!(
        warn.contains("warning") && warn.contains("unreachable"),
        "{warn}"
    );
    let always = pull(root.path(), &["--pull=always", &reference]);
    assert_eq!(always.status.code(), Some(4));
    assert!(stderr(&always).contains(&reg.addr), "{}", stderr(&always));

    // Never without a stored tag says so, without the network.
    let other = pull(
        root.path(),
        &["--pull=never", &format!("{}/nothere:1", reg.addr)],
    );
    assert_eq!(other.status.code(), Some(4));
    assert!(
        stderr(&other).contains("--pull=never"),
        "{}",
        stderr(&other)
    );

    // Back online, a moved tag is re-resolved under the default policy.
    reg.restart();
    let moved = images::push_multi_layer(&reg, "busybox:1", 1);
    assert_ne!(moved, digest);
    let again = pull(root.path(), &["--pull=missing", &reference]);
    assert_eq!(stdout(&again), moved, "{}", stderr(&again));
}

#[test]
fn pulls_the_debian_base() {
    let reg = Registry::start();
    let digest = images::push_debian(&reg, "debian:minbase");
    // Pushing again sends the same bytes: the digest is stable across pushes and runs.
    assert_eq!(images::push_debian(&reg, "debian:again"), digest);
    let root = common::tempdir();
    let reference = format!("{}/debian:minbase", reg.addr);
    let out = pull(root.path(), &["-q", &reference]);
    assert_eq!(stdout(&out), digest, "{}", stderr(&out));
    let json = common::run_ok(common::cairn(root.path()).args(["inspect", &reference]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let size = v["manifest"]["layers"][0]["size"].as_u64().unwrap();
    assert!(
        size > 10_000_000,
        "a Debian minbase layer is tens of MB, got {size}"
    );
}

#[test]
fn invalid_references_are_usage_errors() {
    let root = common::tempdir();
    let out = pull(root.path(), &["Not/Valid"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid reference") && err.contains("lowercase"),
        "{err}"
    );
}
