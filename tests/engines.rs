//! `cairn build --load` against every kind of engine a user has: the machine's Docker
//! 20.10 (classic image store), Docker Engine 26 with the containerd image store (started
//! beside it by `scripts/engines`) on its unix socket and on TCP+TLS, and Podman's
//! Docker-compatible socket. Each: the load, `docker run`, the ID (`--iidfile`, `--format
//! json` and the engine agree), a no-op build that sends nothing (no `load` event), a new
//! tag, and a loop of late changes (a handful; 50 with `CAIRN_TEST_LONG=1`) that each
//! reload and run.

mod common;

use common::engines::{self, now, Engine};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A context whose image is busybox plus `/x` holding `x`: no base image, no RUN.
fn context(dir: &Path, x: &str) {
    fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    fs::write(dir.join("x"), x).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY x /x\nCMD [\"/bin/busybox\", \"cat\", \"/x\"]\n",
    )
    .unwrap();
}

fn unique_tag(what: &str) -> String {
    format!(
        "cairn-test-engines-{what}-{}:t{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    )
}

/// `cairn build` of `ctx` into engine `e` with `args`; the `--format json` result.
fn build(e: &Engine, root: &Path, ctx: &Path, args: &[&str]) -> serde_json::Value {
    let mut c = common::cairn(root);
    e.env(&mut c)
        .arg("build")
        .arg(ctx)
        .args(["--progress=plain", "--format=json"])
        .args(args);
    let out = common::run_ok(&mut c);
    serde_json::from_str(out.trim()).unwrap_or_else(|err| panic!("{err}: {out}"))
}

fn run_cat(e: &Engine, tag: &str) -> String {
    common::run_ok(e.docker().args(["run", "--rm", "--network", "none", tag]))
}

/// The checks every engine must pass; returns the no-op build's wall time.
fn exercise(e: &Engine, extra: &[&str]) -> f64 {
    let root = common::tempdir();
    let ctx = common::tempdir();
    // Content of this engine's test only: tests run at once may share an engine.
    let v0 = format!("{}-v0{}", e.name, extra.join(""));
    context(ctx.path(), &v0);
    let tag = unique_tag(e.name);
    let tag2 = unique_tag(&format!("{}-2", e.name));
    // Removed however the test ends.
    let mut to_remove = Rmi(e.clone(), vec![tag.clone(), tag2.clone()]);
    let iid = root.path().join("iid");
    let iid_arg = format!("--iidfile={}", iid.display());
    let mut args = vec!["-t", tag.as_str(), iid_arg.as_str()];
    args.extend(extra);

    let before = now();
    let r = build(e, root.path(), ctx.path(), &args);
    let id = r["image_id"].as_str().unwrap().to_string();
    to_remove.1.push(id.clone());
    // The first build loads, once (and so the count below can see a load).
    assert_eq!(e.loads_between(&id, before, now() + 0.5), 1, "{}", e.name);
    let expected = if e.containerd_store {
        &r["manifest_digest"]
    } else {
        &r["config_digest"]
    };
    assert_eq!(id, expected.as_str().unwrap(), "{}: {r}", e.name);
    assert_eq!(fs::read_to_string(&iid).unwrap(), id, "{}", e.name);
    assert_eq!(e.image_id(&tag).as_deref(), Some(id.as_str()), "{}", e.name);
    assert_eq!(run_cat(e, &tag), v0, "{}", e.name);

    // No-op: the same ID, nothing sent.
    let t0 = now();
    let started = Instant::now();
    let r = build(e, root.path(), ctx.path(), &args);
    let noop = started.elapsed().as_secs_f64();
    assert_eq!(r["image_id"], id.as_str(), "{}", e.name);
    assert_eq!(r["all_cached"], "true", "{}", e.name);
    assert_eq!(fs::read_to_string(&iid).unwrap(), id, "{}", e.name);
    // A new tag on a no-op: tagged, not loaded.
    let mut both = args.clone();
    both.extend(["-t", tag2.as_str()]);
    let r = build(e, root.path(), ctx.path(), &both);
    let t2 = now();
    assert_eq!(r["image_id"], id.as_str(), "{}", e.name);
    assert_eq!(
        e.image_id(&tag2).as_deref(),
        Some(id.as_str()),
        "{}",
        e.name
    );
    assert_eq!(
        e.loads_between(&id, t0, t2 + 0.5),
        0,
        "{}: a no-op build loaded the image",
        e.name
    );

    // Late changes: each reloads, runs, and agrees on the ID, without a failed load.
    let n = if std::env::var_os("CAIRN_TEST_LONG").is_some() {
        50
    } else {
        4
    };
    for i in 1..=n {
        let v = format!("{}-v{i}{}", e.name, extra.join(""));
        fs::write(ctx.path().join("x"), &v).unwrap();
        let r = build(e, root.path(), ctx.path(), &args);
        let id = r["image_id"].as_str().unwrap().to_string();
        to_remove.1.push(id.clone());
        assert_eq!(r["steps_cached"], "1/3", "{}: {r}", e.name);
        assert_eq!(fs::read_to_string(&iid).unwrap(), id, "{}", e.name);
        assert_eq!(e.image_id(&tag).as_deref(), Some(id.as_str()), "{}", e.name);
        assert_eq!(run_cat(e, &tag), v, "{}", e.name);
    }
    drop(to_remove);
    noop
}

/// Images removed from an engine when dropped.
struct Rmi(Engine, Vec<String>);

impl Drop for Rmi {
    fn drop(&mut self) {
        self.0.rmi(&self.1);
    }
}

#[test]
fn system_engine_classic_store() {
    common::require_root();
    let e = engines::system();
    let t = exercise(&e, &[]);
    eprintln!("no-op --load, {}: {:.0} ms", e.name, t * 1000.0);
}

#[test]
fn engine26_containerd_store() {
    let e = engines::engine26();
    let t = exercise(&e, &[]);
    eprintln!("no-op --load, {}: {:.0} ms", e.name, t * 1000.0);
    // gzip layers: the ID is the manifest digest there too.
    exercise(&e, &["--compression=gzip"]);
}

#[test]
fn engine26_over_tcp_and_tls() {
    let e = engines::engine26_tls();
    let t = exercise(&e, &[]);
    eprintln!("no-op --load, {}: {:.0} ms", e.name, t * 1000.0);
}

/// A docker-archive output says both digests in `--format json`: engines with the classic
/// image store (and Podman) show the config digest after `docker load -i`, which is also
/// what `--iidfile` holds; the containerd image store shows the archive's manifest digest.
#[test]
fn archive_ids_on_both_stores() {
    let root = common::tempdir();
    let ctx = common::tempdir();
    context(ctx.path(), "archived");
    let archive = root.path().join("img.tar");
    let iid = root.path().join("iid");
    let tag = unique_tag("archive");
    let r = build(
        &engines::system(),
        root.path(),
        ctx.path(),
        &[
            "-t",
            &tag,
            &format!("--iidfile={}", iid.display()),
            "-o",
            &format!("type=docker,dest={}", archive.display()),
        ],
    );
    let config = r["config_digest"].as_str().unwrap();
    let manifest = r["manifest_digest"].as_str().unwrap();
    assert_eq!(r["image_id"], config);
    assert_eq!(fs::read_to_string(&iid).unwrap(), config);
    for e in [engines::system(), engines::engine26()] {
        common::run_ok(e.docker().args(["load", "-i"]).arg(&archive));
        let want = if e.containerd_store { manifest } else { config };
        assert_eq!(e.image_id(&tag).as_deref(), Some(want), "{}", e.name);
        assert_eq!(run_cat(&e, &tag), "archived", "{}", e.name);
        e.rmi(&[tag.clone(), want.to_string()]);
    }
}

/// Podman's Docker-compatible API (`podman system service`, on a socket and store of this
/// test's own) as a `--load` target: loads, IDs (config digests there), a no-op that sends
/// nothing (counted in the service's request log) and a late change.
#[test]
fn podman_socket_as_load_target() {
    common::require_root();
    let dir = common::tempdir();
    let sock = dir.path().join("podman.sock");
    let log = dir.path().join("service.log");
    let podman = |args: &[&str]| {
        let mut c = Command::new(common::which("podman"));
        c.arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(args);
        c
    };
    // Podman mounts its store's overlay directory on itself: unmounted when done.
    let _unmount = UnmountOnDrop(dir.path().join("root").join("overlay"));
    let child = podman(&["--log-level=debug", "system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _service = KillOnDrop(child);
    for _ in 0..300 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let e = Engine {
        name: "podman",
        host: format!("unix://{}", sock.display()),
        cert_path: None,
        containerd_store: false,
    };
    let loads = || {
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"POST /") && l.contains("/images/load"))
            .count()
    };
    let cat_x = |tag: &str| {
        let mnt = common::run_ok(&mut podman(&["image", "mount", tag]));
        let x = fs::read_to_string(Path::new(mnt.trim()).join("x")).unwrap();
        let _ = podman(&["image", "unmount", tag]).output();
        x
    };
    let root = common::tempdir();
    let ctx = common::tempdir();
    context(ctx.path(), "p0");
    let tag = "cairn-test/podman:1";
    let r = build(&e, root.path(), ctx.path(), &["-t", tag]);
    let id = r["image_id"].as_str().unwrap().to_string();
    assert_eq!(id, r["config_digest"].as_str().unwrap());
    assert_eq!(e.image_id(tag).as_deref(), Some(id.as_str()));
    assert_eq!(cat_x(tag), "p0");
    assert_eq!(loads(), 1, "the first build loads once");

    let r = build(&e, root.path(), ctx.path(), &["-t", tag]);
    assert_eq!(r["image_id"], id.as_str());
    assert_eq!(loads(), 1, "a no-op build sent the image again");

    fs::write(ctx.path().join("x"), "p1").unwrap();
    let r = build(&e, root.path(), ctx.path(), &["-t", tag]);
    assert_ne!(r["image_id"], id.as_str());
    assert_eq!(e.image_id(tag).as_deref(), r["image_id"].as_str());
    assert_eq!(cat_x(tag), "p1");
    assert_eq!(loads(), 2);
}

/// Kills a process this test started, by its PID, when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A docker context made by the docker CLI (TCP+TLS to Engine 26, its certificates kept
/// in the context store) is found as the CLI finds it: `DOCKER_CONTEXT`, else the config's
/// `currentContext`.
#[test]
fn docker_contexts_reach_the_engine() {
    let e = engines::engine26();
    let config = common::tempdir();
    let tls = Path::new(engines::ENGINE26_TLS);
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", config.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        c
    };
    common::run_ok(docker().args([
        "context",
        "create",
        "cairn-e26",
        "--docker",
        &format!(
            "host=tcp://{},ca={},cert={},key={}",
            engines::ENGINE26_TCP,
            tls.join("ca.pem").display(),
            tls.join("cert.pem").display(),
            tls.join("key.pem").display()
        ),
    ]));
    let root = common::tempdir();
    let ctx = common::tempdir();
    context(ctx.path(), "by context");
    let tag = unique_tag("context");
    let cairn = |env_context: bool| {
        let mut c = common::cairn(root.path());
        c.env("DOCKER_CONFIG", config.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
        if env_context {
            c.env("DOCKER_CONTEXT", "cairn-e26");
        }
        c.arg("build").arg(ctx.path()).args(["-q", "-t", &tag]);
        common::run_ok(&mut c).trim().to_string()
    };
    let id = cairn(true);
    assert_eq!(e.image_id(&tag).as_deref(), Some(id.as_str()));
    assert_eq!(run_cat(&e, &tag), "by context");
    e.rmi(std::slice::from_ref(&tag));
    common::run_ok(docker().args(["context", "use", "cairn-e26"]));
    assert_eq!(cairn(false), id);
    assert_eq!(e.image_id(&tag).as_deref(), Some(id.as_str()));
    e.rmi(&[tag, id]);
}

/// An engine whose certificate the given CA did not sign is refused: exit 5, the address
/// and the reason named.
#[test]
fn tls_with_the_wrong_ca_is_refused() {
    engines::engine26();
    let certs = common::tempdir();
    let tls = Path::new(engines::ENGINE26_TLS);
    // A CA of its own, which signed nothing the engine has.
    common::run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=other-ca",
                "-keyout",
            ])
            .arg(certs.path().join("ca-key.pem"))
            .arg("-out")
            .arg(certs.path().join("ca.pem")),
    );
    for f in ["cert.pem", "key.pem"] {
        fs::copy(tls.join(f), certs.path().join(f)).unwrap();
    }
    let root = common::tempdir();
    let ctx = common::tempdir();
    context(ctx.path(), "never");
    let out = common::run(
        common::cairn(root.path())
            .env("DOCKER_HOST", format!("tcp://{}", engines::ENGINE26_TCP))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs.path())
            .env_remove("DOCKER_CONTEXT")
            .arg("build")
            .arg(ctx.path())
            .args(["-q", "-t", "cairn-test/never:1"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(engines::ENGINE26_TCP), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// Unmounts a path when dropped (a mount this test's podman made), so its temporary
/// directory can go.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
}

/// `DOCKER_HOST=ssh://root@127.0.0.1:PORT`: cairn runs `ssh … docker system dial-stdio` as
/// the docker CLI does, and speaks the Engine API through it (no docker CLI on this side
/// is used; the remote's is). Load, ID, a no-op that sends nothing, and `docker run`.
#[test]
fn ssh_engine() {
    let e = engines::engine26();
    let sshd = engines::Sshd::start();
    let path = format!(
        "{}:{}",
        sshd.path.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let remote = Engine {
        name: "ssh",
        host: format!("ssh://root@127.0.0.1:{}", sshd.port),
        cert_path: None,
        containerd_store: true,
    };
    let root = common::tempdir();
    let ctx = common::tempdir();
    context(ctx.path(), "over ssh");
    let tag = unique_tag("ssh");
    let cairn = || {
        let mut c = common::cairn(root.path());
        remote.env(&mut c).env("PATH", &path);
        c.arg("build")
            .arg(ctx.path())
            .args(["--format=json", "--progress=plain", "-t", &tag]);
        let out = common::run_ok(&mut c);
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let before = now();
    let r = cairn();
    let id = r["image_id"].as_str().unwrap().to_string();
    assert_eq!(id, r["manifest_digest"].as_str().unwrap());
    assert_eq!(e.image_id(&tag).as_deref(), Some(id.as_str()));
    assert_eq!(run_cat(&e, &tag), "over ssh");
    assert_eq!(e.loads_between(&id, before, now() + 0.5), 1);
    let t0 = now();
    assert_eq!(cairn()["image_id"], id.as_str());
    assert_eq!(e.loads_between(&id, t0, now() + 0.5), 0, "a no-op loaded");
    e.rmi(&[tag, id]);
}

/// The diffIDs of `reference` in engine `e`, bottom first.
fn diff_ids(e: &Engine, reference: &str) -> Vec<String> {
    let out = common::run_ok(e.docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        reference,
    ]));
    serde_json::from_str(out.trim()).unwrap_or_else(|err| panic!("{err}: {out}"))
}

/// Untagged images of `e` whose layers are exactly `layers`: a preloaded base left behind.
fn left_behind(e: &Engine, layers: &[String]) -> Vec<String> {
    let out = common::run_ok(e.docker().args([
        "images",
        "-aq",
        "--no-trunc",
        "--filter",
        "dangling=true",
    ]));
    out.lines()
        .filter(|id| {
            let got = common::run(e.docker().args([
                "image",
                "inspect",
                "--format",
                "{{json .RootFS.Layers}}",
                id,
            ]));
            serde_json::from_slice::<Vec<String>>(&got.stdout).is_ok_and(|l| l == layers)
        })
        .map(str::to_string)
        .collect()
}

/// With `--load`, the final stage's base image goes into the engine while the steps run:
/// the final load sends only the build's own layers (far less than the whole image), and
/// the untagged image the base went in as is removed again, after a good build and after
/// a failed one.
#[test]
fn the_base_is_loaded_ahead_and_nothing_of_it_stays() {
    let e = engines::system();
    let reg = common::registry::Registry::start();
    common::images::push_multi_layer(&reg, "preload/base:1", 2);
    let root = common::tempdir();
    let ctx = common::tempdir();
    let marker = format!("preload-{}-{}", std::process::id(), now());
    // The Dockerfile: the base, then `run` as the one step.
    let dockerfile = |run: &str| {
        let df = format!(
            "FROM {}/preload/base:1\nRUN {run}\nCMD [\"cat\", \"/marker\"]\n",
            reg.addr
        );
        fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    };
    let tag = unique_tag("preload");
    // A build into the engine under `tag`: whether it succeeded, and its stderr.
    let build = |progress: &str| {
        let mut c = common::cairn(root.path());
        e.env(&mut c)
            .arg("build")
            .arg(ctx.path())
            .args([progress, "-t", &tag]);
        let out = common::run(&mut c);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    dockerfile(&format!("echo {marker} > /marker"));
    let (ok, stderr) = build("--progress=json");
    assert!(ok, "{stderr}");
    let loaded: u64 = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "transfer" && v["kind"] == "load" && v["phase"] == "done")
        .and_then(|v| v["bytes"].as_u64())
        .unwrap_or_else(|| panic!("no load: {stderr}"));
    assert_eq!(run_cat(&e, &tag).trim(), marker);
    assert!(
        stderr.contains("loading the base image into Docker"),
        "{stderr}"
    );

    // A no-op touches nothing of the base: no step misses, so nothing is preloaded.
    let (ok, noop) = build("--progress=plain");
    assert!(ok, "{noop}");
    assert!(!noop.contains("loading the base image"), "{noop}");

    // A late change under the same tag: the tagged image has the base, nothing is preloaded.
    dockerfile(&format!("echo {marker}-late > /marker"));
    let (ok, late) = build("--progress=plain");
    assert!(ok, "{late}");
    assert!(!late.contains("loading the base image"), "{late}");
    assert_eq!(run_cat(&e, &tag).trim(), format!("{marker}-late"));

    // The whole image as an archive, for scale: the base is nearly all of it.
    let archive = ctx.path().join("all.tar");
    common::run_ok(
        common::cairn(root.path())
            .arg("build")
            .arg(ctx.path())
            .args(["--progress=plain", "-o"])
            .arg(format!("type=docker,dest={}", archive.display())),
    );
    let whole = fs::metadata(&archive).unwrap().len();
    assert!(
        loaded * 4 < whole,
        "loaded {loaded} bytes of a {whole}-byte image"
    );

    let mut base = diff_ids(&e, &tag);
    base.pop();
    assert_eq!(left_behind(&e, &base), Vec::<String>::new());

    // A failing build leaves nothing either.
    dockerfile(&format!("echo {marker}-2 > /marker && exit 3"));
    let (ok, _) = build("--progress=plain");
    assert!(!ok);
    assert_eq!(left_behind(&e, &base), Vec::<String>::new());
    let _ = e.docker().args(["rmi", &tag]).output();
}
