//! `ADD`: a local tar archive is extracted into the destination; a URL is downloaded,
//! checked against `--checksum`, and a wrong checksum fails the build clearly.

mod common;

use common::registry::{Registry, Reply, TinyServer};
use std::fs;
use std::process::Command;

#[test]
fn add_extracts_local_archives_and_fetches_urls_with_checksums() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "add/busybox:1");
    let body = b"downloaded payload\n".to_vec();
    let digest = cairn::Digest::of_bytes(&body);
    let served = body.clone();
    let web = TinyServer::start(move |_| Reply::ok("application/octet-stream", served.clone()));
    let ctx = common::tempdir();
    // An archive made with the system tar, gzip-compressed.
    let src = ctx.path().join("src");
    fs::create_dir_all(src.join("pkg/bin")).unwrap();
    fs::write(src.join("pkg/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    common::run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(ctx.path().join("pkg.tar.gz"))
            .arg("-C")
            .arg(&src)
            .arg("pkg"),
    );
    fs::remove_dir_all(&src).unwrap();
    fs::write(ctx.path().join("plain.txt"), "not an archive").unwrap();
    let df = ctx.path().join("Dockerfile");
    fs::write(
        &df,
        format!(
            "FROM {}/add/busybox:1\nADD pkg.tar.gz /opt/\nADD plain.txt /opt/plain.txt\nADD --checksum={digest} http://{}/files/payload.txt /dl/\n",
            reg.addr, web.addr
        ),
    )
    .unwrap();
    let root = common::tempdir();
    let tag = "cairn-test/add:1";
    common::run_ok(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["-t", tag, "--progress=plain"]),
    );
    let out = common::run_ok(Command::new("docker").args([
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "cat /opt/pkg/bin/tool /opt/plain.txt /dl/payload.txt; stat -c %a /dl/payload.txt",
    ]));
    assert!(out.contains("echo tool"), "archive not extracted: {out}");
    assert!(out.contains("not an archive"), "{out}");
    assert!(out.contains("downloaded payload"), "{out}");
    assert!(
        out.trim_end().ends_with("600"),
        "downloads are 0600 as in Docker: {out}"
    );

    // A wrong checksum fails and names the URL.
    let wrong = cairn::Digest::of_bytes(b"something else");
    fs::write(
        &df,
        format!(
            "FROM {}/add/busybox:1\nADD --checksum={wrong} http://{}/x/payload.txt /dl/\n",
            reg.addr, web.addr
        ),
    )
    .unwrap();
    let out = common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["-t", tag, "--progress=plain"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("checksum mismatch") && err.contains("payload.txt"),
        "{err}"
    );
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}

/// ADD's downloads go through the registry's HTTP stack: a server error is retried, and a
/// URL that stays missing fails as a network failure (exit 4) naming the URL and status,
/// while a wrong checksum stays bad input (exit 2).
#[test]
fn add_downloads_retry_and_fail_like_registry_requests() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let web = TinyServer::start(move |req| {
        if req.path == "/flaky.txt" && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(503);
        }
        match req.path.as_str() {
            "/flaky.txt" => Reply::ok("text/plain", b"after a retry\n".to_vec()),
            _ => Reply::status(404),
        }
    });
    let ctx = common::tempdir();
    let root = common::tempdir();
    let build = |df: String| {
        fs::write(ctx.path().join("Dockerfile"), df).unwrap();
        let out_dir = ctx.path().join("out");
        let _ = fs::remove_dir_all(&out_dir);
        common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .arg("-o")
                .arg(format!("type=oci,dest={}", out_dir.display())),
        )
    };
    let ok = build(format!(
        "FROM scratch\nADD http://{}/flaky.txt /\n",
        web.addr
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the 503 was retried once");

    let missing = build(format!(
        "FROM scratch\nADD http://{}/gone.txt /\n",
        web.addr
    ));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("http://{}/gone.txt", web.addr)) && err.contains("HTTP 404"),
        "{err}"
    );

    let wrong = cairn::Digest::of_bytes(b"something else");
    let mismatch = build(format!(
        "FROM scratch\nADD --checksum={wrong} http://{}/flaky.txt /\n",
        web.addr
    ));
    let err = String::from_utf8_lossy(&mismatch.stderr);
    assert_eq!(mismatch.status.code(), Some(2), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
}
