//! Operator commands: `doctor`, completions and the man page.

mod common;

use std::process::Command;

/// `doctor` as an unprivileged user without subordinate ids or the docker group: it names
/// what is missing, says how to fix it, and exits non-zero.
#[test]
fn doctor_names_what_is_missing_for_an_unprivileged_user() {
    common::require_root();
    let store = common::tempdir();
    common::run_ok(Command::new("chown").arg("cairnnoids").arg(store.path()));
    let out = common::run(
        Command::new("runuser")
            .args(["-u", "cairnnoids", "--", "env", "HOME=/home/cairnnoids"])
            .arg(format!("CAIRN_ROOT={}", store.path().display()))
            .arg(common::cairn_bin())
            .arg("doctor"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subordinate ids"), "{text}");
    assert!(
        text.contains("usermod --add-subuids"),
        "no fix given: {text}"
    );
    assert!(text.contains("MISSING  docker"), "{text}");
    assert_eq!(out.status.code(), Some(2), "{text}");
}

/// As root on this machine (scripts/setup provides everything) doctor passes.
#[test]
fn doctor_passes_where_builds_work() {
    common::require_root();
    let store = common::tempdir();
    let out = common::run_ok(common::cairn(store.path()).arg("doctor"));
    assert!(out.contains("a build can work here"), "{out}");
}

/// `doctor` asks Docker over the Engine API a load uses (read only: `GET /info`), so it
/// reports the same engine with or without a docker CLI on PATH: its version, endpoint,
/// storage driver and image store, as the system engine's own CLI shows them. A
/// `DOCKER_HOST` that leads nowhere is named as missing.
#[test]
fn doctor_reports_the_engine_through_its_api() {
    common::require_root();
    common::require_docker();
    let docker = |f: &str| {
        common::run_ok(Command::new("docker").args(["info", "--format", f]))
            .trim()
            .to_string()
    };
    let (version, driver) = (docker("{{.ServerVersion}}"), docker("{{.Driver}}"));
    let store = if docker("{{json .DriverStatus}}").contains("io.containerd.snapshotter") {
        "containerd"
    } else {
        "classic"
    };
    let want = format!(
        "ok  docker: Docker {version} at unix:///var/run/docker.sock: storage driver {driver}, {store} image store"
    );
    // A PATH with `unshare true` (the user-namespace check) but no docker CLI.
    let bin = common::tempdir();
    for tool in ["unshare", "true"] {
        std::os::unix::fs::symlink(common::which(tool), bin.path().join(tool)).unwrap();
    }
    let store_dir = common::tempdir();
    for path in [
        std::env::var("PATH").unwrap(),
        bin.path().display().to_string(),
    ] {
        let out = common::run_ok(
            common::cairn(store_dir.path())
                .env_remove("DOCKER_HOST")
                .env_remove("DOCKER_CONTEXT")
                .env("PATH", &path)
                .arg("doctor"),
        );
        assert!(out.contains(&want), "PATH={path}: want {want:?} in\n{out}");
    }
    let out = common::run(
        common::cairn(store_dir.path())
            .env("DOCKER_HOST", "unix:///nonexistent/cairn-doctor.sock")
            .arg("doctor"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MISSING  docker") && text.contains("/nonexistent/cairn-doctor.sock"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = common::run_ok(Command::new(common::cairn_bin()).args(["completions", shell]));
        assert!(
            out.contains("build") && out.contains("build-arg"),
            "{shell}: {out}"
        );
    }
    let man = common::run_ok(Command::new(common::cairn_bin()).arg("man"));
    assert!(man.contains(".TH cairn"), "{man}");
}

/// The JSON events of a `cairn build --progress=json` run (every stderr line must be one).
fn json_events(stderr: &[u8]) -> Vec<serde_json::Value> {
    let log = String::from_utf8_lossy(stderr);
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{log}")))
        .collect()
}

fn build_dir(dockerfile: &str) -> tempfile::TempDir {
    let d = common::tempdir();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

/// A failed build in JSON mode ends with an `error` event carrying the message and the
/// exit code, instead of a `cairn: error:` line that no JSON reader could parse.
#[test]
fn json_progress_reports_a_failure_as_its_last_event() {
    let root = common::tempdir();
    let ctx = build_dir("FROM scratch\nCOPY --bogus=1 a b\n");
    let out = common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["--progress=json", "-o", "type=oci,dest=/dev/null/none"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let events = json_events(&out.stderr);
    let last = events.last().expect("an error event");
    assert_eq!(last["event"], "error", "{events:?}");
    assert_eq!(last["exit_code"], 2);
    assert!(
        last["message"].as_str().unwrap().contains("Dockerfile:2:"),
        "{last}"
    );
}

/// A failed RUN in JSON mode: its output, then the error naming the Dockerfile line; a
/// pull's bytes arrive as transfer events and add up in the summary of a later success.
#[test]
fn json_progress_carries_pulls_output_errors_and_the_summary() {
    common::require_root();
    let reg = common::registry::Registry::start();
    common::images::push_busybox(&reg, "cli/busybox:1");
    let root = common::tempdir();
    let build = |dockerfile: &str| {
        let ctx = build_dir(dockerfile);
        let dest = format!("type=oci,dest={}", root.path().join("out").display());
        common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--progress=json", "-o", &dest]),
        )
    };
    let out = build(&format!(
        "FROM {}/cli/busybox:1\nRUN echo about-to-fail; exit 7\n",
        reg.addr
    ));
    assert_eq!(out.status.code(), Some(3));
    let events = json_events(&out.stderr);
    let pulls: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "transfer" && e["kind"] == "pull")
        .collect();
    assert!(pulls.iter().any(|e| e["phase"] == "start"), "{events:?}");
    assert!(
        pulls
            .iter()
            .any(|e| e["phase"] == "done" && e["bytes"].as_u64() > Some(0)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["line"] == "about-to-fail"),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["exit_code"]),
        (&"error".into(), &3.into())
    );
    assert!(
        last["message"].as_str().unwrap().contains("Dockerfile:2"),
        "{last}"
    );

    // The base is stored now: a success pulls nothing and says so in its summary.
    let out = build(&format!("FROM {}/cli/busybox:1\nRUN echo fine\n", reg.addr));
    assert!(out.status.success());
    let events = json_events(&out.stderr);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["finished", "summary"],
        "{kinds:?}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["steps"], 1);
    assert_eq!(summary["cached"], 0);
    assert_eq!(summary["pulled"], 0);
}

/// Off a terminal, a failure is still a plain `cairn: error:` last line (what Terraform
/// shows), with no escape sequences.
#[test]
fn plain_progress_ends_a_failure_with_the_error_line() {
    let root = common::tempdir();
    let ctx = build_dir("FROM scratch\nCOPY --bogus=1 a b\n");
    let out = common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["-o", "type=oci,dest=/dev/null/none"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // The error (with the source line it quotes) is what stderr ends with.
    let (_, error) = err
        .rsplit_once("cairn: error: ")
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        error.starts_with(&format!("{}/Dockerfile:2:", ctx.path().display())),
        "{err}"
    );
    assert_eq!(error.lines().count(), 2, "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

/// An `ADD <url>` download is a transfer like a pull: JSON start and done events with its
/// bytes, counted as downloaded in the summary.
#[test]
fn json_progress_reports_add_downloads() {
    common::require_root();
    use common::registry::{Reply, TinyServer};
    let body = vec![b'x'; 70_000];
    let served = body.clone();
    let web = TinyServer::start(move |_| Reply::ok("application/octet-stream", served.clone()));
    let root = common::tempdir();
    let ctx = build_dir(&format!(
        "FROM scratch\nADD http://{}/files/payload.bin /payload.bin\n",
        web.addr
    ));
    let dest = format!("type=oci,dest={}", root.path().join("out").display());
    let out = common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["--progress=json", "-o", &dest]),
    );
    assert!(out.status.success());
    let events = json_events(&out.stderr);
    let downloads: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "transfer" && e["kind"] == "download")
        .collect();
    assert_eq!(
        downloads.first().map(|e| &e["phase"]),
        Some(&"start".into())
    );
    let done = downloads
        .iter()
        .find(|e| e["phase"] == "done")
        .unwrap_or_else(|| panic!("no done event: {events:?}"));
    assert_eq!(done["bytes"], 70_000);
    assert!(done["id"].as_str().unwrap().ends_with("/files/payload.bin"));
    assert_eq!(events.last().unwrap()["downloaded"], 70_000);
}
