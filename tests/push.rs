//! `cairn push` and `cairn build --push` against the real registry: what is already there
//! is not sent again (counted by a proxy between cairn and the registry), a second
//! repository gets its blobs by cross-repository mount, layers arrive gzip (zstd on request)
//! and what was pushed is readable by skopeo and Docker; basic auth, the bearer-token flow
//! with push scopes, and TLS verified against a CA under `certs.d` (in a network namespace,
//! so the registry has an address cairn speaks HTTPS to).

mod common;

use base64::Engine as _;
use common::images;
use common::netns::{self, NetRegistry, Netns};
use common::registry::{Registry, Reply, Request, TinyServer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A TCP proxy in front of a registry that keeps every byte the client sent, so a test can
/// count requests by method and the bytes uploaded.
/// The bytes one connection sent.
type ConnLog = Arc<Mutex<Vec<u8>>>;

struct CountingProxy {
    addr: String,
    /// What each connection sent, one buffer per connection.
    sent: Arc<Mutex<Vec<ConnLog>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, s, st) = (upstream.to_string(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let server = TcpStream::connect(&upstream).unwrap();
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let log = Arc::new(Mutex::new(Vec::new()));
                        s.lock().unwrap().push(log.clone());
                        std::thread::spawn(move || pipe(client, server, Some(log)));
                        std::thread::spawn(move || pipe(s2, c2, None));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingProxy { addr, sent, stop }
    }

    /// Forgets what was sent so far.
    fn reset(&self) {
        self.sent.lock().unwrap().clear();
    }

    fn bytes(&self) -> usize {
        let conns = self.sent.lock().unwrap();
        conns.iter().map(|c| c.lock().unwrap().len()).sum()
    }

    /// How many requests were `method` with a path containing `needle` (request lines
    /// are found anywhere, as one may follow a body on a kept-alive connection).
    fn count(&self, method: &str, needle: &str) -> usize {
        let conns = self.sent.lock().unwrap();
        let start = format!("{method} /v2/");
        conns
            .iter()
            .map(|c| {
                let bytes = c.lock().unwrap();
                let text = String::from_utf8_lossy(&bytes);
                text.match_indices(&start)
                    .filter(|(i, _)| {
                        let line = text[*i..].split("\r\n").next().unwrap_or("");
                        line.contains(needle)
                    })
                    .count()
            })
            .sum()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, log: Option<ConnLog>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(l) = &log {
                    l.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn skopeo_inspect(reference: &str, extra: &[&str]) -> serde_json::Value {
    let out = common::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&out).unwrap()
}

fn layer_media_types(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// Build and push through the proxy; re-push sends no layer bytes; a second repository
/// mounts everything; gzip by default, zstd on request; skopeo and Docker read the result.
#[test]
fn push_skips_what_the_registry_has_and_mounts_across_repositories() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let proxy = CountingProxy::start(&reg.addr);
    let p = &proxy.addr;
    let root = common::tempdir();
    let ctx = common::tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {p}/base/busybox:1\nRUN echo hi > /hi\nCOPY f.txt /f.txt\n"),
    )
    .unwrap();
    std::fs::write(ctx.path().join("f.txt"), "x".repeat(100_000)).unwrap();

    let app = format!("{p}/app/web:1");
    let out = common::run(
        common::cairn(root.path())
            .args([
                "build",
                "--progress=plain",
                "--format=json",
                "--push",
                "-t",
                &app,
            ])
            .arg(ctx.path()),
    );
    assert!(out.status.success(), "build --push failed");
    let built = json(&out);
    let digest = built["pushed_digest"].as_str().unwrap().to_string();
    assert_eq!(built["pushed"], format!("{p}/app/web@{digest}"));
    // The base layer was in the registry (pulled from it), only ours were uploaded.
    assert_eq!(
        proxy.count("HEAD", "/blobs/"),
        4,
        "config + 3 layers asked first"
    );
    assert!(proxy.count("PUT", "/manifests/1") == 1);

    let m = skopeo_inspect(&app, &[]);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert!(
        layer_media_types(&m)
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "layers pushed gzip by default: {m}"
    );
    let digest_of = |r: &str| {
        common::run_ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{r}"),
        ]))
        .trim()
        .to_string()
    };
    assert_eq!(digest_of(&app), digest);

    // Re-push: one HEAD of the tag, which names this manifest already: nothing else.
    proxy.reset();
    let out = common::run(common::cairn(root.path()).args(["push", "--format=json", &app]));
    assert!(out.status.success());
    let again = json(&out);
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["existing_blobs"], "4");
    assert_eq!(again["uploaded_bytes"], "0");
    assert_eq!(proxy.count("POST", ""), 0);
    assert_eq!(proxy.count("PATCH", ""), 0);
    assert_eq!(proxy.count("PUT", ""), 0);
    assert_eq!(proxy.count("HEAD", "/manifests/1"), 1);
    assert!(proxy.bytes() < 4 * 1024, "sent {} bytes", proxy.bytes());

    // The same image under a new tag of the same repository: blobs asked, none sent.
    proxy.reset();
    let out = common::run(common::cairn(root.path()).args([
        "push",
        "--format=json",
        &app,
        &format!("{p}/app/web:2"),
    ]));
    assert!(out.status.success());
    assert_eq!(json(&out)["existing_blobs"], "4");
    assert_eq!(proxy.count("HEAD", "/blobs/"), 4);
    assert_eq!(proxy.count("POST", ""), 0);
    assert_eq!(proxy.count("PUT", ""), 1, "only the manifest");
    assert!(proxy.bytes() < 16 * 1024, "sent {} bytes", proxy.bytes());

    // A second repository on the same registry: every blob by mount, none uploaded.
    proxy.reset();
    let other = format!("{p}/team/other:2");
    let out = common::run(common::cairn(root.path()).args(["push", "--format=json", &app, &other]));
    assert!(out.status.success());
    let mounted = json(&out);
    assert_eq!(mounted["mounted_blobs"], "4", "{mounted}");
    assert_eq!(mounted["uploaded_blobs"], "0");
    assert_eq!(proxy.count("POST", "mount=sha256"), 4);
    assert_eq!(proxy.count("PUT", ""), 1);
    assert!(proxy.bytes() < 16 * 1024, "sent {} bytes", proxy.bytes());
    assert_eq!(digest_of(&other), digest);

    // zstd on request: a different manifest, zstd layers.
    let zstd = format!("{p}/app/web:zstd");
    let out = common::run(common::cairn(root.path()).args([
        "push",
        "-q",
        "--compression=zstd",
        &app,
        &zstd,
    ]));
    assert!(out.status.success());
    let mz = skopeo_inspect(&zstd, &[]);
    let types = layer_media_types(&mz);
    assert!(
        types.iter().any(|t| t.ends_with("+zstd")),
        "our layers stay zstd: {types:?}"
    );

    // Docker pulls and runs what was pushed.
    let pulled = format!("{}/team/other:2", reg.addr);
    common::run_ok(Command::new("docker").args(["pull", "-q", &pulled]));
    let said = common::run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network=none",
        &pulled,
        "cat",
        "/hi",
    ]));
    let _ = Command::new("docker").args(["rmi", "-f", &pulled]).output();
    assert_eq!(said.trim(), "hi");
}

/// `-o type=image,name=...,push=true` pushes to that name, `type=registry` needs a name.
#[test]
fn output_spellings_push_and_name_the_target() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let root = common::tempdir();
    let ctx = common::tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/base/busybox:1\nRUN echo out > /out\n", reg.addr),
    )
    .unwrap();
    let name = format!("{}/spell/image:1", reg.addr);
    let out = common::run(
        common::cairn(root.path())
            .args(["build", "-q", "--format=json", "-o"])
            .arg(format!("type=image,name={name},push=true"))
            .arg(ctx.path()),
    );
    assert!(out.status.success());
    let d = json(&out)["pushed_digest"].as_str().unwrap().to_string();
    assert_eq!(
        skopeo_inspect(&name, &[])["layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = common::run(
        common::cairn(root.path())
            .args(["build", "-q", "-o", "type=registry"])
            .arg(ctx.path()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t REGISTRY/NAME"));
    // The tag a build wrote is what `cairn push` finds.
    let out = common::run(common::cairn(root.path()).args([
        "push",
        "-q",
        &name,
        &format!("{}/spell/copy:1", reg.addr),
    ]));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}/spell/copy@{d}", reg.addr)
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn docker_config(dir: &Path, registry: &str, user: &str, pass: &str) {
    let cfg = serde_json::json!({"auths": {registry: {"auth": b64(&format!("{user}:{pass}"))}}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

/// A store holding busybox pulled from `reg` as `REG/base/busybox:1`.
fn store_with_busybox(reg: &Registry) -> (tempfile::TempDir, String) {
    images::push_busybox(reg, "base/busybox:1");
    let root = common::tempdir();
    let src = format!("{}/base/busybox:1", reg.addr);
    common::run_ok(common::cairn(root.path()).args(["pull", "-q", &src]));
    (root, src)
}

#[test]
fn basic_auth_push_with_docker_config() {
    let open = Registry::start();
    let (root, src) = store_with_busybox(&open);
    let reg = Registry::start_with_htpasswd("alice", "s3cret");
    let dest = format!("{}/private/busybox:1", reg.addr);

    let none = common::tempdir();
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_CONFIG", none.path())
            .args(["push", "-q", &src, &dest]),
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication failed") && err.contains(&reg.addr),
        "{err}"
    );

    let good = common::tempdir();
    docker_config(good.path(), &reg.addr, "alice", "s3cret");
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_CONFIG", good.path())
            .args(["push", "-q", &src, &dest]),
    );
    assert!(out.status.success());
    let m = skopeo_inspect(&dest, &["--creds", "alice:s3cret"]);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
}

/// A token issuer and gatekeeper in front of an open registry that hands out a token only
/// for push and pull on `private/busybox`, and forwards requests with their bodies.
fn push_token_gate(upstream: &str) -> (TinyServer, Arc<AtomicUsize>) {
    let upstream = upstream.to_string();
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
        let gate = addr.get().unwrap().clone();
        if req.path.starts_with("/token") {
            let scoped = req
                .path
                .contains("scope=repository%3Aprivate%2Fbusybox%3Apull%2Cpush");
            if auth != format!("Basic {}", b64("alice:s3cret")) || !scoped {
                return Reply::status(401);
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({"token": format!("tok-{n}"), "expires_in": 300});
            return Reply::ok("application/json", body.to_string().into_bytes());
        }
        if !auth.starts_with("Bearer tok-") {
            return Reply::Full {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        r#"Bearer realm="http://{gate}/token",service="cairn-test",scope="repository:private/busybox:pull,push""#
                    ),
                )],
                body: vec![],
            };
        }
        forward(&http, &upstream, &gate, req, &[])
    });
    me.set(server.addr.clone()).unwrap();
    (server, issued)
}

/// `req` sent on to the registry at `upstream` with its body; `Location`s are rewritten to
/// point at `gate`, and `extra` headers added to the reply.
fn forward(
    http: &reqwest::blocking::Client,
    upstream: &str,
    gate: &str,
    req: &Request,
    extra: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut r = http
        .request(method, format!("http://{upstream}{}", req.path))
        .body(req.body.clone());
    for h in ["accept", "content-type", "content-range"] {
        if let Some(v) = req.headers.get(h) {
            r = r.header(h, v);
        }
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let mut headers = Vec::new();
    for h in ["content-type", "docker-content-digest", "location", "range"] {
        if let Some(v) = resp.headers().get(h) {
            let v = v.to_str().unwrap().replace(upstream, gate);
            headers.push((h.to_string(), v));
        }
    }
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let body = resp.bytes().unwrap().to_vec();
    Reply::Full {
        status,
        headers,
        body,
    }
}

/// A registry that asks for chunked uploads (`OCI-Chunk-Min-Length`) and refuses a
/// monolithic `PUT` with a body: cairn sends `PATCH`es with `Content-Range`, then a `PUT`.
#[test]
fn chunked_upload_when_the_registry_asks_for_it() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let patches = Arc::new(AtomicUsize::new(0));
    let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (upstream, n, addr) = (reg.addr.clone(), patches.clone(), me.clone());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let gate = TinyServer::start(move |req: &Request| {
        let gate = addr.get().unwrap().clone();
        if req.method == "PUT" && req.path.contains("/blobs/uploads/") && !req.body.is_empty() {
            return Reply::status(400);
        }
        if req.method == "PATCH" {
            assert!(req.headers.contains_key("content-range"), "{req:?}");
            n.fetch_add(1, Ordering::SeqCst);
        }
        let extra: &[(&str, &str)] = if req.method == "POST" {
            &[("OCI-Chunk-Min-Length", "1048576")]
        } else {
            &[]
        };
        forward(&http, &upstream, &gate, req, extra)
    });
    me.set(gate.addr.clone()).unwrap();
    let root = common::tempdir();
    let ctx = common::tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/base/busybox:1\nRUN head -c 3000000 /dev/urandom > /random\n",
            reg.addr
        ),
    )
    .unwrap();
    let dest = format!("{}/chunked/app:1", gate.addr);
    let out = common::run(
        common::cairn(root.path())
            .args(["build", "-q", "--format=json", "--push", "-t", &dest])
            .arg(ctx.path()),
    );
    assert!(out.status.success());
    let digest = json(&out)["pushed_digest"].as_str().unwrap().to_string();
    // Three 1 MiB chunks of the random layer at least (the config and busybox add more).
    assert!(patches.load(Ordering::SeqCst) >= 3);
    let m = skopeo_inspect(&format!("{}/chunked/app:1", reg.addr), &[]);
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    let pulled = common::tempdir();
    let out = common::run_ok(common::cairn(pulled.path()).args([
        "pull",
        "-q",
        &format!("{}/chunked/app:1", reg.addr),
    ]));
    assert_eq!(out.trim(), digest);
}

#[test]
fn bearer_token_flow_for_push() {
    let open = Registry::start();
    let (root, src) = store_with_busybox(&open);
    let target = Registry::start();
    let (gate, issued) = push_token_gate(&target.addr);
    let dest = format!("{}/private/busybox:1", gate.addr);

    let wrong = common::tempdir();
    docker_config(wrong.path(), &gate.addr, "alice", "nope");
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_CONFIG", wrong.path())
            .args(["push", "-q", &src, &dest]),
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token server") && err.contains("401"), "{err}");

    let good = common::tempdir();
    docker_config(good.path(), &gate.addr, "alice", "s3cret");
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_CONFIG", good.path())
            .args(["push", "-q", &src, &dest]),
    );
    assert!(out.status.success());
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "one token for the whole push"
    );
    let m = skopeo_inspect(&format!("{}/private/busybox:1", target.addr), &[]);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
}

/// A registry with a certificate from a CA made here: trusted once the CA is under
/// `$DOCKER_CONFIG/certs.d/HOST:PORT/`, refused with a clear error under a wrong CA.
#[test]
fn tls_with_a_ca_under_certs_d() {
    common::require_root();
    let open = Registry::start();
    let (root, src) = store_with_busybox(&open);
    let ns = Netns::new("tls");
    let ip = format!("{}.1", netns::SUBNET);
    ns.add_local_addr(&ip);
    let work = common::tempdir();
    let certs = netns::make_certs(&work.path().join("good"), "good", &ip);
    let wrong = netns::make_certs(&work.path().join("wrong"), "wrong", &ip);
    let reg = NetRegistry::start(&ns, &ip, 5443, Some(&certs));
    let dest = format!("{}/tls/busybox:1", reg.addr);

    let push = |docker_config: &Path| {
        common::run(
            ns.command(common::cairn_bin())
                .env("CAIRN_ROOT", root.path())
                .env("DOCKER_CONFIG", docker_config)
                .args(["push", "-q", &src, &dest]),
        )
    };
    let cfg = |ca: &Path, name: &str| {
        let dir = work.path().join(name);
        let d = dir.join("certs.d").join(&reg.addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(ca, d.join("ca.crt")).unwrap();
        dir
    };

    let out = push(&cfg(&wrong.ca, "cfg-wrong"));
    assert_eq!(out.status.code(), Some(4), "{}", reg.log());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&reg.addr), "names the registry: {err}");
    assert!(err.contains("certs.d"), "says where the CA goes: {err}");

    let out = push(&cfg(&certs.ca, "cfg-good"));
    assert!(out.status.success(), "{}", reg.log());
    let pushed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Pulled back over the same verified TLS into an empty store.
    let fresh = common::tempdir();
    let out = common::run(
        ns.command(common::cairn_bin())
            .env("CAIRN_ROOT", fresh.path())
            .env("DOCKER_CONFIG", work.path().join("cfg-good"))
            .args(["pull", "-q", &dest]),
    );
    assert!(out.status.success());
    assert_eq!(
        format!(
            "{}/tls/busybox@{}",
            reg.addr,
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        pushed
    );
}

/// A registry that fails the first upload of every blob (HTTP 500) and then works: the
/// push retries from a fresh session and succeeds; one that always fails is an error naming
/// the registry, the reference and the status.
#[test]
fn uploads_are_retried_and_failures_named() {
    let open = Registry::start();
    let (root, src) = store_with_busybox(&open);
    let target = Registry::start();
    let failed: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let always = Arc::new(AtomicBool::new(false));
    let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (upstream, seen, stuck, addr) = (
        target.addr.clone(),
        failed.clone(),
        always.clone(),
        me.clone(),
    );
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let gate = TinyServer::start(move |req: &Request| {
        if req.method == "PUT" && req.path.contains("/blobs/uploads/") {
            let digest = req.path.split("digest=").nth(1).unwrap_or("").to_string();
            if stuck.load(Ordering::SeqCst) || seen.lock().unwrap().insert(digest) {
                return Reply::status(500);
            }
        }
        if stuck.load(Ordering::SeqCst) && req.path.contains("mount=") {
            return Reply::status(404);
        }
        forward(&http, &upstream, addr.get().unwrap(), req, &[])
    });
    me.set(gate.addr.clone()).unwrap();

    let dest = format!("{}/retried/busybox:1", gate.addr);
    let out = common::run(common::cairn(root.path()).args(["push", "--format=json", &src, &dest]));
    assert!(out.status.success());
    assert_eq!(json(&out)["uploaded_blobs"], "2");
    assert_eq!(failed.lock().unwrap().len(), 2, "each blob failed once");

    always.store(true, Ordering::SeqCst);
    let dest = format!("{}/failing/busybox:1", gate.addr);
    let out = common::run(common::cairn(root.path()).args(["push", "-q", &src, &dest]));
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&gate.addr) && err.contains("failing/busybox") && err.contains("500"),
        "{err}"
    );
}
