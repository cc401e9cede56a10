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

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// `ADD https://user:password@host/file` downloads with those credentials (HTTP Basic),
/// and the password shows nowhere: not in plain or json progress, `--explain`, errors, the
/// store's files, the image's config and history. The user name is masked too, as
/// BuildKit's `RedactCredentials` does (`https://xxxxx:xxxxx@host/...`).
#[test]
fn url_credentials_download_but_never_show() {
    use base64::Engine as _;
    let (user, pw, wrong) = ("cairn-url-user", "pw-4f8a0c2e91", "pw-wrong-77d3b1");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    );
    let expected = basic.clone();
    let web = TinyServer::start(move |req| {
        if req.headers.get("authorization") != Some(&expected) {
            return Reply::Full {
                status: 401,
                headers: vec![("WWW-Authenticate".into(), "Basic realm=\"t\"".into())],
                body: vec![],
            };
        }
        let body = format!("payload of {}\n", req.path).into_bytes();
        Reply::ok("application/octet-stream", body)
    });
    let ctx = common::tempdir();
    let root = common::tempdir();
    let out_dir = common::tempdir();
    let build = |df: String, extra: &[&str]| {
        fs::write(ctx.path().join("Dockerfile"), df).unwrap();
        let dest = out_dir.path().join("oci");
        let _ = fs::remove_dir_all(&dest);
        common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .arg("-o")
                .arg(format!("type=oci,dest={}", dest.display()))
                .arg("--explain")
                .args(extra),
        )
    };
    // Shell form and JSON form. (A build argument is no way to pass a password: its value
    // is part of the step's environment, as in BuildKit.)
    let df = |path: &str| {
        format!(
            "FROM scratch\nADD http://{user}:{pw}@{a}/{path}/one.txt /dl/\n\
             ADD [\"http://{user}:{pw}@{a}/{path}/two.txt\", \"/dl/\"]\n",
            a = web.addr
        )
    };
    let mut logs = String::new();
    let o = build(df("v1"), &["--progress=plain"]);
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "ADD http://xxxxx:xxxxx@{}/v1/one.txt /dl/",
            web.addr
        )),
        "the step header shows the URL masked: {log}"
    );
    logs += &log;
    // Another path: a miss whose --explain quotes the old and new instruction; json events.
    let o = build(df("v2"), &["--progress=json"]);
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("instruction changed"), "{log}");
    assert!(log.contains("xxxxx:xxxxx@"), "{log}");
    logs += &log;
    // The image has both files, and its history shows the URL masked.
    let oci = out_dir.path().join("oci");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        oci.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config = fs::read_to_string(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert!(config.contains("xxxxx:xxxxx@"), "{config}");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    // A wrong password: the server's 401 is the error, the password is not in it.
    let o = build(df("v3").replace(pw, wrong), &["--progress=plain"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("xxxxx:xxxxx@"), "{err}");
    logs += &err;
    for secret in [pw, wrong, user, basic.trim_start_matches("Basic ")] {
        assert!(!logs.contains(secret), "{secret} in the output:\n{logs}");
        for dir in [root.path(), out_dir.path()] {
            let hits = files_containing(dir, secret.as_bytes());
            assert!(hits.is_empty(), "{secret} in {hits:?}");
        }
    }
}
