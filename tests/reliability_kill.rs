//! Crash safety: builds killed with SIGKILL at many moments — while pulling, unpacking,
//! running a step, writing a layer, updating the index, writing the output — must leave a
//! store that `cairn cache verify` finds clean, no mount and no process behind, and a next
//! build that succeeds with the same image digest as a build never interrupted.
//!
//! Kill points are spread two ways over each Dockerfile's cold build: by time (evenly over
//! the duration of an uninterrupted build) and by event (the moment a given
//! `--progress=json` line appears). Each kill starts from an empty store so every phase,
//! the pull included, is reachable. The short form (default, `scripts/test`) tries 12
//! points; `CAIRN_RELIABILITY_FULL=1` tries 60 with a larger COPY-heavy context and adds
//! the Debian workspace Dockerfile; `CAIRN_RELIABILITY_KILLS=N` tries N per Dockerfile.

mod common;
mod reliability_support;

use common::registry::Registry;
use reliability_support::{
    assert_verify_clean, build_cmd, file_sha256, full, mounts_under, run_build, Marker, Running,
    Seen,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A busybox build with COPY and RUN steps whose results are deterministic.
fn run_copy_dockerfile(marker: &str) -> String {
    format!(
        "ARG BASE
FROM ${{BASE}}
COPY app.txt /app/app.txt
RUN set -e; echo start; for i in $(seq 1 300); do echo \"line $i\" > /tmp/f$i; done; cat /app/app.txt > /app/copy.txt; echo END # {marker}
COPY files/ /data/
RUN echo counting; sleep 0.3; ls /data | wc -l > /count; rm /tmp/f1; echo END # {marker}
ENV STAGE=final
WORKDIR /app
CMD [\"cat\", \"/app/copy.txt\"]
"
    )
}

/// A COPY-heavy build: thousands of small files, one large file, then a short RUN.
fn copy_heavy_dockerfile(marker: &str) -> String {
    format!(
        "ARG BASE
FROM ${{BASE}}
COPY many/ /many/
COPY big.bin /big.bin
COPY --chmod=644 app.txt /etc/app.txt
RUN cat /etc/app.txt; ls /many | wc -l; echo END # {marker}
"
    )
}

fn write_context(dir: &Path, dockerfile: &str, many: usize, big_mib: usize) {
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join("app.txt"), "hello from the context\n").unwrap();
    fs::create_dir_all(dir.join("files")).unwrap();
    for i in 0..50 {
        fs::write(
            dir.join(format!("files/f{i}.txt")),
            format!("{i}\n").repeat(i),
        )
        .unwrap();
    }
    if many > 0 {
        for i in 0..many {
            let sub = dir.join(format!("many/d{}", i % 40));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("file-{i}")), format!("content {i}\n")).unwrap();
        }
        // Bytes that gzip cannot shrink much, so compressing them takes a while.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let big: Vec<u8> = (0..big_mib << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(dir.join("big.bin"), big).unwrap();
    }
}

/// Where in the build a kill landed, from the last `--progress=json` events seen.
fn phase(seen: &[Seen], total_steps: usize) -> &'static str {
    let events: Vec<serde_json::Value> = seen.iter().filter_map(Seen::event).collect();
    let last_step = events.iter().rev().find(|e| e["event"] == "step");
    let Some(step) = last_step else {
        return "pull";
    };
    let n = step["step"].as_u64().unwrap_or(0) as usize;
    let text = step["text"].as_str().unwrap_or("");
    let last = events.last().unwrap();
    let done_last = events
        .iter()
        .any(|e| e["event"] == "done" && e["step"].as_u64() == Some(n as u64));
    if events.iter().any(|e| e["event"] == "finished") {
        return "finished";
    }
    if n == total_steps && (done_last || !text.starts_with("RUN") && !text.starts_with("COPY")) {
        return "export";
    }
    if last["event"] == "done" {
        return "index update";
    }
    if text.starts_with("FROM") {
        return "pull";
    }
    if text.starts_with("RUN") {
        if last["event"] == "transfer" && last["kind"] == "layer" {
            return "layer write";
        }
        return if last["event"] == "output" {
            // Every test RUN ends by printing END: after it, only the layer is left to write.
            if last["line"] == "END" {
                "layer write"
            } else {
                "run"
            }
        } else {
            "unpack"
        };
    }
    if text.starts_with("COPY") {
        return "copy + layer write";
    }
    "metadata step"
}

/// The outcome of one Dockerfile's campaign.
#[derive(Default)]
struct Tally {
    tried: usize,
    survived: usize,
    finished_first: usize,
    by_phase: BTreeMap<&'static str, usize>,
}

struct Case<'a> {
    name: &'a str,
    ctx: &'a Path,
    base: &'a str,
    /// Whether the image bytes are reproducible (RUN output deterministic).
    same_digest: bool,
}

fn campaign(m: &Marker, case: &Case, points: usize) -> Tally {
    let barg = format!("BASE={}", case.base);
    let extra = ["--build-arg", barg.as_str()];
    let scratch = common::tempdir();

    // The uninterrupted build: its digests, its archive and its timeline.
    let ref_root = common::tempdir();
    let ref_out = scratch.path().join("ref.tar");
    let mut r = Running::spawn(&mut build_cmd(
        m,
        ref_root.path(),
        case.ctx,
        &ref_out,
        &extra,
    ));
    let code = r.wait();
    let timeline = r.seen.clone();
    assert_eq!(
        code,
        Some(0),
        "{}: reference build failed:\n{}",
        case.name,
        timeline
            .iter()
            .map(|s| s.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let reference = run_build(&mut build_cmd(
        m,
        ref_root.path(),
        case.ctx,
        &scratch.path().join("ref2.tar"),
        &extra,
    ));
    reference.assert_ok(case.name);
    let (ref_config, ref_manifest) = reference.digests();
    let ref_key = reference.json()["cache_key"].as_str().unwrap().to_string();
    let ref_archive = file_sha256(&ref_out);
    assert_eq!(
        ref_archive,
        file_sha256(&scratch.path().join("ref2.tar")),
        "{}: a cached rebuild wrote different archive bytes",
        case.name
    );
    let total = timeline
        .last()
        .map(|s| s.at)
        .unwrap_or(Duration::from_secs(1));
    let total_steps = timeline
        .iter()
        .filter_map(Seen::event)
        .filter(|e| e["event"] == "step")
        .count();
    eprintln!(
        "{}: uninterrupted build {:.2}s, {} events, {} steps, config {ref_config}",
        case.name,
        total.as_secs_f64(),
        timeline.len(),
        total_steps
    );

    let mut tally = Tally::default();
    for k in 0..points {
        let root = common::tempdir();
        let out = scratch.path().join(format!("kill-{k}.tar"));
        let mut run = Running::spawn(&mut build_cmd(m, root.path(), case.ctx, &out, &extra));
        // Even points: by time over the whole build; odd points: on the arrival of an event
        // line (spread over the reference's lines), plus a few milliseconds.
        let how;
        let killed = if k % 2 == 0 {
            let at = total.mul_f64((k as f64 + 0.5) / points as f64);
            how = format!("at {:.0} ms", at.as_secs_f64() * 1000.0);
            run.kill_when(|elapsed, _| elapsed >= at)
        } else {
            let idx = (k * timeline.len()) / points;
            let nth = idx.min(timeline.len().saturating_sub(1)) + 1;
            let delay = Duration::from_millis((k as u64 * 7) % 23);
            how = format!("{delay:?} after event line {nth}");
            let mut since = None;
            run.kill_when(|elapsed, seen| {
                if seen.len() >= nth && since.is_none() {
                    since = Some(elapsed);
                }
                since.is_some_and(|s| elapsed >= s + delay)
            })
        };
        let ph = if killed {
            phase(&run.seen, total_steps)
        } else {
            "finished"
        };
        let what = format!("{} kill point {k} ({how}, during {ph})", case.name);
        tally.tried += 1;
        if !killed {
            tally.finished_first += 1;
        }
        *tally.by_phase.entry(ph).or_default() += 1;

        // Nothing left running or mounted, and the store is consistent.
        let strays = m.strays();
        assert!(
            strays.is_empty(),
            "{what}: processes left behind: {strays:?}"
        );
        let mounts = mounts_under(&[root.path(), scratch.path()]);
        assert!(mounts.is_empty(), "{what}: mounts left behind: {mounts:?}");
        assert_verify_clean(m, root.path(), &what);

        // The next build succeeds and makes the same image.
        let again_out = scratch.path().join(format!("again-{k}.tar"));
        let again = run_build(&mut build_cmd(m, root.path(), case.ctx, &again_out, &extra));
        again.assert_ok(&what);
        assert_eq!(
            again.json()["cache_key"].as_str().unwrap(),
            ref_key,
            "{what}: cache key differs"
        );
        if case.same_digest {
            assert_eq!(
                again.digests(),
                (ref_config.clone(), ref_manifest.clone()),
                "{what}: the image differs from the uninterrupted build"
            );
            assert_eq!(
                file_sha256(&again_out),
                ref_archive,
                "{what}: the archive differs from the uninterrupted build"
            );
        }
        assert_verify_clean(m, root.path(), &format!("{what}, after the rebuild"));
        let temps: Vec<_> = fs::read_dir(root.path().join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            temps.is_empty(),
            "{what}: temp files survived the next build: {temps:?}"
        );
        let strays = m.strays();
        assert!(
            strays.is_empty(),
            "{what}: processes left behind after the rebuild: {strays:?}"
        );
        let _ = fs::remove_file(&out);
        let _ = fs::remove_file(&again_out);
        tally.survived += 1;
    }
    eprintln!(
        "{}: {} kill points tried, {} survived ({} finished before the kill); by phase: {:?}",
        case.name, tally.tried, tally.survived, tally.finished_first, tally.by_phase
    );
    tally
}

#[test]
fn sigkill_at_any_moment_loses_nothing() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "reliab/busybox:latest");
    let base = format!("{}/reliab/busybox:latest", reg.addr);
    let m = Marker::new("kill");
    let (mut per_case, debian_points) = if full() { (26, 8) } else { (6, 0) };
    // Any number of kill points per Dockerfile on the short-form contexts, for a long soak
    // without the full form's large context and Debian image.
    if let Some(n) = std::env::var("CAIRN_RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        per_case = n;
    }

    let run_ctx = common::tempdir();
    write_context(run_ctx.path(), &run_copy_dockerfile(&m.name), 0, 0);
    let heavy_ctx = common::tempdir();
    let (many, big_mib) = if full() { (3000, 8) } else { (600, 1) };
    write_context(
        heavy_ctx.path(),
        &copy_heavy_dockerfile(&m.name),
        many,
        big_mib,
    );

    let mut tallies = vec![
        campaign(
            &m,
            &Case {
                name: "busybox RUN/COPY",
                ctx: run_ctx.path(),
                base: &base,
                same_digest: true,
            },
            per_case,
        ),
        campaign(
            &m,
            &Case {
                name: "COPY-heavy",
                ctx: heavy_ctx.path(),
                base: &base,
                same_digest: true,
            },
            per_case,
        ),
    ];
    if debian_points > 0 {
        common::images::push_debian(&reg, "reliab/debian:bookworm");
        let ws = common::tempdir();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/workspace");
        for f in ["Dockerfile", "startup.sh", "README.workspace"] {
            fs::copy(src.join(f), ws.path().join(f)).unwrap();
        }
        let debian = format!("{}/reliab/debian:bookworm", reg.addr);
        // apt and useradd write dates into files, so only the cache key is compared.
        tallies.push(campaign(
            &m,
            &Case {
                name: "Debian workspace",
                ctx: ws.path(),
                base: &debian,
                same_digest: false,
            },
            debian_points,
        ));
    }
    let tried: usize = tallies.iter().map(|t| t.tried).sum();
    let survived: usize = tallies.iter().map(|t| t.survived).sum();
    eprintln!("all: {tried} kill points tried, {survived} survived");
    assert_eq!(tried, survived);
}
