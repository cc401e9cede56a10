//! The build cache shared through a registry, tested as several machines: network
//! namespaces joined on a private test subnet, the registry on one "host", builders with
//! their own stores on others. B, with an empty store and `--cache-from`, runs no step and
//! produces A's image digest; a one-line change built on B runs only the steps after it, and
//! A then hits B's new entries; an unreachable cache is a warning, not a failure; entries are
//! never replaced.

mod common;

use common::images::{self, LayerSrc, Layout};
use common::netns::{Lan, NetRegistry, Netns, SUBNET};
use common::registry::{Registry, Reply, Request, TinyServer};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const DOCKERFILE: &str = r#"FROM {BASE} AS tools
RUN echo "tool v1" > /tool && mkdir -p /opt/tools && echo helper > /opt/tools/helper
FROM {BASE}
ENV HOME=/home/coder
COPY --from=tools /tool /usr/local/share/tool
RUN echo "coder:x:1000:1000::/home/coder:/bin/sh" >> /etc/passwd && mkdir -p /home/coder && chown 1000:1000 /home/coder
COPY startup.sh /usr/local/bin/startup.sh
RUN echo one > /one
RUN echo two > /two
USER coder
WORKDIR /home/coder
"#;

/// One builder "host": a namespace with its own store and context.
struct Builder {
    ns: Netns,
    store: tempfile::TempDir,
    ctx: tempfile::TempDir,
    registry: String,
}

struct Built {
    json: serde_json::Value,
    stderr: String,
}

impl Built {
    /// Steps that ran (each executed step ends with a DONE line).
    fn ran(&self) -> usize {
        self.stderr
            .lines()
            .filter(|l| l.starts_with('#') && l.contains(" DONE "))
            .count()
    }
    fn get(&self, k: &str) -> String {
        self.json[k].as_str().unwrap_or_default().to_string()
    }
}

impl Builder {
    fn new(tag: &str, lan: &Lan, addr: &str, registry: &str) -> Builder {
        let ns = Netns::new(tag);
        lan.join(&ns, addr);
        let b = Builder {
            ns,
            store: common::tempdir(),
            ctx: common::tempdir(),
            registry: registry.to_string(),
        };
        b.write_context(DOCKERFILE);
        b
    }

    fn write_context(&self, dockerfile: &str) {
        let base = format!("{}/base/busybox:1", self.registry);
        std::fs::write(
            self.ctx.path().join("Dockerfile"),
            dockerfile.replace("{BASE}", &base),
        )
        .unwrap();
        std::fs::write(
            self.ctx.path().join("startup.sh"),
            "#!/bin/sh\nexec sleep infinity\n",
        )
        .unwrap();
    }

    fn build(&self, extra: &[&str]) -> Output {
        let out_dir = self.store.path().join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        let oci = format!("type=oci,dest={}", out_dir.display());
        let mut args = vec!["-o", &oci, "-t", "workspace:dev"];
        args.extend_from_slice(extra);
        self.build_with(&args)
    }

    fn build_with(&self, args: &[&str]) -> Output {
        common::run(
            self.ns
                .command(common::cairn_bin())
                .env("CAIRN_ROOT", self.store.path())
                .env_remove("SOURCE_DATE_EPOCH")
                .args(["build", "--progress=plain", "--format=json", "--explain"])
                .args(["--insecure-registry", &self.registry])
                .args(args)
                .arg(self.ctx.path()),
        )
    }

    fn build_ok(&self, extra: &[&str]) -> Built {
        let out = self.build(extra);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{stderr}");
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        Built { json, stderr }
    }
}

/// Pushes the busybox base into the registry from inside `ns` with skopeo.
fn push_base(ns: &Netns, registry: &str, work: &Path) {
    let layout = Layout::new(&work.join("base-layout"));
    let m = layout.image(
        &[LayerSrc::Entries(images::busybox_entries())],
        "amd64",
        None,
    );
    layout.tag(&m);
    common::run_ok(ns.command("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.dir.display()),
        &format!("docker://{registry}/base/busybox:1"),
    ]));
}

#[test]
fn builders_on_two_hosts_share_steps_through_the_registry() {
    common::require_root();
    let hub = Netns::new("rc-reg");
    let reg_ip = format!("{SUBNET}.1");
    let lan = Lan::new(&hub, &reg_ip);
    let reg = NetRegistry::start(&hub, &reg_ip, 5000, None);
    let work = common::tempdir();
    push_base(&hub, &reg.addr, work.path());
    let a = Builder::new("rc-a", &lan, &format!("{SUBNET}.2"), &reg.addr);
    let b = Builder::new("rc-b", &lan, &format!("{SUBNET}.3"), &reg.addr);
    let cache = format!("{}/cache/workspace", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    // A builds everything and exports every stage's steps.
    let built_a = a.build_ok(&["--cache-to", &to]);
    assert_eq!(built_a.ran(), 9, "{}", built_a.stderr);
    assert!(
        built_a.stderr.contains("cache export to") && built_a.stderr.contains("9 entries written"),
        "{}",
        built_a.stderr
    );

    // B, empty store: every step from the registry, nothing runs, the same image.
    let built_b = b.build_ok(&["--cache-from", &from]);
    assert_eq!(built_b.ran(), 0, "B ran steps:\n{}", built_b.stderr);
    assert_eq!(built_b.get("steps_cached"), "9/9");
    assert_eq!(
        built_b.get("manifest_digest"),
        built_a.get("manifest_digest")
    );
    assert_eq!(built_b.get("image_id"), built_a.get("image_id"));
    assert!(
        built_b
            .stderr
            .contains(&format!("hit: registry cache {cache}")),
        "--explain names where the hit came from:\n{}",
        built_b.stderr
    );

    // D, empty store, only pushes: its layers are mounted from the cache repository and
    // never cross D (only the base, pulled for FROM, is stored).
    let d = Builder::new("rc-d", &lan, &format!("{SUBNET}.5"), &reg.addr);
    let image = format!("{}/team/workspace:1", reg.addr);
    let out = d.build_with(&[
        "--cache-from",
        &from,
        "-o",
        &format!("type=registry,name={image},compression=zstd"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["image_id"], built_a.json["image_id"]);
    let manifest = common::run_ok(hub.command("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let ours: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd"))
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(ours.len(), 5, "{manifest}");
    for digest in ours {
        let hex = digest.trim_start_matches("sha256:");
        assert!(
            !d.store.path().join("blobs/sha256").join(hex).exists(),
            "layer {digest} was fetched by a builder that only pushed"
        );
    }

    // A one-line change on B: only that step and the ones after it run; B exports them.
    let changed = DOCKERFILE.replace("echo two > /two", "echo TWO > /two");
    b.write_context(&changed);
    let built_b2 = b.build_ok(&["--cache-from", &from, "--cache-to", &to]);
    assert_eq!(
        built_b2.ran(),
        3,
        "RUN two, USER, WORKDIR:\n{}",
        built_b2.stderr
    );
    assert!(
        built_b2
            .stderr
            .contains("no machine has built this key yet"),
        "{}",
        built_b2.stderr
    );
    assert!(
        built_b2.stderr.contains("3 entries written"),
        "{}",
        built_b2.stderr
    );

    // A builds the same change: B's new entries are hits, nothing runs.
    a.write_context(&changed);
    let built_a2 = a.build_ok(&["--cache-from", &from]);
    assert_eq!(built_a2.ran(), 0, "{}", built_a2.stderr);
    assert_eq!(
        built_a2.get("manifest_digest"),
        built_b2.get("manifest_digest")
    );

    // Re-exporting never replaces an entry.
    let again = a.build_ok(&["--cache-from", &from, "--cache-to", &to]);
    assert!(
        again.stderr.contains("0 entries written, 9 already there"),
        "{}",
        again.stderr
    );

    // An unreachable cache is a warning; the build runs the steps itself.
    let c = Builder::new("rc-c", &lan, &format!("{SUBNET}.4"), &reg.addr);
    let dead = format!("type=registry,ref={}:5999/cache/workspace", reg_ip);
    let out = c.build(&[
        "--cache-from",
        &dead,
        "--insecure-registry",
        &format!("{reg_ip}:5999"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: cache import from"), "{stderr}");
    drop(reg);
}

/// Every entry in cache repository `repo` of the registry at `addr` is readable: its
/// manifest, its state blob and every layer are there, and the state lists exactly the
/// manifest's layers. Returns the number of entries.
fn check_entries(addr: &str, repo: &str) -> usize {
    let http = reqwest::blocking::Client::new();
    let tags: serde_json::Value = http
        .get(format!("http://{addr}/v2/{repo}/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tags: Vec<String> = tags["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .filter(|t| t.len() == 64)
        .collect();
    for t in &tags {
        let m: serde_json::Value = http
            .get(format!("http://{addr}/v2/{repo}/manifests/{t}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.cairn.step-state.v1+json"
        );
        let state: serde_json::Value = http
            .get(format!(
                "http://{addr}/v2/{repo}/blobs/{}",
                m["config"]["digest"].as_str().unwrap()
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let listed: Vec<&serde_json::Value> = state["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"])
            .collect();
        let layers = m["layers"].as_array().unwrap();
        let in_manifest: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
        assert_eq!(listed, in_manifest, "entry {t}");
        for l in layers {
            let d = l["digest"].as_str().unwrap();
            let st = http
                .head(format!("http://{addr}/v2/{repo}/blobs/{d}"))
                .send()
                .unwrap()
                .status();
            assert_eq!(st.as_u16(), 200, "entry {t}: layer {d} missing");
        }
    }
    tags.len()
}

fn local_context(reg: &Registry, dockerfile: &str) -> tempfile::TempDir {
    let ctx = common::tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        dockerfile.replace("{BASE}", &format!("{}/base/busybox:1", reg.addr)),
    )
    .unwrap();
    std::fs::write(ctx.path().join("startup.sh"), "#!/bin/sh\n").unwrap();
    ctx
}

fn local_build(root: &Path, ctx: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = common::cairn(root);
    c.args(["build", "--progress=plain", "--format=json", "-o"])
        .arg(format!("type=oci,dest={}", root.join("out").display()))
        .args(extra)
        .arg(ctx);
    c
}

/// Four builders export the same steps to one cache at once (one step's output differs on
/// every machine): every entry stays readable and consistent, and a fifth builder gets a
/// complete image from it without running a step.
#[test]
fn four_builders_exporting_at_once_leave_consistent_entries() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let dockerfile = DOCKERFILE.replace("echo one > /one", "head -c 64 /dev/urandom > /one");
    let ctx = local_context(&reg, &dockerfile);
    let cache = format!("{}/cache/shared", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let roots: Vec<tempfile::TempDir> = (0..4).map(|_| common::tempdir()).collect();
    let children: Vec<std::process::Child> = roots
        .iter()
        .map(|r| {
            local_build(r.path(), ctx.path(), &["--cache-to", &to])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(check_entries(&reg.addr, "cache/shared"), 9);

    let fresh = common::tempdir();
    let out = common::run(&mut local_build(
        fresh.path(),
        ctx.path(),
        &["--cache-from", &format!("type=registry,ref={cache}")],
    ));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" DONE ")).count(),
        0,
        "{stderr}"
    );
}

/// A builder killed while its export hangs in a layer upload leaves no entry whose blobs
/// are missing: the manifest of an entry is written only after all its blobs.
#[test]
fn a_builder_killed_mid_export_leaves_no_broken_entry() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let hung = Arc::new(AtomicUsize::new(0));
    let me: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (upstream, h, addr) = (reg.addr.clone(), hung.clone(), me.clone());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let puts = Arc::new(AtomicUsize::new(0));
    let p = puts.clone();
    let gate = TinyServer::start(move |req: &Request| {
        // The third layer upload never finishes.
        let upload =
            req.method == "PUT" && req.path.contains("/blobs/uploads/") && req.body.len() > 200;
        if upload && p.fetch_add(1, Ordering::SeqCst) == 2 {
            h.fetch_add(1, Ordering::SeqCst);
            return Reply::Hang;
        }
        forward(&http, &upstream, addr.get().unwrap(), req)
    });
    me.set(gate.addr.clone()).unwrap();
    let ctx = local_context(&reg, DOCKERFILE);
    let root = common::tempdir();
    let to = format!("type=registry,ref={}/cache/killed,mode=max", gate.addr);
    let mut child = local_build(root.path(), ctx.path(), &["--cache-to", &to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while hung.load(Ordering::SeqCst) == 0 {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the build ended ({st}) before its export reached the hanging upload");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let entries = check_entries(&reg.addr, "cache/killed");
    assert!(entries < 9, "the export was cut short ({entries} entries)");
}

/// `req` sent on to the registry at `upstream` with its body; `Location`s rewritten to `gate`.
fn forward(http: &reqwest::blocking::Client, upstream: &str, gate: &str, req: &Request) -> Reply {
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
            headers.push((h.to_string(), v.to_str().unwrap().replace(upstream, gate)));
        }
    }
    let body = resp.bytes().unwrap().to_vec();
    Reply::Full {
        status,
        headers,
        body,
    }
}

/// An export to a registry that is down is a warning by default and an error (exit 4,
/// naming the registry) with `ignore-error=false`; the image is built either way.
#[test]
fn a_failed_export_is_a_warning_unless_asked_otherwise() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let ctx = local_context(&reg, DOCKERFILE);
    let dead = format!("127.0.0.1:{}", common::registry::free_port());
    let root = common::tempdir();
    let out = common::run(&mut local_build(
        root.path(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={dead}/cache/x")],
    ));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: cache export to {dead}/cache/x failed")),
        "{stderr}"
    );
    let out = common::run(&mut local_build(
        root.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={dead}/cache/x,ignore-error=false"),
        ],
    ));
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead));
}

/// `cairn cache prune --registry`: young entries stay with --keep-duration, --all removes
/// every entry (and only entries), after which a builder finds nothing.
#[test]
fn prune_removes_registry_cache_entries() {
    common::require_root();
    let reg = Registry::start();
    images::push_busybox(&reg, "base/busybox:1");
    let ctx = local_context(&reg, DOCKERFILE);
    let cache = format!("{}/cache/pruned", reg.addr);
    let root = common::tempdir();
    let out = common::run(&mut local_build(
        root.path(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    ));
    assert!(out.status.success());
    images::push_busybox(&reg, "cache/pruned:not-an-entry");
    let prune = |extra: &[&str]| {
        common::run_ok(
            common::cairn(root.path())
                .args(["cache", "prune", "--registry", &cache])
                .args(extra),
        )
    };
    assert!(prune(&["--keep-duration", "7d"]).contains("removed 0 cache entries, kept 9"));
    assert!(prune(&["--all"]).contains("removed 9 cache entries, kept 0"));
    assert_eq!(check_entries(&reg.addr, "cache/pruned"), 0);
    let other = reqwest::blocking::Client::new()
        .head(format!(
            "http://{}/v2/cache/pruned/manifests/not-an-entry",
            reg.addr
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(other.status().as_u16(), 200, "other tags are left alone");
    let fresh = common::tempdir();
    let out = common::run(&mut local_build(
        fresh.path(),
        ctx.path(),
        &["--cache-from", &format!("type=registry,ref={cache}")],
    ));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.contains(" DONE ")).count(), 9);
}
