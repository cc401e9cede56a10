//! Every documented exit code, the ANSI-free log stream Terraform captures, and SIGTERM
//! during a long RUN (nothing left behind; the next build works).

mod common;

use common::registry::Registry;
use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    common::run(
        common::cairn(root)
            .arg("build")
            .arg(ctx)
            .args(["--progress=plain", "-o", "type=oci,dest=/dev/null/none"])
            .args(extra),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = common::tempdir();
    fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

#[test]
fn bad_dockerfile_is_2_with_file_line_and_column() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nCOPY --bogus=1 a b\n");
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:2:"), "{err}");
    assert!(err.contains("--bogus"), "{err}");
}

/// Errors found after parsing (an unknown `--from` stage, a bad expansion) name the file too.
#[test]
fn plan_errors_name_the_file_and_line() {
    let root = common::tempdir();
    let ctx =
        context("FROM scratch AS a\nCOPY --from=b /x /y\nFROM scratch AS b\nCOPY --from=a /x /y\n");
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Dockerfile:"), "{}", stderr(&out));
    let ctx = context("FROM scratch\nLABEL a=\"${MISSING:?must be set}\"\n");
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Dockerfile:2: "), "{}", stderr(&out));
}

/// A RUN flag cairn cannot honour is refused with its line, never silently ignored: insecure
/// mode needs its entitlement, and with it is still refused (every step keeps Docker's
/// default capabilities). (`RUN --mount` used to be the example; every mount type is
/// supported now, see tests/mounts.rs.)
#[test]
fn unsupported_run_flag_is_2_and_never_ignored() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nRUN --security=insecure true\n");
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Dockerfile:2: RUN --security=insecure needs the entitlement: cairn build --allow security.insecure"
        ),
        "{}",
        stderr(&out)
    );
    let out = build(root.path(), ctx.path(), &["--allow", "security.insecure"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Dockerfile:2: RUN --security=insecure is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn failing_run_is_3_and_names_the_command_and_its_status() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "codes/busybox:1");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/codes/busybox:1\nRUN echo about to fail && exit 7\n",
        reg.addr
    ));
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("RUN exited with 7"), "{err}");
    assert!(err.contains("about to fail"), "{err}");
    assert!(err.contains(":2"), "no line number: {err}");
}

#[test]
fn unreachable_registry_is_4_and_names_the_registry() {
    let root = common::tempdir();
    let port = common::registry::free_port();
    let ctx = context(&format!("FROM 127.0.0.1:{port}/nothing/here:1\n"));
    let out = build(root.path(), ctx.path(), &["--pull=always"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreachable_docker_is_5_and_says_what_to_do() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .arg("build")
            .arg(ctx.path())
            .args(["--progress=plain", "-t", "cairn-test/codes:docker"]),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn unusable_store_is_6() {
    let dir = common::tempdir();
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, "x").unwrap();
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let out = build(&not_a_dir, ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

/// An output that cannot be written is a local (store/disk) problem, not Docker's.
#[test]
fn unwritable_output_is_6_not_a_docker_error() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let out = build(root.path(), ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("/dev/null/none"), "{}", stderr(&out));
}

/// Builds `FROM` a busybox pushed as `repo_tag` to a fresh registry, then `rest`, into a
/// docker-archive, with `extra` flags.
fn busybox_build(repo_tag: &str, rest: &str, extra: &[&str]) -> Output {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, repo_tag);
    let root = common::tempdir();
    let ctx = context(&format!("FROM {}/{repo_tag}\n{rest}", reg.addr));
    common::run(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(extra)
            .arg("-o")
            .arg(format!(
                "type=docker,dest={}/img.tar",
                root.path().display()
            )),
    )
}

/// Terraform captures stderr line by line: no escape sequences when it is not a terminal.
#[test]
fn logs_off_a_terminal_have_no_escape_sequences() {
    let out = busybox_build("codes/busybox:2", "RUN echo plain output\nLABEL x=y\n", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("plain output"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "escape sequence in non-TTY output: {err:?}"
    );
    assert!(
        !err.contains('\r'),
        "carriage return in non-TTY output: {err:?}"
    );
}

/// `--progress=json`: every stderr line is one JSON event, pull progress included.
#[test]
fn json_progress_is_json_on_every_line() {
    let out = busybox_build(
        "codes/busybox:4",
        "RUN echo in-step\n",
        &["--progress=json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["event"].is_string(), "{line}");
    }
    assert!(err.contains("\"line\":\"in-step\""), "{err}");
}

/// Processes of this test's build still alive: sandbox helpers, or anything whose root or
/// working directory is inside the test's store.
fn sandbox_processes_under(store: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let inside = ["root", "cwd"]
            .iter()
            .any(|l| fs::read_link(e.path().join(l)).is_ok_and(|t| t.starts_with(store)));
        let env = fs::read(e.path().join("environ")).unwrap_or_default();
        let ours =
            String::from_utf8_lossy(&env).contains(&format!("CAIRN_ROOT={}", store.display()));
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if inside || (ours && String::from_utf8_lossy(&cmd).contains("__cairn-sandbox")) {
            n += 1;
        }
    }
    n
}

fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p))
        .map(String::from)
        .collect()
}

#[test]
fn sigterm_during_a_long_run_stops_cleans_up_and_exits_130() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "codes/busybox:3");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/codes/busybox:3\nRUN echo started && (sleep 300 &) && sleep 300\n",
        reg.addr
    ));
    let mut child = common::cairn(root.path())
        .arg("build")
        .arg(ctx.path())
        .args(["--progress=plain", "-o", "type=oci,dest=/dev/null/none"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the step itself prints (the sandbox is up and the RUN is running).
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.ends_with(" started") => break,
            _ => {}
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?} to stop",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("started"), "the step never ran: {log}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sandbox_processes_under(root.path()),
        0,
        "a sandbox process survived SIGTERM"
    );
    assert!(
        mounts_under(root.path()).is_empty(),
        "mounts left: {:?}",
        mounts_under(root.path())
    );
    let leftovers: Vec<_> = fs::read_dir(root.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "temporary files left in the store: {leftovers:?}"
    );
    // The next build works.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}/codes/busybox:3\nRUN echo second build\n", reg.addr),
    )
    .unwrap();
    let out = build(root.path(), ctx.path(), &[]);
    // `dest=/dev/null/none` cannot be created: the build itself must have succeeded first.
    assert!(stderr(&out).contains("second build"), "{}", stderr(&out));
}
