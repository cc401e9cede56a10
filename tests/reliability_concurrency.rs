//! Several cairn processes sharing one store: overlapping builds started together all
//! succeed, each blob is downloaded once, a step they share is computed once, and a lock
//! never outlives a killed holder (the next process proceeds). Eight builds at once on
//! shared and locked cache mounts and one registry cache ref give the serial digests, and
//! a locked mount is never inside two steps at once.
//!
//! A counting proxy stands between cairn and the real registry, so blob GETs are counted
//! where they happen; it can also hang the first GET of a blob to hold a download open.

mod common;
mod reliability_support;

use common::registry::{Registry, Reply, Request, TinyServer};
use reliability_support::{
    assert_verify_clean, build_cmd, mounts_under, run_build, Finished, Marker, Running,
};
use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proxy in front of the registry that counts GETs per path.
struct Proxy {
    server: TinyServer,
    gets: Arc<Mutex<BTreeMap<String, usize>>>,
    /// When set, the next GET of a layer blob never answers (it holds the download open).
    hang_next_blob: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let gets = Arc::new(Mutex::new(BTreeMap::new()));
        let hang_next_blob = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        let (g, h) = (gets.clone(), hang_next_blob.clone());
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let server = TinyServer::start(move |req: &Request| {
            let is_blob = req.path.contains("/blobs/sha256:");
            if req.method == "GET" {
                *g.lock().unwrap().entry(req.path.clone()).or_default() += 1;
                if is_blob && h.swap(false, Ordering::SeqCst) {
                    return Reply::Hang;
                }
            }
            forward(&http, &upstream, req)
        });
        Proxy {
            server,
            gets,
            hang_next_blob,
        }
    }

    /// GET counts of blobs, by path.
    fn blob_gets(&self) -> BTreeMap<String, usize> {
        self.gets
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.contains("/blobs/sha256:"))
            .map(|(p, n)| (p.clone(), *n))
            .collect()
    }
}

fn forward(http: &reqwest::blocking::Client, upstream: &str, req: &Request) -> Reply {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut r = http.request(method, format!("http://{upstream}{}", req.path));
    for h in ["accept", "range", "authorization"] {
        if let Some(v) = req.headers.get(h) {
            r = r.header(h, v);
        }
    }
    let Ok(resp) = r.send() else {
        return Reply::status(502);
    };
    let status = resp.status().as_u16();
    let mut headers = Vec::new();
    for h in [
        "content-type",
        "docker-content-digest",
        "content-range",
        "content-length",
        "location",
        "www-authenticate",
    ] {
        if let Some(v) = resp.headers().get(h) {
            headers.push((h.to_string(), v.to_str().unwrap().to_string()));
        }
    }
    let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    Reply::Full {
        status,
        headers,
        body,
    }
}

/// The step events of a `--progress=json` build: (text, cached).
fn steps(f: &Finished) -> Vec<(String, bool)> {
    f.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step")
        .map(|e| {
            (
                e["text"].as_str().unwrap_or("").to_string(),
                e["cached"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn context(text: &str) -> tempfile::TempDir {
    let d = common::tempdir();
    fs::write(d.path().join("Dockerfile"), text).unwrap();
    fs::write(d.path().join("app.txt"), "shared app\n").unwrap();
    d
}

fn finish(mut r: Running) -> Finished {
    let code = r.wait();
    Finished {
        code,
        stdout: String::new(),
        stderr: r
            .seen
            .iter()
            .map(|s| s.line.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn four_overlapping_builds_share_one_store() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_multi_layer(&reg, "reliab/multi:latest", 3);
    let proxy = Proxy::start(&reg.addr);
    let m = Marker::new("conc");
    let base = format!("{}/reliab/multi:latest", proxy.server.addr);
    let common_step = format!("RUN echo common; sleep 1; seq 1 100 > /common # {}", m.name);
    let a = format!(
        "FROM {base}\n{common_step}\nRUN echo a > /a # {}\nCMD [\"cat\", \"/a\"]\n",
        m.name
    );
    let dockerfiles = [
        a.clone(),
        format!("FROM {base}\n{common_step}\nCOPY app.txt /app.txt\n"),
        a,
        format!(
            "FROM {base}\n{common_step}\nRUN echo d > /d # {}\nENV D=1\n",
            m.name
        ),
    ];
    let ctxs: Vec<_> = dockerfiles.iter().map(|d| context(d)).collect();
    let root = common::tempdir();
    let outs = common::tempdir();
    let runs: Vec<Running> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let out = outs.path().join(format!("{i}.tar"));
            Running::spawn(&mut build_cmd(&m, root.path(), c.path(), &out, &[]))
        })
        .collect();
    let results: Vec<Finished> = runs.into_iter().map(finish).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.code, Some(0), "build {i} failed:\n{}", r.stderr);
    }

    // Each blob crossed the network once.
    let gets = proxy.blob_gets();
    assert_eq!(gets.len(), 5, "config + 4 layers: {gets:?}");
    for (path, n) in &gets {
        assert_eq!(*n, 1, "{path} was downloaded {n} times: {gets:?}");
    }

    // The shared step ran in one build; the others took its result.
    let computed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            steps(r)
                .iter()
                .any(|(t, cached)| t.starts_with("RUN echo common") && !cached)
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        computed.len(),
        1,
        "the shared step ran in builds {computed:?}"
    );
    let waited = results
        .iter()
        .filter(|r| r.stderr.contains("being built by another cairn process"))
        .count();
    eprintln!(
        "4 concurrent builds: all succeeded, {} blob GETs for {} blobs, shared step computed by {computed:?}, {waited} waited for it",
        gets.values().sum::<usize>(),
        gets.len()
    );

    // Identical Dockerfiles gave identical images; the store is sound and quiet.
    let digest = |i: usize| reliability_support::file_sha256(&outs.path().join(format!("{i}.tar")));
    assert_eq!(digest(0), digest(2), "identical builds differ");
    assert_verify_clean(&m, root.path(), "after 4 concurrent builds");
    assert!(m.strays().is_empty());
    assert!(mounts_under(&[root.path()]).is_empty());
    let temps: Vec<_> = fs::read_dir(root.path().join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");

    // Each again: all cached, same images.
    for (i, c) in ctxs.iter().enumerate() {
        let out = outs.path().join(format!("again-{i}.tar"));
        let again = run_build(&mut build_cmd(&m, root.path(), c.path(), &out, &[]));
        again.assert_ok("rebuild");
        assert_eq!(again.json()["all_cached"], "true");
        assert_eq!(
            reliability_support::file_sha256(&out),
            digest(i),
            "build {i} changed"
        );
    }
}

#[test]
fn a_killed_holder_never_blocks_the_next_build() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "reliab/lock:latest");
    let proxy = Proxy::start(&reg.addr);
    let m = Marker::new("lock");
    let base = format!("{}/reliab/lock:latest", proxy.server.addr);
    let ctx = context(&format!(
        "FROM {base}\nRUN echo started; sleep 3; echo finished # {}\n",
        m.name
    ));
    let root = common::tempdir();
    let outs = common::tempdir();

    // 1. A step lock: X is running the step when Y arrives; X is killed; Y runs it.
    let mut x = Running::spawn(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &outs.path().join("x.tar"),
        &[],
    ));
    assert!(
        x.wait_for_line("started", Duration::from_secs(120)),
        "X never started its step"
    );
    let mut y = Running::spawn(&mut build_cmd(
        &m,
        root.path(),
        ctx.path(),
        &outs.path().join("y.tar"),
        &[],
    ));
    let t = Instant::now();
    assert!(
        y.wait_for_line("another cairn process", Duration::from_secs(60)),
        "Y did not wait for X's step"
    );
    let _ = x.child.kill();
    let _ = x.child.wait();
    let yf = finish(y);
    assert_eq!(yf.code, Some(0), "Y failed after X died:\n{}", yf.stderr);
    assert!(
        yf.stderr.contains("finished"),
        "Y did not run the step itself:\n{}",
        yf.stderr
    );
    eprintln!(
        "step lock: X killed while holding it, Y went on and finished in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_verify_clean(&m, root.path(), "after the killed step holder");
    assert!(m.strays().is_empty());

    // 2. A blob lock: X hangs downloading a layer; Y waits; X is killed; Y downloads it.
    let root = common::tempdir();
    let before = proxy.blob_gets();
    proxy.hang_next_blob.store(true, Ordering::SeqCst);
    let ctx2 = context(&format!("FROM {base}\nENV X=1\n"));
    let mut x = Running::spawn(&mut build_cmd(
        &m,
        root.path(),
        ctx2.path(),
        &outs.path().join("x2.tar"),
        &[],
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.hang_next_blob.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut y = Running::spawn(&mut build_cmd(
        &m,
        root.path(),
        ctx2.path(),
        &outs.path().join("y2.tar"),
        &[],
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        y.child.try_wait().unwrap().is_none(),
        "Y finished while X held the download"
    );
    let _ = x.child.kill();
    let _ = x.child.wait();
    let yf = finish(y);
    assert_eq!(yf.code, Some(0), "Y failed after X died:\n{}", yf.stderr);
    let after = proxy.blob_gets();
    let retried: Vec<_> = after
        .iter()
        .filter(|(p, n)| **n > before.get(*p).copied().unwrap_or(0) + 1)
        .collect();
    assert!(
        retried.len() <= 1,
        "more than the held blob was fetched twice: {retried:?}"
    );
    assert_verify_clean(&m, root.path(), "after the killed download holder");
    eprintln!("blob lock: X killed mid-download, Y fetched the blob and finished");
}

/// Build `i` of the eight: a shared COPY, a RUN on a `sharing=shared` cache mount, a RUN on
/// a `sharing=locked` one that fails (exit 17) if it finds another step inside the mount
/// (a marker file it creates on entry and removes on exit), and a shared last step. Each
/// build's mounted RUNs differ (`i`), so all eight run them rather than wait for one.
fn eight_dockerfile(base: &str, marker: &str, i: usize) -> String {
    format!(
        "FROM {base}
COPY app.txt /app.txt
RUN --mount=type=cache,id=conc-shared,target=/shared,sharing=shared set -e; echo {i} > /shared/w{i}; cat /app.txt > /s{i} # {marker}
RUN --mount=type=cache,id=conc-locked,target=/locked,sharing=locked set -e; if [ -e /locked/busy ]; then echo \"overlap: build {i} found build $(cat /locked/busy) in the locked mount\"; exit 17; fi; echo {i} > /locked/busy; sleep 0.2; echo {i} >> /locked/log; rm /locked/busy; echo {i} > /l # {marker}
RUN echo tail > /t # {marker}
"
    )
}

/// Eight builds at once on one store, sharing cache mounts (`shared` and `locked`) and one
/// registry cache ref (`--cache-to` and `--cache-from`): all succeed with the digests the
/// same Dockerfiles give built one after another on a store of their own, the locked mount
/// is never inside two steps at once, the store verifies clean with nothing left behind,
/// every cache entry names blobs the registry has, and a fresh store reading the cache
/// builds without running a step.
#[test]
fn eight_builds_share_cache_mounts_and_a_registry_cache() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "base/busybox:1");
    let m = Marker::new("eight");
    let base = format!("{}/base/busybox:1", reg.addr);
    let ctxs: Vec<_> = (0..8)
        .map(|i| context(&eight_dockerfile(&base, &m.name, i)))
        .collect();
    let outs = common::tempdir();

    // One after another, on a store of their own, without the registry cache.
    let serial = common::tempdir();
    let want: Vec<String> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let out = outs.path().join(format!("serial-{i}.tar"));
            run_build(&mut build_cmd(&m, serial.path(), c.path(), &out, &[]))
                .assert_ok("serial")
                .digests()
                .1
        })
        .collect();

    // All at once.
    let cache = format!("type=registry,ref={}/cache/eight", reg.addr);
    let to = format!("{cache},mode=max,ignore-error=false");
    let root = common::tempdir();
    let threads: Vec<_> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let out = outs.path().join(format!("{i}.tar"));
            let mut cmd = build_cmd(
                &m,
                root.path(),
                c.path(),
                &out,
                &["--cache-to", &to, "--cache-from", &cache],
            );
            std::thread::spawn(move || run_build(&mut cmd))
        })
        .collect();
    let results: Vec<Finished> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.code, Some(0), "build {i} failed:\n{}", r.stderr);
        assert_eq!(
            r.digests().1,
            want[i],
            "build {i} differs from its serial build"
        );
    }
    let waited = results
        .iter()
        .filter(|r| r.stderr.contains("being built by another cairn process"))
        .count();
    assert_verify_clean(&m, root.path(), "after 8 concurrent builds");
    assert!(m.strays().is_empty(), "processes left");
    assert!(mounts_under(&[root.path()]).is_empty(), "mounts left");
    let temps: Vec<_> = fs::read_dir(root.path().join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    let entries = reliability_support::assert_every_tag_complete(
        &reg.addr,
        "cache/eight",
        "after 8 concurrent exports",
    );
    // 1 COPY + 8 × 2 mounted RUNs + 8 last steps (on different parents).
    assert!(entries >= 17, "the exports wrote the entries ({entries})");

    // A fresh store reading the cache: every step a hit, the same images.
    for i in [0, 7] {
        let fresh = common::tempdir();
        let got = run_build(&mut build_cmd(
            &m,
            fresh.path(),
            ctxs[i].path(),
            &fresh.path().join("out.tar"),
            &["--cache-from", &cache],
        ));
        assert_eq!(got.assert_ok("from the cache").digests().1, want[i]);
        assert_eq!(got.json()["all_cached"], "true", "build {i} ran a step");
        assert_verify_clean(&m, fresh.path(), "fresh store from the cache");
    }
    eprintln!(
        "RELIABILITY 8 concurrent builds (cache mounts shared+locked, one registry cache ref): 8/8 succeeded, serial digests, no locked overlap, {entries} entries complete, {waited} waited for a shared step"
    );
}
