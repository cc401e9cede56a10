//! Independent stages run in parallel, end to end (busybox base from the registry harness):
//! their steps overlap, the image is the one a serial build (`CAIRN_JOBS=1`) makes, the
//! progress lines keep their step numbers, and a failing stage cancels its siblings.
//!
//! Overlap is proven without a clock: the stages' RUN steps meet at a barrier in a shared
//! cache mount — each marks itself there and waits for the others — so a build that ran
//! them one at a time could not pass it (the wait is bounded: such a build fails, it does
//! not hang). The JSON events' times then show the overlap as the progress reports it.

mod common;

use common::registry::Registry;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

const STAGES: [&str; 3] = ["a", "b", "c"];

/// A RUN that marks `name` at the barrier in the shared cache mount `/b` and waits (at most
/// two minutes) until every one of `all` has marked itself.
fn barrier_run(name: &str, all: &[&str]) -> String {
    let waits: Vec<String> = all.iter().map(|n| format!("[ -e /b/{n} ]")).collect();
    format!(
        "RUN --mount=type=cache,id=barrier,target=/b touch /b/{name} && i=0; \
         until {}; do i=$((i+1)); [ $i -lt 1200 ] || exit 7; sleep 0.1; done; \
         echo hello from {name} && echo {name} > /out\n",
        waits.join(" && ")
    )
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = common::tempdir();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// `cairn build` into an OCI layout (no Docker needed), with `--format=json` on stdout.
fn build(root: &Path, ctx: &Path, progress: &str, jobs: Option<&str>) -> Output {
    let dest = root.join("oci");
    let mut c = common::cairn(root);
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(ctx)
        .arg(format!("--progress={progress}"))
        .args(["--format=json", "-o"])
        .arg(format!("type=oci,dest={}", dest.display()));
    match jobs {
        Some(j) => c.env("CAIRN_JOBS", j),
        None => c.env_remove("CAIRN_JOBS"),
    };
    common::run(&mut c)
}

fn json_events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The step number, start time and end time of each stage's RUN step.
fn run_spans(events: &[Value]) -> Vec<(String, u64, f64, f64)> {
    let mut spans = Vec::new();
    for ev in events {
        if ev["event"] == "step" && ev["text"].as_str().unwrap().starts_with("RUN ") {
            let step = ev["step"].as_u64().unwrap();
            let done = events
                .iter()
                .find(|d| d["event"] == "done" && d["step"] == step)
                .unwrap_or_else(|| panic!("step {step} never said done"));
            spans.push((
                ev["stage"].as_str().unwrap().to_string(),
                step,
                ev["time"].as_f64().unwrap(),
                done["time"].as_f64().unwrap(),
            ));
        }
    }
    spans
}

/// Three stages whose RUN steps can only finish together, and a last stage copying from
/// each: the build passes the barrier, the JSON events show every RUN started before any
/// finished, each output line carries its own step's number, and the plain form of the
/// same build numbers every line.
#[test]
fn independent_stages_run_at_the_same_time() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "parallel/busybox:1");
    let base = format!("{}/parallel/busybox:1", reg.addr);
    let mut df = String::new();
    for s in STAGES {
        df += &format!("FROM {base} AS {s}\n{}", barrier_run(s, &STAGES));
    }
    df += &format!("FROM {base}\n");
    for s in STAGES {
        df += &format!("COPY --from={s} /out /{s}\n");
    }
    let ctx = context(&df);

    let root = common::tempdir();
    let out = build(root.path(), ctx.path(), "json", None);
    assert!(out.status.success(), "the parallel build failed");
    let events = json_events(&out.stderr);
    let spans = run_spans(&events);
    assert_eq!(spans.len(), 3, "{spans:?}");
    for (x, _, x_start, _) in &spans {
        for (y, _, _, y_done) in &spans {
            if x != y {
                assert!(
                    x_start < y_done,
                    "stage {x}'s RUN started after stage {y}'s was done: {spans:?}"
                );
            }
        }
    }
    // Output lines name the step that printed them.
    for (stage, step, _, _) in &spans {
        let said: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "output" && e["line"] == format!("hello from {stage}"))
            .collect();
        assert_eq!(said.len(), 1, "{stage}: {said:?}");
        assert_eq!(said[0]["step"].as_u64(), Some(*step), "{stage}");
    }
    // Steps are numbered once each, 1..=total, however they interleaved.
    let mut numbers: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());

    // Plain lines, from a fresh store: every step line starts with its number.
    let root = common::tempdir();
    let out = build(root.path(), ctx.path(), "plain", None);
    assert!(out.status.success(), "the plain parallel build failed");
    let text = String::from_utf8_lossy(&out.stderr);
    for s in STAGES {
        let header = text
            .lines()
            .find(|l| l.contains(&format!("[{s} ")) && l.contains("RUN "))
            .unwrap_or_else(|| panic!("no step line for {s}:\n{text}"));
        let number = header.split_whitespace().next().unwrap();
        assert!(number.starts_with('#'), "{header}");
        assert!(
            text.lines()
                .any(|l| l == format!("{number} hello from {s}")),
            "{s}'s output does not carry {number}:\n{text}"
        );
    }
}

/// The same image whether the stages ran in parallel or one after the other.
#[test]
fn a_parallel_build_makes_the_image_a_serial_build_makes() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "parallel/busybox:2");
    let base = format!("{}/parallel/busybox:2", reg.addr);
    let mut df = String::new();
    for s in STAGES {
        df += &format!(
            "FROM {base} AS {s}\nENV NAME={s}\nRUN mkdir /out && echo $NAME > /out/$NAME && sleep 1\nRUN echo more >> /out/$NAME\n"
        );
    }
    df += &format!("FROM {base}\nWORKDIR /all\n");
    for s in STAGES {
        df += &format!("COPY --from={s} /out/ ./\n");
    }
    let ctx = context(&df);
    let mut results = Vec::new();
    for jobs in [Some("1"), None, Some("2")] {
        let root = common::tempdir();
        let out = build(root.path(), ctx.path(), "plain", jobs);
        assert!(
            out.status.success(),
            "the build with CAIRN_JOBS={jobs:?} failed"
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        results.push((
            jobs,
            v["config_digest"].clone(),
            v["manifest_digest"].clone(),
        ));
    }
    for r in &results[1..] {
        assert_eq!(
            (&r.1, &r.2),
            (&results[0].1, &results[0].2),
            "CAIRN_JOBS={:?} differs from the serial build",
            r.0
        );
    }
}

/// One stage fails while a sibling is running: the build ends with the failing step's
/// error and exit code, the sibling is killed (it never reaches its end) and said to be
/// CANCELED, and nothing of either sandbox is left: no process, no step directory.
#[test]
fn a_failing_stage_cancels_its_siblings() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "parallel/busybox:3");
    let base = format!("{}/parallel/busybox:3", reg.addr);
    let token = format!("sibling-{}", std::process::id());
    let df = format!(
        "FROM {base} AS sibling\n\
         RUN --mount=type=cache,id=barrier,target=/b touch /b/sibling && i=0; \
         while [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.1; done; touch /b/{token}-finished\n\
         FROM {base} AS bad\n\
         RUN --mount=type=cache,id=barrier,target=/b i=0; \
         until [ -e /b/sibling ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 7; sleep 0.1; done; exit 5\n\
         FROM {base}\n\
         COPY --from=sibling /bin/sh /s\n\
         COPY --from=bad /bin/sh /b\n"
    );
    let ctx = context(&df);
    let root = common::tempdir();
    let out = build(root.path(), ctx.path(), "plain", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not the failed step's exit code:\n{stderr}"
    );
    let error = stderr
        .lines()
        .rfind(|l| l.starts_with("cairn: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(
        error.contains("Dockerfile:4: RUN exited with 5"),
        "not the failing stage's error: {error}"
    );
    let sibling_step = stderr
        .lines()
        .find(|l| l.contains("[sibling ") && l.contains("RUN "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the sibling never started:\n{stderr}"));
    assert!(
        stderr
            .lines()
            .any(|l| l == format!("{sibling_step} CANCELED")),
        "the sibling is not said to be canceled:\n{stderr}"
    );
    // The sibling was stopped, not waited for.
    let cache = root.path().join("cache-mounts");
    let finished = walk(&cache)
        .into_iter()
        .any(|p| p.to_string_lossy().ends_with(&format!("{token}-finished")));
    assert!(!finished, "the sibling ran to its end");
    // No process of the sibling's step is left.
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&token),
                "process {:?} of the canceled step is still alive",
                entry.file_name()
            );
        }
    }
    // Every step directory (upper, work, staging) is gone.
    let left: Vec<_> = fs::read_dir(root.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the store's tmp: {left:?}");
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
