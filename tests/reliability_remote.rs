//! Faults on the remote paths (issue 18): a registry that lies during a push, a poisoned
//! shared-cache entry, SIGKILL during a push and during a cache export, SIGKILL during a RUN
//! with cache, bind and secret mounts, the registry's disk full during a push and a cache
//! export, the cache registry killed mid-export. After each: never a wrong image (a clear error or a
//! fall back to building), `cairn cache verify` clean, no stray mount or process, no secret
//! left on disk, the registry never holding a tag whose blobs are missing, and the next
//! push, export or build completing with the uninterrupted digest.
//!
//! The short form (default, `scripts/test`) tries 4 kill points per fault;
//! `CAIRN_RELIABILITY_KILLS=N` (or `CAIRN_RELIABILITY_FULL=1`, 16) tries more.

mod common;
mod reliability_support;

use common::registry::{Registry, Reply, TinyServer};
use reliability_support::{
    assert_every_tag_complete, assert_verify_clean, build_cmd, check_tags, http, kills, manifest,
    mounts_under, run_build, tag_digest, tags, warnings, Marker, Running,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proxy in front of `upstream` that answers every blob `HEAD` with 200 ("I have it")
/// and forwards the rest.
fn lying_proxy(upstream: &str) -> TinyServer {
    proxy(upstream, Lie::BlobHead, Arc::default())
}

/// What [`proxy`] lies about.
#[derive(Clone, Copy, PartialEq)]
enum Lie {
    Nothing,
    /// Every blob `HEAD` answered 200 by the proxy.
    BlobHead,
    /// A manifest `PUT`'s `Docker-Content-Digest` replaced by another digest.
    ManifestDigest,
}

/// A proxy in front of `upstream` that notes each request's method and path in `log`
/// and lies as `lie` says.
fn proxy(upstream: &str, lie: Lie, log: Arc<Mutex<Vec<String>>>) -> TinyServer {
    let up = upstream.to_string();
    TinyServer::start(move |req| {
        log.lock()
            .unwrap()
            .push(format!("{} {}", req.method, req.path));
        if lie == Lie::BlobHead && req.method == "HEAD" && req.path.contains("/blobs/sha256:") {
            let d = req.path.rsplit('/').next().unwrap_or("").to_string();
            return Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Length".into(), "1234".into()),
                    ("Docker-Content-Digest".into(), d),
                ],
                body: vec![],
            };
        }
        let mut s = TcpStream::connect(&up).unwrap();
        let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
        for (k, v) in &req.headers {
            if k != "connection" && k != "content-length" {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str(&format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            req.body.len()
        ));
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&req.body).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if lie == Lie::ManifestDigest && req.method == "PUT" && req.path.contains("/manifests/") {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let bogus = format!("sha256:{}", "0".repeat(64));
            let out: Vec<String> = text
                .split("\r\n")
                .map(|l| {
                    if l.to_ascii_lowercase().starts_with("docker-content-digest:") {
                        format!("Docker-Content-Digest: {bogus}")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            return Reply::Raw(out.join("\r\n").into_bytes());
        }
        Reply::Raw(raw)
    })
}

fn write_ctx(dir: &Path, dockerfile: &str) {
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("app.txt"), "hello from the context\n").unwrap();
    // Bytes gzip cannot shrink, so a push and an export take a moment.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let big: Vec<u8> = (0..(8usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
}

fn dockerfile(base: &str, marker: &str) -> String {
    format!(
        "FROM {base}
COPY big.bin /big.bin
RUN echo step > /step; seq 1 3000 > /seq # {marker}
COPY app.txt /app.txt
RUN cat /app.txt > /copy # {marker}
"
    )
}

/// Fault 1: a registry that claims to have every blob: the push fails (exit 4, naming the
/// registry, the reference and the status), no tag appears, the local store stays clean,
/// and a push to the honest registry then completes.
#[test]
fn a_registry_that_lies_about_blobs_gets_no_tag() {
    common::require_root();
    let m = Marker::new("liar");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let liar = lying_proxy(&reg.addr);
    let root = common::tempdir();
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );
    let out = ctx.path().join("out.tar");
    let local = format!("{}/app/web:1", liar.addr);
    let built = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["-t", &local],
    ));
    built.assert_ok("build");

    let o = m
        .cairn(root.path())
        .args(["push", &local])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "push to a lying registry: {err}");
    assert!(
        err.contains(&liar.addr)
            && err.contains("app/web")
            && err.contains("400")
            && err.contains("MANIFEST_BLOB_UNKNOWN"),
        "the error names registry, reference and status: {err}"
    );
    assert!(
        manifest(&reg.addr, "app/web", "1").is_none(),
        "the registry holds a tag whose blobs were never sent"
    );
    assert_verify_clean(&m, root.path(), "after the lying push");
    // No blob is remembered as living in the liar's repository (a mount hint).
    let hints: Vec<String> =
        files_containing(&[root.path()], &liar.addr, Path::new("/nonexistent"))
            .into_iter()
            .filter(|f| f.contains("blob-repos"))
            .collect();
    assert!(hints.is_empty(), "the lie was recorded: {hints:?}");
    eprintln!(
        "RELIABILITY liar blob HEAD: exit 4: {}",
        err.lines().last().unwrap_or("")
    );

    // A registry that reports another digest for the manifest it stored: a failure too.
    let wrong = proxy(&reg.addr, Lie::ManifestDigest, Arc::default());
    let o = m
        .cairn(root.path())
        .args(["push", &local, &format!("{}/app/wrong:1", wrong.addr)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "wrong manifest digest: {err}");
    assert!(
        err.contains(&wrong.addr) && err.contains("app/wrong") && err.contains("sha256:0000"),
        "the error names the reference and the digest the registry gave: {err}"
    );
    assert_verify_clean(&m, root.path(), "after the wrong-digest push");
    eprintln!("RELIABILITY liar manifest digest: exit 4: {}", err.trim());

    let honest = format!("{}/app/web:1", reg.addr);
    let o = m
        .cairn(root.path())
        .args(["push", "--format=json", &local, &honest])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "honest push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        Some(j["digest"].as_str().unwrap().to_string()),
        tag_digest(&reg.addr, "app/web", "1")
    );
    assert_eq!(
        assert_every_tag_complete(&reg.addr, "app/web", "honest push"),
        1
    );
    assert_verify_clean(&m, root.path(), "after the honest push");
}

/// The registry's file for blob `d` (the filesystem storage driver's layout).
fn blob_file(reg: &Registry, d: &str) -> PathBuf {
    let hex = d.trim_start_matches("sha256:");
    reg.scratch("x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Uploads `bytes` as a blob of `repo`; its digest.
fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let d = format!("sha256:{}", cairn::Digest::of_bytes(bytes).hex());
    let r = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let loc = r.header("Location").unwrap();
    let loc = loc
        .split_once(addr)
        .map(|(_, p)| p.to_string())
        .unwrap_or(loc);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http(addr, "PUT", &format!("{loc}{sep}digest={d}"), &[], bytes);
    assert_eq!(r.status, 201, "blob PUT: {}", r.head);
    d
}

fn put_manifest(addr: &str, repo: &str, tag: &str, m: &serde_json::Value) {
    let body = serde_json::to_vec(m).unwrap();
    let mt = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let r = http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", &mt)],
        &body,
    );
    assert_eq!(
        r.status,
        201,
        "manifest PUT: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Fault 2: poisoned shared-cache entries — a state whose layers disagree with its manifest,
/// a state whose config is not what the step gives (an Env the Dockerfile never set), layers
/// whose diffID is not what they decompress to, layer bytes that do not match their digest —
/// never give a wrong image and never fail the build: it falls back to building the steps
/// (a warning naming the cache entry and what was wrong), the digest is the one built
/// without cache, the local store verifies clean and its next build is the honest one.
#[test]
fn a_poisoned_cache_entry_never_gives_a_wrong_image() {
    common::require_root();
    let m = Marker::new("poison");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );
    let cache = format!("{}/cache/poison", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    // The honest digest: built without any cache.
    let a = common::tempdir();
    let out = a.path().join("out.tar");
    let honest = run_build(&mut build_cmd(
        &m,
        a.path(),
        ctx.path(),
        &out,
        &["--cache-to", &to],
    ));
    let (_, want) = honest.assert_ok("honest build").digests();
    let entries = tags(&reg.addr, "cache/poison");
    assert!(entries.len() >= 4, "the export wrote entries: {entries:?}");
    let base_layers: Vec<String> = manifest(&reg.addr, "base/busybox", "1").unwrap()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();

    // A build from a fresh store reading the poisoned cache: it succeeds with the honest
    // digest, and some warning contains every one of `named`.
    let check = |what: &str, named: &[&str]| {
        let b = common::tempdir();
        let out = b.path().join("out.tar");
        let got = run_build(&mut build_cmd(
            &m,
            b.path(),
            ctx.path(),
            &out,
            &["--cache-from", &from],
        ));
        let warned = warnings(&got);
        assert_eq!(
            got.code,
            Some(0),
            "{what}: the build did not fall back to building:\n{}",
            got.stderr
        );
        assert_eq!(got.digests().1, want, "{what}: a wrong image");
        assert!(
            warned.iter().any(|w| named.iter().all(|n| w.contains(n))),
            "{what}: no warning names {named:?}: {warned:#?}"
        );
        eprintln!("RELIABILITY poison {what}: exit 0, honest digest; warnings: {warned:?}");
        assert_verify_clean(&m, b.path(), what);
        // The store then builds the honest image (nothing wrong was recorded).
        let again = run_build(&mut build_cmd(&m, b.path(), ctx.path(), &out, &[]));
        assert_eq!(
            again.assert_ok(what).digests().1,
            want,
            "{what}: next build"
        );
    };

    // (a) A state whose layers are not its manifest's: every entry's manifest loses its
    // last layer (the registry has all blobs, so it takes the manifest).
    let originals: Vec<(String, serde_json::Value)> = entries
        .iter()
        .map(|t| (t.clone(), manifest(&reg.addr, "cache/poison", t).unwrap()))
        .collect();
    for (t, man) in &originals {
        let mut bad = man.clone();
        if bad["layers"].as_array().unwrap().len() > 1 {
            bad["layers"].as_array_mut().unwrap().pop();
            put_manifest(&reg.addr, "cache/poison", t, &bad);
        }
    }
    check("state disagrees with manifest", &[&cache, "other layers"]);

    // Every entry's state rewritten by `edit` (a writer of the cache ref can do this: the
    // trust model), under the honest manifest's layers.
    let rewrite_states = |edit: &dyn Fn(&mut serde_json::Value)| {
        for (t, man) in &originals {
            let cfg = man["config"]["digest"].as_str().unwrap();
            let r = http(
                &reg.addr,
                "GET",
                &format!("/v2/cache/poison/blobs/{cfg}"),
                &[],
                b"",
            );
            let mut state: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let text = serde_json::to_string(&state).unwrap();
            edit(&mut state);
            assert_ne!(text, serde_json::to_string(&state).unwrap(), "{t}: edited");
            let bytes = serde_json::to_vec(&state).unwrap();
            let d = put_blob(&reg.addr, "cache/poison", &bytes);
            let mut bad = man.clone();
            bad["config"]["digest"] = d.into();
            bad["config"]["size"] = bytes.len().into();
            put_manifest(&reg.addr, "cache/poison", t, &bad);
        }
    };

    // (b) A config that disagrees with the step: an Env the Dockerfile never set.
    rewrite_states(&|state| {
        let env = find_key_mut(state, "Env").expect("state has an Env");
        env.as_array_mut()
            .unwrap()
            .push(serde_json::Value::from("POISON=1"));
    });
    check("state with another config", &[&cache, "disagrees", "Env"]);

    // (c) Layers whose diffID is not what they decompress to (the state's layer list and
    // its config's diff_ids agree, so only decompressing the bytes shows it).
    let ours: Vec<(String, String)> = originals
        .iter()
        .flat_map(|(_, man)| {
            let cfg = man["config"]["digest"].as_str().unwrap();
            let r = http(
                &reg.addr,
                "GET",
                &format!("/v2/cache/poison/blobs/{cfg}"),
                &[],
                b"",
            );
            let state: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            state["layers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| !base_layers.iter().any(|b| l["digest"] == b.as_str()))
                .map(|l| {
                    let diff = l["diff_id"].as_str().unwrap().to_string();
                    let bogus = format!(
                        "sha256:{}",
                        cairn::Digest::of_bytes(format!("poison {diff}").as_bytes()).hex()
                    );
                    (diff, bogus)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!ours.is_empty(), "the entries list layers of ours");
    rewrite_states(&|state| {
        let mut text = serde_json::to_string(state).unwrap();
        for (diff, bogus) in &ours {
            text = text.replace(diff.as_str(), bogus);
        }
        *state = serde_json::from_str(&text).unwrap();
    });
    check("diffID does not match the layer", &[&cache, "diffID"]);

    // (d) Layer bytes that do not match their digest: restore the honest manifests, then
    // overwrite the registry's copy of every layer of ours (not the base's) with other
    // bytes of the same length.
    let mut corrupted = Vec::new();
    for (t, man) in &originals {
        put_manifest(&reg.addr, "cache/poison", t, man);
        for l in man["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            if base_layers.iter().any(|b| b == d) || corrupted.iter().any(|c| c == d) {
                continue;
            }
            let f = blob_file(&reg, d);
            let mut bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for b in bytes.iter_mut().skip(64).step_by(97) {
                *b ^= 0x5a;
            }
            std::fs::write(&f, bytes).unwrap();
            corrupted.push(d.to_string());
        }
    }
    check(
        "layer bytes do not match their digest",
        &[&cache, &corrupted[0][..20], "hashes to"],
    );
}

/// `--cache-from` only reads: a build from an empty store through a recording proxy, a hit
/// for every step and then (a changed Dockerfile) misses, sends nothing but `GET` and
/// `HEAD` to the cache ref, and the cache's tags and manifests are unchanged after.
#[test]
fn cache_from_only_reads() {
    common::require_root();
    let m = Marker::new("readonly");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    let df = dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name);
    write_ctx(ctx.path(), &df);
    let to = format!("type=registry,ref={}/cache/ro,mode=max", reg.addr);
    let a = common::tempdir();
    let out = a.path().join("out.tar");
    let want = run_build(&mut build_cmd(
        &m,
        a.path(),
        ctx.path(),
        &out,
        &["--cache-to", &to],
    ))
    .assert_ok("export")
    .digests()
    .1;
    let before: Vec<_> = tags(&reg.addr, "cache/ro")
        .into_iter()
        .map(|t| (tag_digest(&reg.addr, "cache/ro", &t), t))
        .collect();

    let log = Arc::new(Mutex::new(Vec::new()));
    let p = proxy(&reg.addr, Lie::Nothing, log.clone());
    let from = format!("type=registry,ref={}/cache/ro", p.addr);
    let b = common::tempdir();
    let out = b.path().join("out.tar");
    let got = run_build(&mut build_cmd(
        &m,
        b.path(),
        ctx.path(),
        &out,
        &["--cache-from", &from],
    ));
    assert_eq!(got.assert_ok("from cache").digests().1, want);
    assert!(
        !log.lock().unwrap().is_empty(),
        "the cache was read through the proxy"
    );
    std::fs::write(
        ctx.path().join("Dockerfile"),
        df.replace("seq 1 3000", "seq 1 3001"),
    )
    .unwrap();
    let c = common::tempdir();
    let out = c.path().join("out.tar");
    run_build(&mut build_cmd(
        &m,
        c.path(),
        ctx.path(),
        &out,
        &["--cache-from", &from],
    ))
    .assert_ok("partial hit");
    let seen = log.lock().unwrap().clone();
    let writes: Vec<&String> = seen
        .iter()
        .filter(|l| !l.starts_with("GET ") && !l.starts_with("HEAD "))
        .collect();
    assert!(writes.is_empty(), "--cache-from wrote: {writes:?}");
    let after: Vec<_> = tags(&reg.addr, "cache/ro")
        .into_iter()
        .map(|t| (tag_digest(&reg.addr, "cache/ro", &t), t))
        .collect();
    assert_eq!(before, after, "the cache changed");
    eprintln!(
        "RELIABILITY cache-from read-only: {} requests, all GET/HEAD",
        seen.len()
    );
}

fn find_key_mut<'a>(v: &'a mut serde_json::Value, key: &str) -> Option<&'a mut serde_json::Value> {
    match v {
        serde_json::Value::Object(o) => {
            if o.get(key).is_some_and(|x| x.is_array()) {
                return o.get_mut(key);
            }
            o.values_mut().find_map(|x| find_key_mut(x, key))
        }
        _ => None,
    }
}

/// When the build's last step reported `done` (or came from the cache), if it has.
fn last_step_done(seen: &[reliability_support::Seen]) -> Option<Duration> {
    let mut total = None;
    for s in seen {
        let Some(e) = s.event() else { continue };
        if e["event"] == "step" {
            total = e["total"].as_u64();
        }
        if e["event"] == "done" && total.is_some() && e["step"].as_u64() == total {
            return Some(s.at);
        }
    }
    None
}

/// Fault 3a: SIGKILL during a push: the registry never holds a tag whose blobs are missing, the
/// store verifies clean, the next push completes with the image's digest.
#[test]
fn sigkill_during_push_leaves_no_tag_without_blobs() {
    common::require_root();
    let m = Marker::new("killpush");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let root = common::tempdir();
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );
    let out = ctx.path().join("out.tar");
    let local = "local/app:1";
    let built = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["-t", local],
    ));
    built.assert_ok("build");

    // How long an uninterrupted push into an empty registry takes (the shorter of two,
    // so the kills land inside a warm push).
    let mut span = Duration::MAX;
    let mut want = String::new();
    for _ in 0..2 {
        let timing = Registry::start();
        let t0 = Instant::now();
        let o = m
            .cairn(root.path())
            .args([
                "push",
                "--format=json",
                local,
                &format!("{}/app/web:1", timing.addr),
            ])
            .output()
            .unwrap();
        span = span.min(t0.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        want = j["digest"].as_str().unwrap().to_string();
    }

    let n = kills();
    let (mut survived, mut landed) = (0, 0);
    for i in 0..n {
        // A fresh registry per kill, so every blob has to be sent.
        let target = Registry::start();
        let dest = format!("{}/app/web:1", target.addr);
        let at = span.mul_f64((i as f64 + 0.5) / n as f64);
        let mut run = Running::spawn(m.cairn(root.path()).args(["push", local, &dest]));
        let killed = run.kill_when(|t, _| t >= at);
        landed += killed as usize;
        let what = format!("push kill {i} at {at:?} (killed: {killed})");
        assert!(m.strays().is_empty(), "{what}: processes left");
        assert_every_tag_complete(&target.addr, "app/web", &what);
        assert_verify_clean(&m, root.path(), &what);
        let o = m
            .cairn(root.path())
            .args(["push", "--format=json", local, &dest])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{what}: next push: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["digest"], want.as_str(), "{what}");
        assert_eq!(assert_every_tag_complete(&target.addr, "app/web", &what), 1);
        survived += 1;
        eprintln!("{what}: survived");
    }
    eprintln!("RELIABILITY push-sigkill tries={n} killed-mid-push={landed} survived={survived}");
    assert!(
        landed * 2 >= n,
        "only {landed} of {n} kills landed inside a push"
    );
}

/// Fault 3b: SIGKILL during a build with `--cache-to` (spread over the build and its export):
/// every tag of the cache ref names blobs the registry has, the store verifies clean, the
/// next build exports, and a fresh store reading the cache gets the uninterrupted digest.
#[test]
fn sigkill_during_cache_export_leaves_no_entry_without_blobs() {
    common::require_root();
    let m = Marker::new("killexport");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );

    // The uninterrupted build, into a cache of its own: how long its export (from the
    // last step's `done` to the end) takes.
    let first = common::tempdir();
    let out = first.path().join("out.tar");
    let to0 = format!("type=registry,ref={}/cache/timing,mode=max", reg.addr);
    let mut run = Running::spawn(&mut build_cmd(
        &m,
        first.path(),
        ctx.path(),
        &out,
        &["--cache-to", &to0],
    ));
    assert_eq!(run.wait(), Some(0), "uninterrupted build failed");
    let end = run.started.elapsed();
    let done = last_step_done(&run.seen).expect("the last step's done event");
    let span = end.saturating_sub(done);
    let b = run_build(&mut build_cmd(&m, first.path(), ctx.path(), &out, &[]));
    let (_, want) = b.assert_ok("uninterrupted").digests();

    let n = kills();
    let (mut survived, mut landed) = (0, 0);
    for i in 0..n {
        let repo = format!("cache/k{i}");
        let to = format!("type=registry,ref={}/{repo},mode=max", reg.addr);
        let root = common::tempdir();
        let out = root.path().join("out.tar");
        // Spread over the export: after the last step is done.
        let after = span.mul_f64(i as f64 / n as f64);
        let mut run = Running::spawn(&mut build_cmd(
            &m,
            root.path(),
            ctx.path(),
            &out,
            &["--cache-to", &to],
        ));
        let killed = run.kill_when(|t, seen| last_step_done(seen).is_some_and(|d| t >= d + after));
        landed += killed as usize;
        let at = after;
        let what = format!("export kill {i} at done+{at:?} (killed: {killed})");
        assert!(m.strays().is_empty(), "{what}: processes left");
        assert!(
            mounts_under(&[root.path()]).is_empty(),
            "{what}: mounts left"
        );
        let entries = assert_every_tag_complete(&reg.addr, &repo, &what);
        assert_verify_clean(&m, root.path(), &what);
        let next = run_build(&mut build_cmd(
            &m,
            root.path(),
            ctx.path(),
            &out,
            &["--cache-to", &to],
        ));
        assert_eq!(
            next.assert_ok(&what).digests().1,
            want,
            "{what}: next build"
        );
        let after = assert_every_tag_complete(&reg.addr, &repo, &what);
        assert!(
            after >= 4 && after >= entries,
            "{what}: export completed ({after} entries)"
        );
        // A fresh store reading the cache: the uninterrupted digest.
        let fresh = common::tempdir();
        let fout = fresh.path().join("out.tar");
        let from = format!("type=registry,ref={}/{repo}", reg.addr);
        let got = run_build(&mut build_cmd(
            &m,
            fresh.path(),
            ctx.path(),
            &fout,
            &["--cache-from", &from],
        ));
        assert_eq!(
            got.assert_ok(&what).digests().1,
            want,
            "{what}: from the cache"
        );
        assert_verify_clean(&m, fresh.path(), &what);
        survived += 1;
        eprintln!("{what}: survived ({entries} entries before, {after} after)");
    }
    eprintln!(
        "RELIABILITY export-sigkill tries={n} killed-mid-export={landed} survived={survived}"
    );
    assert!(
        landed * 2 >= n,
        "only {landed} of {n} kills landed inside an export"
    );
}

/// Whether a `step` event is the mounted RUN's.
fn is_mount_step(e: &serde_json::Value) -> bool {
    e["text"].as_str().is_some_and(|t| t.contains("--mount"))
}

/// Files under `dirs` (not `except`) whose bytes contain `needle`.
fn files_containing(dirs: &[&Path], needle: &str, except: &Path) -> Vec<String> {
    let out = std::process::Command::new("grep")
        .args(["-rlsF", "--devices=skip", "--", needle])
        .args(dirs)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !Path::new(l).starts_with(except))
        .map(String::from)
        .collect()
}

/// Fault 4: SIGKILL during a RUN with cache, bind and secret mounts: no mount and no process
/// left, the secret's bytes nowhere on disk (store, /tmp, /var/tmp), the store verifies
/// clean, and the next build gives the uninterrupted digest.
#[test]
fn sigkill_during_run_with_mounts_leaves_no_mount_or_secret() {
    common::require_root();
    let m = Marker::new("killmounts");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    let secret_dir = common::tempdir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("cairn-kill-s3cret-{}-{nanos:x}", std::process::id());
    let secret_file = secret_dir.path().join("tok");
    std::fs::write(&secret_file, &secret).unwrap();
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    write_ctx(
        ctx.path(),
        &format!(
            "FROM {}/base/busybox:1
RUN --mount=type=cache,target=/cache,sharing=locked --mount=type=bind,source=app.txt,target=/ctx/app.txt --mount=type=secret,id=tok,required \
    set -e; cat /ctx/app.txt > /out; test -s /run/secrets/tok && echo has-secret >> /out; \
    for i in $(seq 1 20); do echo $i >> /cache/log; sleep 0.05; done; echo END # {}
RUN echo after > /after # {}
",
            reg.addr, m.name, m.name
        ),
    );
    let extra = ["--secret", secret_arg.as_str()];

    // The uninterrupted build: its digest, and how long the mounted RUN takes.
    let first = common::tempdir();
    let out = first.path().join("out.tar");
    let mut run = Running::spawn(&mut build_cmd(&m, first.path(), ctx.path(), &out, &extra));
    assert_eq!(run.wait(), Some(0), "uninterrupted build failed");
    let events: Vec<(Duration, serde_json::Value)> = run
        .seen
        .iter()
        .filter_map(|s| Some((s.at, s.event()?)))
        .collect();
    let (run_start, mount_no) = events
        .iter()
        .find(|(_, e)| e["event"] == "step" && is_mount_step(e))
        .map(|(t, e)| (*t, e["step"].clone()))
        .expect("the mounted RUN started");
    let run_done = events
        .iter()
        .find(|(_, e)| e["event"] == "done" && e["step"] == mount_no)
        .map(|(t, _)| *t)
        .expect("the mounted RUN done");
    let span = run_done.saturating_sub(run_start);
    let want = run_build(&mut build_cmd(&m, first.path(), ctx.path(), &out, &extra))
        .assert_ok("uninterrupted")
        .digests()
        .1;
    let tmp = std::env::temp_dir();

    let n = kills();
    let (mut survived, mut landed) = (0, 0);
    for i in 0..n {
        let root = common::tempdir();
        let out = root.path().join("out.tar");
        let after = span.mul_f64((i as f64 + 0.5) / n as f64);
        let mut run = Running::spawn(&mut build_cmd(&m, root.path(), ctx.path(), &out, &extra));
        let mut started = None;
        let killed = run.kill_when(|t, seen| {
            if started.is_none() {
                started = seen
                    .iter()
                    .find(|s| {
                        s.event()
                            .is_some_and(|e| e["event"] == "step" && is_mount_step(&e))
                    })
                    .map(|s| s.at);
            }
            started.is_some_and(|s| t >= s + after)
        });
        let in_run = !run.seen.iter().any(|s| {
            s.event()
                .is_some_and(|e| e["event"] == "done" && e["step"] == mount_no)
        });
        landed += (killed && in_run) as usize;
        if !killed {
            let lines: Vec<&str> = run.seen.iter().map(|s| s.line.as_str()).collect();
            eprintln!("not killed; it printed:\n{}", lines.join("\n"));
        }
        let what = format!("mounts kill {i} at RUN+{after:?} (killed: {killed}, in RUN: {in_run})");
        assert!(
            m.strays().is_empty(),
            "{what}: processes left: {:?}",
            m.strays()
        );
        let stray = mounts_under(&[root.path(), ctx.path(), secret_dir.path()]);
        assert!(stray.is_empty(), "{what}: mounts left: {stray:?}");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !info.contains(&m.name) && !info.contains(&*root.path().to_string_lossy()),
            "{what}: a mount names the build: {info}"
        );
        let hits = files_containing(
            &[root.path(), &tmp, Path::new("/var/tmp")],
            &secret,
            secret_dir.path(),
        );
        assert!(hits.is_empty(), "{what}: the secret is on disk: {hits:?}");
        assert_verify_clean(&m, root.path(), &what);
        let next = run_build(&mut build_cmd(&m, root.path(), ctx.path(), &out, &extra));
        assert_eq!(
            next.assert_ok(&what).digests().1,
            want,
            "{what}: next build"
        );
        assert!(
            !next.stderr.contains(&secret),
            "{what}: the secret in the log"
        );
        let hits = files_containing(&[root.path()], &secret, secret_dir.path());
        assert!(
            hits.is_empty(),
            "{what}: the secret is in the store: {hits:?}"
        );
        survived += 1;
        eprintln!("{what}: survived");
    }
    eprintln!("RELIABILITY mounts-sigkill tries={n} killed-in-run={landed} survived={survived}");
    assert!(
        landed * 2 >= n,
        "only {landed} of {n} kills landed inside the RUN"
    );
}

/// A step taken from a cache (local or remote) changes what later steps see as running it
/// would: an ENTRYPOINT built after a cached CMD keeps that CMD (the stage set it), so the
/// image is the one a `--no-cache` build gives.
#[test]
fn a_cached_cmd_is_kept_by_an_entrypoint_built_after_it() {
    common::require_root();
    let m = Marker::new("facts");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    let df = |ep: &str| {
        format!(
            "FROM {}/base/busybox:1\nCMD [\"serve\"]\nENTRYPOINT [\"{ep}\"]\n",
            reg.addr
        )
    };
    let root = common::tempdir();
    let out = root.path().join("out.tar");
    std::fs::write(ctx.path().join("Dockerfile"), df("/bin/a")).unwrap();
    run_build(&mut build_cmd(&m, root.path(), ctx.path(), &out, &[])).assert_ok("first");
    std::fs::write(ctx.path().join("Dockerfile"), df("/bin/b")).unwrap();
    let cached = run_build(&mut build_cmd(&m, root.path(), ctx.path(), &out, &[]));
    let uncached = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["--no-cache"],
    ));
    assert_eq!(
        cached.assert_ok("CMD cached").digests(),
        uncached.assert_ok("--no-cache").digests(),
        "the cached CMD changed the image"
    );
}

/// The registry's storage directory (the filesystem driver's root), for a tmpfs over it.
fn storage_dir(reg: &Registry) -> PathBuf {
    reg.scratch("x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("data")
}

/// Fault 5: the registry's disk full during a push and during a cache export (its storage
/// on a small tmpfs, filled): the push fails with exit 4 naming the registry, the reference
/// and the HTTP status; an export with `ignore-error=false` fails the same way, and by
/// default is a warning on a build that succeeds; the registry holds no tag whose blobs
/// are missing, the local store verifies clean with no temp file; once space is back, the
/// push gives the image's digest and the next build exports every entry, which a fresh
/// store reads to the same image.
#[test]
fn a_full_registry_disk_fails_push_and_export_clearly() {
    common::require_root();
    let m = Marker::new("regfull");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let root = common::tempdir();
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );
    let out = root.path().join("out.tar");
    let local = "local/full:1";
    let want = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["-t", local],
    ))
    .assert_ok("build")
    .digests()
    .1;

    // The target registry's storage: 24 MiB, filled to leave 2 MiB (the image's own
    // layer alone is 8 MiB of noise).
    let target = Registry::start();
    let small = reliability_support::SmallFs::mount_at(&storage_dir(&target), "24m");
    let filler = small.fill_leaving(2 << 20);
    let consistent = |what: &str| {
        assert_verify_clean(&m, root.path(), what);
        let temps: Vec<_> = std::fs::read_dir(root.path().join("tmp"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
    };

    // A push.
    let dest = format!("{}/app/full:1", target.addr);
    let o = m
        .cairn(root.path())
        .args(["push", local, &dest])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "push to a full registry: {err}");
    assert!(
        err.contains(&target.addr) && err.contains("app/full") && err.contains("HTTP 5"),
        "the error names registry, reference and status: {err}"
    );
    assert!(tags(&target.addr, "app/full").is_empty(), "a tag appeared");
    consistent("after the push to a full registry");
    eprintln!(
        "RELIABILITY disk-full push: exit 4: {}",
        err.lines().last().unwrap_or("")
    );

    // A cache export that must not fail quietly, then one that may.
    let to = format!("type=registry,ref={}/cache/full,mode=max", target.addr);
    let strict = format!("{to},ignore-error=false");
    let f = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["--cache-to", &strict],
    ));
    assert_eq!(f.code, Some(4), "strict export:\n{}", f.stderr);
    let e = f.error();
    assert!(
        e.contains(&target.addr) && e.contains("cache/full") && e.contains("HTTP 5"),
        "the error names registry, reference and status: {e}"
    );
    eprintln!("RELIABILITY disk-full strict export: exit 4: {e}");
    let f = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["--cache-to", &to],
    ));
    assert_eq!(f.assert_ok("lenient export").digests().1, want);
    assert!(
        warnings(&f)
            .iter()
            .any(|w| w.contains("cache export") && w.contains("cache/full")),
        "no warning about the export: {:?}",
        warnings(&f)
    );
    assert_every_tag_complete(&target.addr, "cache/full", "after the full-disk exports");
    consistent("after the exports to a full registry");

    // Space is back.
    std::fs::remove_file(&filler).unwrap();
    let o = m
        .cairn(root.path())
        .args(["push", "--format=json", local, &dest])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "push after freeing space: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        Some(j["digest"].as_str().unwrap().to_string()),
        tag_digest(&target.addr, "app/full", "1")
    );
    assert_eq!(
        assert_every_tag_complete(&target.addr, "app/full", "push"),
        1
    );
    let f = run_build(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &out,
        &["--cache-to", &strict],
    ));
    f.assert_ok("export after freeing space");
    let entries = assert_every_tag_complete(&target.addr, "cache/full", "export");
    assert!(entries >= 4, "the export wrote every entry ({entries})");
    let fresh = common::tempdir();
    let from = format!("type=registry,ref={}/cache/full", target.addr);
    let got = run_build(&mut build_cmd(
        &m,
        fresh.path(),
        ctx.path(),
        &fresh.path().join("out.tar"),
        &["--cache-from", &from],
    ));
    assert_eq!(got.assert_ok("from the cache").digests().1, want);
    consistent("after space came back");
    eprintln!("RELIABILITY disk-full recovered: push and {entries} entries exported");
    drop(small);
}

/// Fault 6: the registry killed (SIGKILL, by the PID of the server this test started) during
/// a cache export, then restarted on the same storage: the build ends (the export failure is
/// a warning), no entry of the cache names a blob the registry lacks, the local store
/// verifies clean, the next build exports every entry, and a fresh store reading the cache
/// gets the uninterrupted digest.
#[test]
fn registry_killed_mid_export_leaves_no_entry_without_blobs() {
    common::require_root();
    let m = Marker::new("regkill");
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let ctx = common::tempdir();
    write_ctx(
        ctx.path(),
        &dockerfile(&format!("{}/base/busybox:1", reg.addr), &m.name),
    );
    let mut cache = Registry::start();

    // The uninterrupted export's span (from the last step's `done` to the end), and the
    // image's digest.
    let first = common::tempdir();
    let out = first.path().join("out.tar");
    let to0 = format!("type=registry,ref={}/cache/timing,mode=max", cache.addr);
    let mut run = Running::spawn(&mut build_cmd(
        &m,
        first.path(),
        ctx.path(),
        &out,
        &["--cache-to", &to0],
    ));
    assert_eq!(run.wait(), Some(0), "uninterrupted build failed");
    let end = run.started.elapsed();
    let span = end.saturating_sub(last_step_done(&run.seen).expect("the last step's done"));
    let want = run_build(&mut build_cmd(&m, first.path(), ctx.path(), &out, &[]))
        .assert_ok("uninterrupted")
        .digests()
        .1;

    let n = kills();
    let (mut survived, mut landed) = (0, 0);
    for i in 0..n {
        let repo = format!("cache/r{i}");
        let to = format!("type=registry,ref={}/{repo},mode=max", cache.addr);
        let root = common::tempdir();
        let out = root.path().join("out.tar");
        let after = span.mul_f64((i as f64 + 0.5) / n as f64);
        let mut run = Running::spawn(&mut build_cmd(
            &m,
            root.path(),
            ctx.path(),
            &out,
            &["--cache-to", &to],
        ));
        // Wait for the moment, then kill the registry (not the build).
        let mut stopped = false;
        loop {
            if let Ok(Some(_)) = run.child.try_wait() {
                break;
            }
            let seen_done = run.wait_for_line("\"done\"", Duration::from_millis(5));
            if seen_done
                && last_step_done(&run.seen).is_some_and(|d| run.started.elapsed() >= d + after)
            {
                cache.stop();
                stopped = true;
                break;
            }
        }
        let code = run.wait();
        let what = format!("registry kill {i} at done+{after:?} (killed mid-export: {stopped})");
        landed += stopped as usize;
        assert_eq!(
            code,
            Some(0),
            "{what}: the build failed for a failed export"
        );
        if stopped {
            cache.restart();
        }
        assert!(m.strays().is_empty(), "{what}: processes left");
        let entries = check_tags(&cache.addr, &repo, &what, false);
        assert_verify_clean(&m, root.path(), &what);
        let next = run_build(&mut build_cmd(
            &m,
            root.path(),
            ctx.path(),
            &out,
            &["--cache-to", &format!("{to},ignore-error=false")],
        ));
        assert_eq!(
            next.assert_ok(&what).digests().1,
            want,
            "{what}: next build"
        );
        let after_n = check_tags(&cache.addr, &repo, &what, false);
        assert!(
            after_n >= 4,
            "{what}: the next export wrote every entry ({after_n})"
        );
        let fresh = common::tempdir();
        let from = format!("type=registry,ref={}/{repo}", cache.addr);
        let got = run_build(&mut build_cmd(
            &m,
            fresh.path(),
            ctx.path(),
            &fresh.path().join("out.tar"),
            &["--cache-from", &from],
        ));
        assert_eq!(
            got.assert_ok(&what).digests().1,
            want,
            "{what}: from the cache"
        );
        survived += 1;
        eprintln!("{what}: survived ({entries} entries before, {after_n} after)");
    }
    eprintln!(
        "RELIABILITY registry-killed-mid-export tries={n} killed-mid-export={landed} survived={survived}"
    );
    assert!(
        landed * 2 >= n,
        "only {landed} of {n} registry kills landed inside an export"
    );
}
