//! `RUN --mount` end to end, root and rootless: cache mounts kept across builds and out of
//! layers, `sharing=locked` across concurrent builds, tmpfs, mounts over missing paths,
//! through symlinks and under WORKDIR, secrets that leave no trace (store, archive, logs,
//! `docker history`), an SSH agent forwarded into a step, and the `--allow` entitlements.
//! Against the real registry harness (busybox base), namespaces and Docker.

mod common;

use common::registry::Registry;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Out {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Out {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "build failed:\n{}", self.stderr);
        self
    }
    fn all_cached(&self) -> bool {
        self.stdout.contains("\"all_cached\":\"true\"")
    }
}

fn out(o: Output) -> Out {
    Out {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code(),
    }
}

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Out {
    let mut c = common::cairn(root);
    c.arg("build")
        .arg(ctx)
        .args(["--progress=plain", "--format=json"])
        .args(extra);
    out(c.output().expect("run cairn"))
}

fn docker(args: &[&str]) -> String {
    common::run_ok(Command::new("docker").args(args))
}

fn docker_rmi(tag: &str) {
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = common::tempdir();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// Every regular file under `dir` (sockets and the like skipped) that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                if let Ok(bytes) = fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// A cache mount's files are there for the next build (another Dockerfile naming the same
/// id), are never in the layer, and a fresh cache gets the mode and owner asked for.
#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_layer() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:1");
    let root = common::tempdir();
    let first = context(&format!(
        "FROM {}/mounts/busybox:1\n\
         RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs,uid=1234,gid=99,mode=0750 \
             stat -c 'owner %u:%g %a' /var/cache/pkgs && echo downloaded > /var/cache/pkgs/pkg.deb && echo installed > /installed\n",
        reg.addr
    ));
    let tag = "cairn-test/mounts-cache:1";
    let b = build(root.path(), first.path(), &["-t", tag]);
    b.ok();
    assert!(b.stderr.contains("owner 1234:99 750"), "{}", b.stderr);
    let ls = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "cat /installed; ls -a /var/cache 2>&1; test -e /var/cache/pkgs && echo STUB-LEFT; true",
    ]);
    assert!(ls.contains("installed"), "{ls}");
    assert!(
        !ls.contains("pkgs") && !ls.contains("STUB-LEFT"),
        "the cache reached the layer: {ls}"
    );

    // Another Dockerfile, another target, the same id: the first build's file is there.
    let second = context(&format!(
        "FROM {}/mounts/busybox:1\n\
         RUN --mount=type=cache,id=pkgs,target=/cache,ro cat /cache/pkg.deb && (touch /cache/x 2>/dev/null || echo read-only)\n",
        reg.addr
    ));
    let b = build(root.path(), second.path(), &["-t", tag]);
    b.ok();
    assert!(
        b.stderr.contains("downloaded") && b.stderr.contains("read-only"),
        "{}",
        b.stderr
    );
    // The cache mount lives in the store, apart from layers.
    let caches: Vec<_> = fs::read_dir(root.path().join("cache-mounts"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(caches[0].path().join("pkg.deb").is_file());
    docker_rmi(tag);

    // `cairn cache` shows cache mounts apart from layers; a plain prune keeps them,
    // `--mounts` removes them (and nothing else).
    let cache = |args: &[&str]| common::run_ok(common::cairn(root.path()).arg("cache").args(args));
    let ls = cache(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("pkgs ") && l.contains(" 1 ")),
        "{ls}"
    );
    assert!(
        cache(&["du"]).lines().any(|l| l.starts_with("mounts ")),
        "cache du"
    );
    cache(&["prune"]);
    assert!(
        cache(&["ls"]).contains("pkgs"),
        "a plain prune removed a cache mount"
    );
    let blobs_before = fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    let pruned = cache(&["prune", "--mounts"]);
    assert!(pruned.contains("removed 1 cache mounts"), "{pruned}");
    assert!(!cache(&["ls"]).contains("pkgs"));
    let blobs_after = fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs_before, blobs_after, "prune --mounts removed blobs");
}

/// Several mounts in one RUN: a tmpfs through a symlink of the image, a relative cache
/// target under WORKDIR, both over paths the image lacks; none of them reaches the layer.
#[test]
fn mounts_through_symlinks_under_workdir_and_over_missing_paths() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:2");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:2\n\
         RUN mkdir /real && ln -s /real /link && ln -s ../../../../../tmp /escape\n\
         WORKDIR /w\n\
         RUN --mount=type=tmpfs,target=/link/t,size=1m --mount=type=cache,target=rel/c --mount=type=tmpfs,target=/escape/e \
             grep -E ' /real/t | /w/rel/c | /tmp/e ' /proc/self/mounts | cut -d' ' -f2,3 | sort && echo x > rel/c/f && echo kept > /w/made\n",
        reg.addr
    ));
    let tag = "cairn-test/mounts-paths:1";
    let b = build(root.path(), ctx.path(), &["-t", tag]);
    b.ok();
    for m in ["/real/t tmpfs", "/w/rel/c ", "/tmp/e tmpfs"] {
        assert!(b.stderr.contains(m), "{m} not mounted: {}", b.stderr);
    }
    let ls = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "cat /w/made; ls -A /real /w /tmp",
    ]);
    assert!(ls.starts_with("kept\n"), "{ls}");
    assert!(
        !ls.contains("rel") && !ls.contains("\nt\n") && !ls.contains("\ne\n"),
        "a mount point reached the layer: {ls}"
    );
    docker_rmi(tag);
}

/// A secret is readable in the step (file and env), and its bytes are nowhere after:
/// not in the store, the archive, the logs or `docker history`. A changed value is still a
/// cache hit; a missing required secret is an error naming its id.
#[test]
fn secrets_leave_no_trace() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:3");
    let root = common::tempdir();
    let secret = "cairn-s3cret-7f1d2a9b";
    let dir = common::tempdir();
    let file = dir.path().join("token");
    fs::write(&file, secret).unwrap();
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:3\n\
         RUN --mount=type=secret,id=tok,required --mount=type=secret,id=tok,env=TOKEN,target=/etc/tok \
             stat -c '%a %u' /run/secrets/tok && cat /run/secrets/tok | sha256sum && echo \"len ${{#TOKEN}}\" && wc -c < /etc/tok && echo ok > /ok\n\
         RUN --mount=type=secret,id=absent echo optional secret skipped\n",
        reg.addr
    ));
    let tag = "cairn-test/mounts-secret:1";
    let archive = dir.path().join("image.tar");
    let dest = format!("type=docker,dest={}", archive.display());
    let src = format!("id=tok,src={}", file.display());
    let args = [
        "-t",
        tag,
        "--secret",
        &src,
        "--compression",
        "none",
        "-o",
        &dest,
        "--load",
        "--explain",
    ];
    let b = build(root.path(), ctx.path(), &args);
    b.ok();
    let sha = common::run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {secret} | sha256sum | cut -d' ' -f1")),
    );
    assert!(b.stderr.contains(sha.trim()), "{}", b.stderr);
    assert!(b.stderr.contains("400 0"), "{}", b.stderr);
    assert!(
        b.stderr.contains(&format!("len {}", secret.len())),
        "{}",
        b.stderr
    );
    assert!(b.stderr.contains("optional secret skipped"), "{}", b.stderr);
    assert!(
        !b.stderr.contains(secret) && !b.stdout.contains(secret),
        "the secret is in the output"
    );
    let ls = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "cat /ok; ls -A /etc; test -e /run && echo RUN-LEFT; true",
    ]);
    assert!(ls.starts_with("ok\n"), "{ls}");
    assert!(!ls.contains("RUN-LEFT") && !ls.contains("tok"), "{ls}");
    let history = docker(&["history", "--no-trunc", tag]);
    assert!(!history.contains(secret), "{history}");
    let inspect = docker(&["image", "inspect", tag]);
    assert!(!inspect.contains(secret), "{inspect}");
    let needle = secret.as_bytes();
    let hits = files_containing(root.path(), needle);
    assert!(hits.is_empty(), "secret bytes in the store: {hits:?}");
    // The archive (uncompressed layers) holds them nowhere either: only the source file.
    assert!(archive.is_file());
    let hits = files_containing(dir.path(), needle);
    assert_eq!(hits, vec![file.clone()], "secret bytes in the archive");

    // A changed value is still a hit (as BuildKit): secrets are not part of the key.
    fs::write(&file, "another-value").unwrap();
    let b = build(root.path(), ctx.path(), &args);
    b.ok();
    assert!(b.all_cached(), "{}", b.stderr);

    // A missing required secret: exit 2, naming the id and the line.
    let b = build(root.path(), ctx.path(), &["-t", tag, "--no-cache"]);
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(
        b.stderr.contains("Dockerfile:2") && b.stderr.contains("secret tok is required"),
        "{}",
        b.stderr
    );
    docker_rmi(tag);
}

/// Files for running the host's `ssh-add` inside a busybox step: the binary, its shared
/// libraries and the loader, copied into `dir` (the base has no ssh client).
fn ssh_add_bundle(dir: &Path) {
    let bin = common::which("ssh-add");
    fs::create_dir_all(dir).unwrap();
    fs::copy(&bin, dir.join("ssh-add")).unwrap();
    let ldd = common::run_ok(Command::new("ldd").arg(&bin));
    for line in ldd.lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let loader = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("ld-linux"))
        .expect("the dynamic loader in ldd's output");
    fs::rename(loader.path(), dir.join("ld.so")).unwrap();
}

/// An `ssh-agent` this test started, stopped (by its pid) when dropped, even on a failure.
struct Agent(String);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).output();
    }
}

/// Starts `ssh-agent` (as `user`, if given) with one fresh key; returns its socket.
fn start_agent(dir: &Path, user: Option<&str>) -> (PathBuf, Agent) {
    let sock = dir.join("agent.sock");
    let key = dir.join("id_ed25519");
    let wrap = |script: &str| match user {
        Some(u) => Command::new("runuser")
            .args(["-u", u, "--", "sh", "-c", script])
            .output()
            .unwrap(),
        None => Command::new("sh").arg("-c").arg(script).output().unwrap(),
    };
    let o = wrap(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C cairn-test-key -f {k} && ssh-agent -a {s} -s && SSH_AUTH_SOCK={s} ssh-add {k}",
        k = key.display(),
        s = sock.display()
    ));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "agent: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pid = text
        .split(';')
        .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
        .expect("ssh-agent's pid")
        .to_string();
    (sock, Agent(pid))
}

const SSH_DOCKERFILE: &str = "FROM {BASE}
COPY ssh /opt/ssh
RUN --mount=type=ssh /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -l && echo \"sock $SSH_AUTH_SOCK\"
RUN --mount=type=ssh,id=other,target=/agent.sock,required SSH_AUTH_SOCK=/agent.sock /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -l
";

/// `--ssh default` and `--ssh id=SOCKET`: `ssh-add -l` inside RUN lists the agent's key,
/// and the socket is not in the layer.
#[test]
fn ssh_agent_is_forwarded_into_the_step() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:4");
    let root = common::tempdir();
    let ctx = context(&SSH_DOCKERFILE.replace("{BASE}", &format!("{}/mounts/busybox:4", reg.addr)));
    ssh_add_bundle(&ctx.path().join("ssh"));
    let agent_dir = common::tempdir();
    let (sock, agent) = start_agent(agent_dir.path(), None);
    let other = format!("other={}", sock.display());
    let tag = "cairn-test/mounts-ssh:1";
    let mut c = common::cairn(root.path());
    c.env("SSH_AUTH_SOCK", &sock)
        .arg("build")
        .arg(ctx.path())
        .args([
            "--progress=plain",
            "-t",
            tag,
            "--ssh",
            "default",
            "--ssh",
            &other,
        ]);
    let b = out(c.output().unwrap());
    b.ok();
    assert_eq!(
        b.stderr.matches("cairn-test-key (ED25519)").count(),
        2,
        "{}",
        b.stderr
    );
    assert!(
        b.stderr.contains("sock /run/buildkit/ssh_agent.0"),
        "{}",
        b.stderr
    );
    let ls = docker(&["run", "--rm", tag, "ls", "-A", "/"]);
    assert!(!ls.contains("agent.sock") && !ls.contains("run"), "{ls}");
    docker_rmi(tag);

    // A required agent that was not given: exit 2 naming it.
    let default = format!("default={}", sock.display());
    let b = build(root.path(), ctx.path(), &["--no-cache", "--ssh", &default]);
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(
        b.stderr.contains("SSH agent other is required"),
        "{}",
        b.stderr
    );
    // An agent that went away: a clear error naming the socket.
    drop(agent);
    let _ = fs::remove_file(&sock);
    let b = build(
        root.path(),
        ctx.path(),
        &["--no-cache", "--ssh", &default, "--ssh", &other],
    );
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(b.stderr.contains("is gone"), "{}", b.stderr);
}

/// `type=ssh` and `type=secret` with `mode`, `uid` and `gid`: the step sees its agent socket
/// and secret file with them (BuildKit's defaults: 0600 and 0400, owner 0:0), a step running
/// as that uid can use the agent, and the agent's own socket keeps its mode and owner.
#[test]
fn ssh_and_secret_mounts_get_the_mode_and_owner_asked_for() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:9");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:9\n\
         COPY ssh /opt/ssh\n\
         RUN --mount=type=ssh --mount=type=secret,id=tok \
             stat -c 'default-ssh %a %u %g %F' $SSH_AUTH_SOCK && stat -c 'default-secret %a %u %g' /run/secrets/tok\n\
         RUN --mount=type=ssh,mode=0660,uid=1000,gid=1001 --mount=type=secret,id=tok,mode=0440,uid=1002,gid=1003 \
             stat -c 'asked-ssh %a %u %g %F' $SSH_AUTH_SOCK && stat -c 'asked-secret %a %u %g' /run/secrets/tok\n\
         USER 1000:1000\n\
         RUN --mount=type=ssh,uid=1000 /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -l && echo as-1000-ok\n",
        reg.addr
    ));
    ssh_add_bundle(&ctx.path().join("ssh"));
    let agent_dir = common::tempdir();
    let (sock, _agent) = start_agent(agent_dir.path(), None);
    let before = common::run_ok(Command::new("stat").args(["-c", "%a %u %g"]).arg(&sock));
    let secret = agent_dir.path().join("tok");
    fs::write(&secret, "mode-owner-secret").unwrap();
    let mut c = common::cairn(root.path());
    c.env("SSH_AUTH_SOCK", &sock)
        .arg("build")
        .arg(ctx.path())
        .args(["--progress=plain", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            agent_dir.path().join("oci").display()
        ))
        .args(["--ssh", "default", "--secret"])
        .arg(format!("id=tok,src={}", secret.display()));
    let b = out(c.output().unwrap());
    b.ok();
    for line in [
        "default-ssh 600 0 0 socket",
        "default-secret 400 0 0",
        "asked-ssh 660 1000 1001 socket",
        "asked-secret 440 1002 1003",
        "cairn-test-key (ED25519)",
        "as-1000-ok",
    ] {
        assert!(b.stderr.contains(line), "{line:?} missing:\n{}", b.stderr);
    }
    let after = common::run_ok(Command::new("stat").args(["-c", "%a %u %g"]).arg(&sock));
    assert_eq!(before, after, "the agent's socket kept its mode and owner");
}

/// Rootless (an unprivileged user with subordinate ids): a cache mount owned by a
/// subordinate uid, a secret and an SSH agent all work, and nothing is left behind.
#[test]
fn rootless_cache_secret_and_ssh() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:5");
    let dir = common::tempdir();
    let (ctx, store) = (dir.path().join("ctx"), dir.path().join("store"));
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        SSH_DOCKERFILE
            .replace("{BASE}", &format!("{}/mounts/busybox:5", reg.addr))
            .replace(",id=other,target=/agent.sock,required", ",target=/agent.sock")
            + "RUN --mount=type=cache,id=c,target=/c,uid=1234 --mount=type=secret,id=tok,uid=1234,mode=0440 \
               --mount=type=bind,source=ssh,target=/b,rw \
               stat -c '%u %a' /c /run/secrets/tok && cat /run/secrets/tok | wc -c && touch /c/from-first && ls /c && touch /b/rw-ok && echo bound-rw\n\
               RUN --mount=type=ssh,uid=1234,gid=1235,mode=0660 stat -c 'agent %u %g %a' $SSH_AUTH_SOCK\n",
    )
    .unwrap();
    ssh_add_bundle(&ctx.join("ssh"));
    fs::write(dir.path().join("tok"), "rootless-secret").unwrap();
    common::run_ok(
        Command::new("chown")
            .args(["-R", "cairntest"])
            .arg(dir.path()),
    );
    let (sock, agent) = start_agent(dir.path(), Some("cairntest"));
    let tag = "cairn-test/mounts-rootless:1";
    let o = common::run(
        Command::new("runuser")
            .args(["-u", "cairntest", "--", "env", "HOME=/home/cairntest"])
            .arg(format!("CAIRN_ROOT={}", store.display()))
            .arg(format!("SSH_AUTH_SOCK={}", sock.display()))
            .arg(common::cairn_bin())
            .arg("build")
            .arg(&ctx)
            .args(["-t", tag, "--progress=plain", "--ssh", "default"])
            .arg("--secret")
            .arg(format!("id=tok,src={}", dir.path().join("tok").display())),
    );
    drop(agent);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert_eq!(log.matches("cairn-test-key (ED25519)").count(), 2, "{log}");
    assert!(
        log.contains("1234 755") && log.contains("1234 440") && log.contains("agent 1234 1235 660"),
        "{log}"
    );
    assert!(
        log.contains("from-first") && log.contains("bound-rw"),
        "{log}"
    );
    let ls = docker(&["run", "--rm", tag, "ls", "-A", "/"]);
    assert!(
        !ls.contains("agent.sock") && !ls.lines().any(|l| l == "c"),
        "{ls}"
    );
    let left: Vec<_> = fs::read_dir(store.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    docker_rmi(tag);
    // The cache directory belongs to subordinate ids: remove it as the user's root.
    let _ = Command::new("rm").arg("-rf").arg(&store).output();
}

/// `sharing=locked`: two concurrent builds on one store take turns in the step that holds
/// the cache (each checks that no one else is inside while it is).
#[test]
fn locked_sharing_serialises_concurrent_builds() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:6");
    let root = common::tempdir();
    let run = "RUN --mount=type=cache,id=L,sharing=locked,target=/c \
               sh -c 'if test -e /c/busy; then echo OVER\"\"LAP; fi; touch /c/busy; sleep 2; rm /c/busy; echo done-{N}'\n";
    let ctxs: Vec<_> = (1..=2)
        .map(|n| {
            context(&format!(
                "FROM {}/mounts/busybox:6\n{}",
                reg.addr,
                run.replace("{N}", &n.to_string())
            ))
        })
        .collect();
    let children: Vec<_> = ctxs
        .iter()
        .map(|ctx| {
            let dest = format!("type=docker,dest={}", ctx.path().join("out.tar").display());
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--progress=plain", "-o", &dest])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Out> = children
        .into_iter()
        .map(|c| out(c.wait_with_output().unwrap()))
        .collect();
    for (i, o) in outs.iter().enumerate() {
        o.ok();
        assert!(
            o.stderr.contains(&format!("done-{}", i + 1)),
            "{}",
            o.stderr
        );
        assert!(
            !o.stderr.contains("OVERLAP"),
            "the builds overlapped:\n{}",
            o.stderr
        );
    }
}

/// `RUN --network=host` and `--security=insecure` need their entitlement.
#[test]
fn entitlements_are_required() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:7");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:7\nRUN --network=host echo on-host\n",
        reg.addr
    ));
    let dest = format!("type=docker,dest={}", ctx.path().join("out.tar").display());
    let b = build(root.path(), ctx.path(), &["-o", &dest]);
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(
        b.stderr.contains("Dockerfile:2") && b.stderr.contains("--allow network.host"),
        "{}",
        b.stderr
    );
    let b = build(
        root.path(),
        ctx.path(),
        &["-o", &dest, "--allow", "network.host"],
    );
    b.ok();
    assert!(b.stderr.contains("on-host"), "{}", b.stderr);
    // Now cached: a cache hit is no way around the entitlement (checked before the key, as
    // BuildKit checks before solving).
    let b = build(root.path(), ctx.path(), &["-o", &dest]);
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(b.stderr.contains("--allow network.host"), "{}", b.stderr);
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:7\nRUN --security=insecure true\n",
        reg.addr
    ));
    let b = build(root.path(), ctx.path(), &["-o", &dest]);
    assert_eq!(b.code, Some(2), "{}", b.stderr);
    assert!(
        b.stderr.contains("--allow security.insecure"),
        "{}",
        b.stderr
    );
}

/// `type=bind` from the context: the step sees the bound files (never `.dockerignore`d
/// ones), read-only unless `rw`, whose writes are discarded; the bound content is in the
/// key (an edit misses and `--explain` names the file, a `touch` does not), and neither
/// mount point reaches the layer.
#[test]
fn bind_mount_from_the_context_is_keyed_on_its_content() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:8");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/mounts/busybox:8\n\
         WORKDIR /app\n\
         RUN --mount=type=bind,source=src,target=src --mount=type=bind,source=config.txt,target=/etc/app.conf,rw \
             cat src/main.txt /etc/app.conf && (test -e src/ignored.txt || echo ignored-hidden) && \
             (touch src/new 2>/dev/null || echo src-read-only) && echo scribbled > /etc/app.conf && cat src/main.txt > /app/built\n",
        reg.addr
    ));
    let c = ctx.path();
    fs::create_dir_all(c.join("src")).unwrap();
    fs::write(c.join("src/main.txt"), "main v1\n").unwrap();
    fs::write(c.join("src/ignored.txt"), "hidden\n").unwrap();
    fs::write(c.join("config.txt"), "config\n").unwrap();
    fs::write(c.join(".dockerignore"), "src/ignored.txt\n").unwrap();
    let tag = "cairn-test/mounts-bind:1";
    let args = ["-t", tag, "--explain"];
    let b = build(root.path(), c, &args);
    b.ok();
    for want in ["main v1", "config", "ignored-hidden", "src-read-only"] {
        assert!(b.stderr.contains(want), "{want}: {}", b.stderr);
    }
    assert_eq!(
        fs::read_to_string(c.join("config.txt")).unwrap(),
        "config\n"
    );
    let ls = docker(&[
        "run",
        "--rm",
        tag,
        "sh",
        "-c",
        "cat /app/built; ls -A /app; test -e /etc/app.conf && echo CONF-LEFT; true",
    ]);
    assert_eq!(ls, "main v1\nbuilt\n", "a mount point reached the layer");

    // Unchanged or only touched: a hit.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(c.join("src/main.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let b = build(root.path(), c, &args);
    b.ok();
    assert!(b.all_cached(), "{}", b.stderr);
    // An ignored file's change is no change either.
    fs::write(c.join("src/ignored.txt"), "hidden v2\n").unwrap();
    assert!(build(root.path(), c, &args).all_cached());

    // An edit misses, and --explain names the bound file.
    fs::write(c.join("src/main.txt"), "main v2\n").unwrap();
    let b = build(root.path(), c, &args);
    b.ok();
    assert!(!b.all_cached(), "{}", b.stderr);
    assert!(
        b.stderr.contains("context file src/main.txt changed"),
        "{}",
        b.stderr
    );
    assert_eq!(
        docker(&["run", "--rm", tag, "cat", "/app/built"]),
        "main v2\n"
    );
    docker_rmi(tag);
}

/// `from=` a stage: a bind of one of its paths (read-only, and a changed stage misses), and
/// a cache mount seeded from it when created.
#[test]
fn bind_and_cache_mounts_from_a_stage() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:9");
    let root = common::tempdir();
    let df = |v: &str| {
        format!(
            "FROM {0}/mounts/busybox:9 AS tools\n\
             RUN mkdir -p /opt/tools && echo tool-{v} > /opt/tools/t.txt\n\
             FROM {0}/mounts/busybox:9\n\
             RUN --mount=type=bind,from=tools,source=/opt/tools,target=/t cat /t/t.txt && (touch /t/x 2>/dev/null || echo ro-from) && echo bound > /b\n\
             RUN --mount=type=cache,id=seeded,target=/c,from=tools,source=/opt/tools cat /c/t.txt && echo more > /c/more\n",
            reg.addr
        )
    };
    let ctx = context(&df("v1"));
    let tag = "cairn-test/mounts-from:1";
    let b = build(root.path(), ctx.path(), &["-t", tag]);
    b.ok();
    assert!(
        b.stderr.matches("tool-v1").count() >= 2 && b.stderr.contains("ro-from"),
        "{}",
        b.stderr
    );
    let ls = docker(&["run", "--rm", tag, "ls", "-A", "/"]);
    assert!(
        ls.lines().any(|l| l == "b") && !ls.lines().any(|l| l == "t" || l == "c"),
        "{ls}"
    );
    // The stage changes: the bind step misses and sees the new file.
    fs::write(ctx.path().join("Dockerfile"), df("v2")).unwrap();
    let b = build(root.path(), ctx.path(), &["-t", tag, "--explain"]);
    b.ok();
    assert!(b.stderr.contains("tool-v2"), "{}", b.stderr);
    docker_rmi(tag);
}

/// `sharing=private`: while another holder has the cache (here the test holds its store
/// lock, as a `locked` or `private` build would), the step gets a fresh empty directory,
/// and what it writes there is dropped; once free, the shared cache is used again.
#[test]
fn private_sharing_gets_a_fresh_directory_while_the_cache_is_busy() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "mounts/busybox:10");
    let root = common::tempdir();
    let run = |cmd: &str| {
        let ctx = context(&format!(
            "FROM {}/mounts/busybox:10\nRUN --mount=type=cache,id=P,sharing=private,target=/c {cmd}\n",
            reg.addr
        ));
        let dest = format!("type=docker,dest={}", ctx.path().join("out.tar").display());
        let b = build(root.path(), ctx.path(), &["-o", &dest]);
        b.ok();
        b.stderr
    };
    run("echo seed > /c/seed");
    let store = cairn::store::Store::open(root.path()).unwrap();
    let id_hash = cairn::digest::Digest::of_bytes(b"P").hex().to_string();
    let held = store.lock(&format!("cache-mount-{id_hash}")).unwrap();
    let busy = run("ls -A /c | wc -l | sed 's/^/entries-/' && echo private > /c/private");
    assert!(busy.contains("entries-0"), "{busy}");
    drop(held);
    let free = run("ls -A /c | sed 's/^/entry-/'");
    let entries: Vec<&str> = free
        .lines()
        .filter_map(|l| l.split_once(" entry-").map(|(_, e)| e))
        .collect();
    assert_eq!(entries, ["seed"], "{free}");
}
