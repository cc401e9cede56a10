//! End to end: `cairn build` against the real registry (busybox and Debian bases pushed by
//! the harness), real namespaces and the machine's Docker Engine. The cache tests mirror the
//! bug cairn exists for: a changed Dockerfile line must run again, and nothing else may.

mod common;

use common::registry::Registry;
use std::fs;
use std::path::Path;
use std::process::Command;

struct Build {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Build {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "build failed:\n{}", self.stderr);
        self
    }
    /// Step numbers reported CACHED, in order.
    fn cached_steps(&self) -> Vec<usize> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_suffix(" CACHED"))
            .filter_map(|l| l.strip_prefix('#')?.parse().ok())
            .collect()
    }
    fn steps(&self) -> usize {
        self.stderr
            .lines()
            .filter(|l| l.starts_with('#') && l.contains(" [") && l.contains('/'))
            .count()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Build {
    let mut c = common::cairn(root);
    c.arg("build")
        .arg(ctx)
        .args(["--progress=plain", "--format=json"])
        .args(extra);
    let out = c.output().expect("run cairn");
    Build {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

fn docker(args: &[&str]) -> String {
    common::run_ok(Command::new("docker").args(args))
}

fn write(p: &Path, s: &str) {
    fs::write(p, s).unwrap();
}

const CACHE_DOCKERFILE: &str = "ARG BASE
FROM ${BASE}
RUN echo \"first: $(echo one | tr a-z A-Z)\" && echo one > /one
COPY app.txt /app/app.txt
RUN echo \"second: $(echo old | tr a-z A-Z)\" && cat /app/app.txt > /app/copy.txt
RUN echo three > /three
CMD [\"cat\", \"/app/copy.txt\"]
";

/// The regression the product exists for, step by step.
#[test]
fn changed_line_runs_again_and_nothing_else_does() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    let base = format!("{}/cache/busybox:latest", reg.addr);
    common::images::push_busybox(&reg, "cache/busybox:latest");
    let root = common::tempdir();
    let ctx = common::tempdir();
    let df = ctx.path().join("Dockerfile");
    write(&df, CACHE_DOCKERFILE);
    write(&ctx.path().join("app.txt"), "hello v1\n");
    let tag = "cairn-test/cache:one";
    let barg = format!("BASE={base}");
    let args = ["-t", tag, "--build-arg", &barg];

    let cold = build(root.path(), ctx.path(), &args);
    cold.ok();
    assert!(
        cold.stderr.contains("first: ONE") && cold.stderr.contains("second: OLD"),
        "{}",
        cold.stderr
    );
    assert!(
        cold.cached_steps().is_empty(),
        "cold build had cached steps: {}",
        cold.stderr
    );
    let id1 = cold.json()["image_id"].as_str().unwrap().to_string();
    assert_eq!(docker(&["run", "--rm", tag]).trim(), "hello v1");

    // Nothing changed: every step is a hit, nothing runs.
    let warm = build(root.path(), ctx.path(), &args);
    warm.ok();
    assert_eq!(warm.cached_steps().len(), warm.steps(), "{}", warm.stderr);
    assert!(
        !warm.stderr.contains("first: ONE"),
        "a cached step ran: {}",
        warm.stderr
    );
    assert_eq!(warm.json()["all_cached"], "true");
    assert_eq!(warm.json()["image_id"].as_str().unwrap(), id1);

    // Change one RUN line: that step and later ones run; earlier ones are hits; the old
    // command never runs again and the image holds the new result.
    write(&df, &CACHE_DOCKERFILE.replace("echo old", "echo new"));
    let changed = build(root.path(), ctx.path(), &args);
    changed.ok();
    assert!(changed.stderr.contains("second: NEW"), "{}", changed.stderr);
    assert!(
        !changed.stderr.contains("second: OLD"),
        "the old command ran: {}",
        changed.stderr
    );
    assert!(
        !changed.stderr.contains("first: ONE"),
        "an earlier step ran: {}",
        changed.stderr
    );
    let cached = changed.cached_steps();
    // ARG+FROM-level steps before the change (RUN one, COPY) are hits; RUN second and later miss.
    assert!(
        cached.len() >= 2 && cached.len() < changed.steps(),
        "{}",
        changed.stderr
    );
    let id2 = changed.json()["image_id"].as_str().unwrap().to_string();
    assert_ne!(id1, id2);

    // Revert: hits again, same image as the first build.
    write(&df, CACHE_DOCKERFILE);
    let reverted = build(root.path(), ctx.path(), &args);
    reverted.ok();
    assert_eq!(reverted.json()["all_cached"], "true", "{}", reverted.stderr);
    assert_eq!(reverted.json()["image_id"].as_str().unwrap(), id1);

    // Touch the context file without changing it: all hits.
    let f = ctx.path().join("app.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = build(root.path(), ctx.path(), &args);
    touched.ok();
    assert_eq!(
        touched.json()["all_cached"],
        "true",
        "mtime changed the key: {}",
        touched.stderr
    );

    // Change its mode only: the COPY and later steps miss.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let moded = build(root.path(), ctx.path(), &args);
    moded.ok();
    assert_eq!(moded.json()["all_cached"], "false", "{}", moded.stderr);
    assert!(!moded.stderr.contains("first: ONE"), "{}", moded.stderr);
    assert!(moded.stderr.contains("second: OLD"), "{}", moded.stderr);

    // Change its content: the COPY misses and the new content arrives.
    write(&f, "hello v2\n");
    let content = build(root.path(), ctx.path(), &args);
    content.ok();
    assert!(content.stderr.contains("second: OLD") && !content.stderr.contains("first: ONE"));
    assert_eq!(docker(&["run", "--rm", tag]).trim(), "hello v2");

    // Rename the target tag: all hits, the loaded image ID is unchanged.
    let renamed = build(
        root.path(),
        ctx.path(),
        &["-t", "cairn-test/cache:renamed", "--build-arg", &barg],
    );
    renamed.ok();
    assert_eq!(renamed.json()["all_cached"], "true", "{}", renamed.stderr);
    assert_eq!(renamed.json()["image_id"], content.json()["image_id"]);

    // A new image pushed under the same base tag: FROM and everything after miss.
    common::images::push_multi_layer(&reg, "cache/busybox:latest", 1);
    let rebased = build(root.path(), ctx.path(), &args);
    rebased.ok();
    assert!(
        rebased.cached_steps().is_empty(),
        "steps hit after the base changed: {}",
        rebased.stderr
    );
    assert!(rebased.stderr.contains("first: ONE"));
    assert!(
        rebased.stderr.contains("miss: base image changed"),
        "--explain did not name the base: {}",
        rebased.stderr
    );
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag, "cairn-test/cache:renamed"])
        .output();
}

/// Two builds into two empty stores with SOURCE_DATE_EPOCH give the same image digest.
#[test]
fn source_date_epoch_builds_are_reproducible() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "repro/busybox:1");
    let ctx = common::tempdir();
    write(
        &ctx.path().join("Dockerfile"),
        &format!(
            "FROM {}/repro/busybox:1\nRUN mkdir -p /data && echo deterministic > /data/f && ln -s f /data/l\nCOPY x /x\nENV A=b\nLABEL k=v\n",
            reg.addr
        ),
    );
    write(&ctx.path().join("x"), "payload");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let root = common::tempdir();
        let out = tempfile::NamedTempFile::new().unwrap();
        let dest = format!("type=docker,dest={}", out.path().display());
        let mut c = common::cairn(root.path());
        c.env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("build")
            .arg(ctx.path())
            .args(["--format=json", "--progress=plain", "-o", &dest]);
        let stdout = common::run_ok(&mut c);
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        ids.push((v["config_digest"].clone(), v["manifest_digest"].clone()));
    }
    assert_eq!(ids[0], ids[1]);
}

/// The Coder-style workspace image: apt-get on a debootstrapped Debian, useradd, COPY, USER,
/// WORKDIR, CMD — built, loaded and run.
#[test]
fn workspace_dockerfile_builds_loads_and_runs() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_debian(&reg, "ws/debian:bookworm");
    let root = common::tempdir();
    let ctx = common::tempdir();
    common::run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/workspace/."))
            .arg(ctx.path()),
    );
    let tag = "cairn-test/workspace:e2e";
    let barg = format!("BASE={}/ws/debian:bookworm", reg.addr);
    let b = build(root.path(), ctx.path(), &["-t", tag, "--build-arg", &barg]);
    b.ok();
    let id = b.json()["image_id"].as_str().unwrap().to_string();
    let inspected = docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
    assert_eq!(inspected.trim(), id);
    let out = docker(&["run", "--rm", tag, "/usr/local/bin/startup.sh", "--once"]);
    assert!(out.contains("user=coder"), "{out}");
    assert!(out.contains("python=Python 3."), "{out}");
    assert!(out.contains("kind=coder"), "{out}");
    let pwd = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "pwd; stat -c '%U %a' /home/coder /usr/local/bin/startup.sh; cat README; ls -A",
    ]);
    assert!(pwd.starts_with("/home/coder\n"), "{pwd}");
    assert!(
        pwd.contains("coder 755") || pwd.contains("coder 750"),
        "{pwd}"
    );
    assert!(pwd.contains("root 755"), "{pwd}");
    assert!(pwd.contains("built by cairn"), "{pwd}");
    assert!(!pwd.contains("secret.env"), ".dockerignore ignored: {pwd}");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}

/// The Coder provisioner's case: cairn run by an unprivileged user with subordinate ids (and
/// in the docker group). RUN as container root, chown to a user made in the step, COPY
/// --chown by name, a whiteout — all come out right in `docker run`.
#[test]
fn rootless_build_as_an_unprivileged_user() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "rootless/busybox:1");
    let dir = common::tempdir();
    let (ctx, store) = (dir.path().join("ctx"), dir.path().join("store"));
    fs::create_dir_all(&ctx).unwrap();
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM {}/rootless/busybox:1\n\
             RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /data /owned && chown 1234:1234 /owned && echo hi > /data/f && rm /etc/group && id -u\n\
             RUN echo secret > /root/private && chmod 600 /root/private\n\
             COPY --chown=app f.txt /owned/\n\
             USER app\n",
            reg.addr
        ),
    );
    write(&ctx.join("f.txt"), "copied");
    common::run_ok(
        Command::new("chown")
            .args(["-R", "cairntest"])
            .arg(dir.path()),
    );
    let tag = "cairn-test/rootless:1";
    let out = common::run(
        Command::new("runuser")
            .args(["-u", "cairntest", "--", "env", "HOME=/home/cairntest"])
            .arg(format!("CAIRN_ROOT={}", store.display()))
            .arg(common::cairn_bin())
            .arg("build")
            .arg(&ctx)
            .args(["-t", tag, "--progress=plain"]),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines().any(|l| l.ends_with(" 0")),
        "RUN did not run as container root: {log}"
    );
    let ls = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "ls -lnd /owned /owned/f.txt /data/f; id -u; test -e /etc/group || echo group-gone",
    ]);
    let line = |path: &str| {
        ls.lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} missing: {ls}"))
    };
    assert!(
        line(" /owned").contains(" 1234 ") && line(" /owned").starts_with('d'),
        "{ls}"
    );
    assert!(
        line("/owned/f.txt").contains(" 1234 "),
        "COPY --chown=app: {ls}"
    );
    assert!(
        line("/data/f").contains(" 0        0 "),
        "root-made file: {ls}"
    );
    assert!(ls.contains("\n1234\n") && ls.contains("group-gone"), "{ls}");
    // Nothing left in the store's temporary area, though the steps' files belonged to
    // subordinate ids this user cannot delete directly.
    let left: Vec<_> = fs::read_dir(store.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // A file only container root may read (0600) still made it into the layer.
    let private = docker(&[
        "run",
        "--rm",
        "--user",
        "root",
        tag,
        "sh",
        "-c",
        "stat -c '%u %a' /root/private; cat /root/private",
    ]);
    assert_eq!(private.trim(), "0 600\nsecret", "{private}");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}

/// `--progress=json` promises one JSON event per stderr line. Regression: as a user with no
/// subordinate ids the sandbox printed its "no /etc/subuid range" warning straight to
/// stderr, past the event stream; now it arrives as an event like every other warning.
#[test]
fn json_progress_without_subordinate_ids_is_json_on_every_stderr_line() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "noids/busybox:1");
    let dir = common::tempdir();
    let (ctx, store) = (dir.path().join("ctx"), dir.path().join("store"));
    // An archive, not a load: cairnnoids is not in the docker group.
    let dest = format!(
        "type=docker,dest={}",
        dir.path().join("image.tar").display()
    );
    fs::create_dir_all(&ctx).unwrap();
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM {}/noids/busybox:1\nRUN echo from-the-step && id -u\n",
            reg.addr
        ),
    );
    common::run_ok(
        Command::new("chown")
            .args(["-R", "cairnnoids"])
            .arg(dir.path()),
    );
    let out = common::run(
        Command::new("runuser")
            .args(["-u", "cairnnoids", "--", "env", "HOME=/home/cairnnoids"])
            .arg(format!("CAIRN_ROOT={}", store.display()))
            .arg(common::cairn_bin())
            .arg("build")
            .arg(&ctx)
            .args(["--progress=json", "--format=json", "-o", &dest]),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{log}"))
        })
        .collect();
    let text = |v: &serde_json::Value| v.to_string();
    assert!(
        events.iter().any(|e| text(e).contains("/etc/subuid")),
        "the missing range is reported as an event: {log}"
    );
    assert!(
        events.iter().any(|e| text(e).contains("from-the-step")),
        "the step ran and its output is an event: {log}"
    );
}

/// Regression: a `COPY <<EOF` file's mode came from the umask, so the same Dockerfile had a
/// different key on a machine (or user) with another umask.
#[test]
fn heredoc_copy_key_does_not_depend_on_the_umask() {
    let ctx = common::tempdir();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY <<EOF /etc/motd\nhello\nEOF\n",
    );
    let keys: Vec<String> = ["022", "077"]
        .iter()
        .map(|umask| {
            let root = common::tempdir();
            common::run_ok(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("umask {umask} && exec \"$0\" key \"$1\" --quiet"))
                    .arg(common::cairn_bin())
                    .arg(ctx.path())
                    .env("CAIRN_ROOT", root.path()),
            )
            .trim()
            .to_string()
        })
        .collect();
    assert!(keys[0].starts_with("sha256:"), "{keys:?}");
    assert_eq!(keys[0], keys[1]);
}
