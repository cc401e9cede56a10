//! Authentication against real servers: the registry's own htpasswd basic auth with
//! credentials from a test `config.json` (via `DOCKER_CONFIG`), and the bearer-token flow
//! with a small token issuer the test runs in front of the registry.

mod common;

use base64::Engine as _;
use common::images;
use common::registry::{Registry, Reply, Request, TinyServer};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn docker_config(dir: &Path, registry: &str, user: &str, pass: &str) {
    let cfg = serde_json::json!({"auths": {registry: {"auth": b64(&format!("{user}:{pass}"))}}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

fn pull_with(config: &Path, reference: &str) -> std::process::Output {
    let root = common::tempdir();
    common::run(
        common::cairn(root.path())
            .env("DOCKER_CONFIG", config)
            .args(["pull", "-q", reference]),
    )
}

#[test]
fn htpasswd_basic_auth_with_docker_config() {
    let reg = Registry::start_with_htpasswd("alice", "s3cret");
    let digest = images::push_busybox(&reg, "private/busybox:1");
    let reference = format!("{}/private/busybox:1", reg.addr);

    let good = common::tempdir();
    docker_config(
        good.path(),
        &format!("http://{}", reg.addr),
        "alice",
        "s3cret",
    );
    let out = pull_with(good.path(), &reference);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);

    let none = common::tempdir();
    let out = pull_with(none.path(), &reference);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication failed") && err.contains(&reg.addr),
        "{err}"
    );
    assert!(err.contains("no credentials"), "{err}");

    let wrong = common::tempdir();
    docker_config(wrong.path(), &reg.addr, "alice", "wrong");
    let out = pull_with(wrong.path(), &reference);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("rejected"), "{err}");
    assert!(err.contains("private/busybox:1"), "{err}");
}

/// A token issuer and gatekeeper in front of an open registry: `/token` hands out a token
/// for alice's password, `/v2/…` demands it and forwards to the registry.
struct TokenGate {
    server: TinyServer,
    issued: Arc<AtomicUsize>,
}

fn token_gate(reg: &Registry) -> TokenGate {
    let upstream = reg.addr.clone();
    let issued = Arc::new(AtomicUsize::new(0));
    let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (count, addr) = (issued.clone(), me.clone());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let server = TinyServer::start(move |req: &Request| {
        let auth = req
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        if req.path.starts_with("/token") {
            let scoped = req
                .path
                .contains("scope=repository%3Aprivate%2Fbusybox%3Apull");
            if auth != format!("Basic {}", b64("alice:s3cret")) || !scoped {
                return Reply::status(401);
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({"token": format!("tok-{n}"), "expires_in": 300});
            return Reply::ok("application/json", body.to_string().into_bytes());
        }
        if !auth.starts_with("Bearer tok-") {
            let realm = format!("http://{}/token", addr.get().unwrap());
            return Reply::Full {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        r#"Bearer realm="{realm}",service="cairn-test",scope="repository:private/busybox:pull""#
                    ),
                )],
                body: vec![],
            };
        }
        forward(&http, &upstream, req)
    });
    me.set(server.addr.clone()).unwrap();
    TokenGate { server, issued }
}

fn forward(http: &reqwest::blocking::Client, upstream: &str, req: &Request) -> Reply {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut r = http.request(method, format!("http://{upstream}{}", req.path));
    for h in ["accept", "range"] {
        if let Some(v) = req.headers.get(h) {
            r = r.header(h, v);
        }
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let mut headers = Vec::new();
    for h in [
        "content-type",
        "docker-content-digest",
        "content-range",
        "content-length",
    ] {
        if let Some(v) = resp.headers().get(h) {
            headers.push((h.to_string(), v.to_str().unwrap().to_string()));
        }
    }
    let body = resp.bytes().unwrap().to_vec();
    Reply::Full {
        status,
        headers,
        body,
    }
}

#[test]
fn bearer_token_flow_reuses_one_token() {
    let reg = Registry::start();
    let digest = images::push_multi_layer(&reg, "private/busybox:1", 2);
    let gate = token_gate(&reg);
    let reference = format!("{}/private/busybox:1", gate.server.addr);

    let good = common::tempdir();
    docker_config(good.path(), &gate.server.addr, "alice", "s3cret");
    let out = pull_with(good.path(), &reference);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    // One token served the manifest and all four blobs.
    assert_eq!(gate.issued.load(Ordering::SeqCst), 1);

    let wrong = common::tempdir();
    docker_config(wrong.path(), &gate.server.addr, "alice", "nope");
    let out = pull_with(wrong.path(), &reference);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication failed")
            && err.contains("token server")
            && err.contains("401"),
        "{err}"
    );
    assert!(
        err.contains("config.json"),
        "the message names where the credentials came from: {err}"
    );
    assert_eq!(gate.issued.load(Ordering::SeqCst), 1);
}
