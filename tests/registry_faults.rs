//! Registries that misbehave: wrong bytes, truncated downloads, a 500 then success, a
//! server that hangs, oversize and non-JSON answers, redirect loops, garbage challenges.
//! Each ends in a retried success or a clear error, and the store never holds a partial
//! or wrong blob afterwards. (A tiny test server plays the registry: faults only.)

mod common;

use cairn::registry::{self, PullPolicy, Reference, RegistryOptions};
use cairn::store::{maintain, Store};
use cairn::Digest;
use common::registry::{Reply, Request, TinyServer};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Fake {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn fake(config: &[u8]) -> Fake {
    // 300 kB that do not compress into anything meaningful; the store does not care.
    let layer: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layer_digest = Digest::of_bytes(&layer);
    let config_digest = Digest::of_bytes(config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    });
    Fake {
        manifest: serde_json::to_vec(&manifest).unwrap(),
        config: config.to_vec(),
        config_digest,
        layer,
        layer_digest,
    }
}

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5a1d3c0d7e1c8f2b4a6e9d0c3b5a7f1e2d4c6b8a0f9e8d7c6b5a4f3e2d1c0b9a"]}}"#;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    WrongBytes,
    TruncateOnce,
    TruncateAlways,
    FailOnce,
    Hang,
    Oversize,
    HugeManifest,
    RedirectLoop,
    GarbageChallenge,
    /// Every layer answer waits a little, so concurrent pulls overlap.
    Slow,
    /// The first layer answer sends half the bytes and then stalls; later ones are whole.
    StallOnce,
}

/// Serves the fake image as `ADDR/fault:latest`; returns the server and the count of
/// layer requests.
fn serve(f: Arc<Fake>, fault: Fault) -> (TinyServer, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = TinyServer::start(move |req: &Request| {
        if fault == Fault::GarbageChallenge {
            return Reply::Full {
                status: 401,
                headers: vec![("WWW-Authenticate".into(), "Gobbledygook ===".into())],
                body: vec![],
            };
        }
        if req.path.starts_with("/v2/fault/manifests/") {
            let body = if fault == Fault::HugeManifest {
                vec![b' '; 5 << 20]
            } else {
                f.manifest.clone()
            };
            return Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), OCI_MANIFEST.into()),
                    (
                        "Docker-Content-Digest".into(),
                        Digest::of_bytes(&body).to_string(),
                    ),
                ],
                body,
            };
        }
        if req.path == format!("/v2/fault/blobs/{}", f.config_digest) {
            return Reply::ok("application/octet-stream", f.config.clone());
        }
        if req.path != format!("/v2/fault/blobs/{}", f.layer_digest) {
            return Reply::status(404);
        }
        let n = h.fetch_add(1, Ordering::SeqCst);
        let full = || Reply::ok("application/octet-stream", f.layer.clone());
        let truncated = || {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                f.layer.len()
            );
            let mut raw = head.into_bytes();
            raw.extend_from_slice(&f.layer[..f.layer.len() / 2]);
            Reply::Raw(raw)
        };
        match fault {
            Fault::WrongBytes => {
                let mut b = f.layer.clone();
                b[1000] ^= 0xff;
                Reply::ok("application/octet-stream", b)
            }
            Fault::TruncateOnce if n == 0 => truncated(),
            Fault::TruncateOnce => match req
                .headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
            {
                Some(r) => {
                    let from: usize = r.trim_end_matches('-').parse().unwrap();
                    let len = f.layer.len();
                    Reply::Full {
                        status: 206,
                        headers: vec![(
                            "Content-Range".into(),
                            format!("bytes {from}-{}/{len}", len - 1),
                        )],
                        body: f.layer[from..].to_vec(),
                    }
                }
                None => full(),
            },
            Fault::TruncateAlways => truncated(),
            Fault::FailOnce if n == 0 => Reply::status(500),
            Fault::Slow => {
                std::thread::sleep(Duration::from_millis(300));
                full()
            }
            Fault::StallOnce if n == 0 => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    f.layer.len()
                );
                let mut raw = head.into_bytes();
                raw.extend_from_slice(&f.layer[..f.layer.len() / 2]);
                Reply::Stall(raw)
            }
            Fault::Hang => Reply::Hang,
            Fault::Oversize => {
                let mut b = f.layer.clone();
                b.extend_from_slice(b"trailing junk");
                Reply::ok("application/octet-stream", b)
            }
            Fault::RedirectLoop => Reply::Full {
                status: 307,
                headers: vec![("Location".into(), req.path.clone())],
                body: vec![],
            },
            _ => full(),
        }
    });
    (server, hits)
}

/// Pulls the fake image with short timeouts; returns the outcome and the store.
fn pull(
    fault: Fault,
    config: &[u8],
) -> (
    Result<registry::PulledImage, registry::Error>,
    Store,
    Arc<Fake>,
    usize,
    tempfile::TempDir,
) {
    let f = Arc::new(fake(config));
    let (server, hits) = serve(f.clone(), fault);
    let root = common::tempdir();
    let store = Store::open(root.path()).unwrap();
    let r = Reference::parse(&format!("{}/fault:latest", server.addr)).unwrap();
    let opts = RegistryOptions {
        timeout: Duration::from_secs(1),
        retries: 2,
        quiet: true,
        ..RegistryOptions::default()
    };
    let out = registry::pull(
        &store,
        &r,
        &"linux/amd64".parse().unwrap(),
        PullPolicy::Always,
        &opts,
    );
    let n = hits.load(Ordering::SeqCst);
    drop(server);
    (out, store, f, n, root)
}

/// Nothing partial or wrong is left: no layer blob, no temp file, verify clean.
fn assert_clean(store: &Store, f: &Fake) {
    assert!(
        !store.has_blob(&f.layer_digest),
        "a failed layer became visible"
    );
    let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    assert!(maintain::verify(store, false).unwrap().is_clean());
}

fn err_of(out: Result<registry::PulledImage, registry::Error>) -> String {
    out.map(|_| ())
        .expect_err("the pull should fail")
        .to_string()
}

#[test]
fn wrong_bytes_are_refused() {
    let (out, store, f, _, _root) = pull(Fault::WrongBytes, CONFIG);
    let err = err_of(out);
    assert!(
        err.contains(f.layer_digest.as_str()) && err.contains("hashes to"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:"), "names the registry: {err}");
    assert_clean(&store, &f);
}

#[test]
fn truncated_download_resumes_with_range() {
    let (out, store, f, hits, _root) = pull(Fault::TruncateOnce, CONFIG);
    let img = out.unwrap();
    assert_eq!(hits, 2, "one truncated GET, one ranged GET");
    assert_eq!(img.layers.len(), 1);
    assert_eq!(store.read_blob(&f.layer_digest).unwrap(), f.layer);
}

#[test]
fn truncated_every_time_is_a_clear_error() {
    let (out, store, f, hits, _root) = pull(Fault::TruncateAlways, CONFIG);
    let err = err_of(out);
    assert!(
        err.contains("download failed") && err.contains(f.layer_digest.as_str()),
        "{err}"
    );
    assert_eq!(hits, 3, "first try plus two retries");
    assert_clean(&store, &f);
}

#[test]
fn server_error_then_success_is_retried() {
    let (out, store, f, hits, _root) = pull(Fault::FailOnce, CONFIG);
    out.unwrap();
    assert_eq!(hits, 2);
    assert!(store.has_blob(&f.layer_digest));
}

#[test]
fn hanging_server_times_out() {
    let start = Instant::now();
    let (out, store, f, hits, _root) = pull(Fault::Hang, CONFIG);
    let err = err_of(out);
    assert!(
        err.contains("unreachable") && err.contains("timed out"),
        "{err}"
    );
    assert_eq!(hits, 3);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_clean(&store, &f);
}

#[test]
fn more_bytes_than_declared_are_refused() {
    let (out, store, f, _, _root) = pull(Fault::Oversize, CONFIG);
    let err = err_of(out);
    assert!(err.contains("more than the 300000 bytes"), "{err}");
    assert_clean(&store, &f);
}

#[test]
fn lying_answers_are_clear_errors_with_bounded_memory() {
    let (out, store, f, _, _root) = pull(Fault::HugeManifest, CONFIG);
    let err = err_of(out);
    assert!(err.contains("limit"), "{err}");
    assert!(maintain::blobs(&store).unwrap().is_empty());

    let (out, store, f2, _, _root) = pull(Fault::None, b"this is not JSON");
    let err = err_of(out);
    assert!(err.contains("not a JSON object"), "{err}");
    assert!(!store.has_blob(&f2.layer_digest));

    let (out, store, _, _, _root) = pull(Fault::RedirectLoop, CONFIG);
    let err = err_of(out);
    assert!(err.contains("redirect"), "{err}");
    assert_clean(&store, &f);

    let (out, store, _, _, _root) = pull(Fault::GarbageChallenge, CONFIG);
    let err = err_of(out);
    assert!(err.contains("WWW-Authenticate"), "{err}");
    assert!(maintain::blobs(&store).unwrap().is_empty());
}

#[test]
fn concurrent_pulls_download_each_blob_once() {
    let f = Arc::new(fake(CONFIG));
    let (server, hits) = serve(f.clone(), Fault::Slow);
    let root = common::tempdir();
    let r = Reference::parse(&format!("{}/fault:latest", server.addr)).unwrap();
    let opts = RegistryOptions {
        quiet: true,
        ..RegistryOptions::default()
    };
    let digests: Vec<Digest> = std::thread::scope(|s| {
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let store = Store::open(root.path()).unwrap();
                    let p = "linux/amd64".parse().unwrap();
                    registry::pull(&store, &r, &p, PullPolicy::Always, &opts)
                        .unwrap()
                        .manifest_digest
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the layer was downloaded more than once"
    );
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.read_blob(&f.layer_digest).unwrap(), f.layer);
}

#[test]
fn pull_killed_mid_download_leaves_nothing_wrong() {
    let f = Arc::new(fake(CONFIG));
    let (server, _hits) = serve(f.clone(), Fault::StallOnce);
    let root = common::tempdir();
    let reference = format!("{}/fault:latest", server.addr);
    let mut child = common::cairn(root.path())
        .args(["pull", "-q", &reference])
        .spawn()
        .unwrap();
    // Wait until the layer download has begun and stalled half-way, then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tmp = root.path().join("tmp");
    loop {
        let started = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".blob."));
        if started {
            // Let the first half arrive (it sits in the writer's buffer or the temp file).
            std::thread::sleep(Duration::from_millis(300));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull never wrote the partial layer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let leftovers = std::fs::read_dir(&tmp).unwrap().count();
    assert!(
        leftovers > 0,
        "SIGKILL should leave the temp file for the next open to clean"
    );
    // The next process finds no blob, cleans the dead process's temp file, verifies clean.
    let store = Store::open(root.path()).unwrap();
    assert_clean(&store, &f);
    let verify = common::run_ok(common::cairn(root.path()).args(["cache", "verify"]));
    assert!(verify.contains("all good"), "{verify}");
    // And pulls again, whole this time.
    let out = common::run_ok(common::cairn(root.path()).args(["pull", "-q", &reference]));
    assert_eq!(out.trim(), Digest::of_bytes(&f.manifest).as_str());
    assert_eq!(store.read_blob(&f.layer_digest).unwrap(), f.layer);
}
