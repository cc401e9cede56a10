//! `ADD` from git, against real git servers this file starts on 127.0.0.1: `git daemon`
//! (the `git://` protocol) and `git http-backend` behind a small CGI bridge (smart HTTP),
//! serving a repository each test makes with a branch, an annotated and a lightweight tag,
//! a subdirectory, an executable, and symlinks pointing inside and out of the tree.
//!
//! The module is driven directly (resolve, checkout, errors) and through `cairn build`,
//! whose OCI output is read back.

mod common;

use cairn::git::{Error as GitError, GitSource};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `git` with a fixed identity and dates, so the fixture is the same on every run.
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .env("GIT_AUTHOR_DATE", "2020-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2020-01-02T03:04:05Z")
        .env_remove("GIT_DIR");
    c
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    common::run_ok(git(dir).args(args)).trim().to_string()
}

/// The served repositories and the facts the tests check against.
struct Fixture {
    _dir: tempfile::TempDir,
    /// The directory served as the servers' root; the repository is `repo.git` in it.
    root: PathBuf,
    v1: String,
    v1_tag_object: String,
    main: String,
    /// The commit time of `v1`, in seconds.
    v1_time: i64,
}

fn fixture() -> Fixture {
    let dir = common::tempdir();
    let work = dir.path().join("work");
    fs::create_dir_all(work.join("sub/deeper")).unwrap();
    common::run_ok(git(&work).args(["init", "-q"]));
    fs::write(work.join("top.txt"), "top v1\n").unwrap();
    fs::write(work.join("sub/inner.txt"), "inner v1\n").unwrap();
    fs::write(work.join("sub/deeper/d.txt"), "deep\n").unwrap();
    fs::write(work.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(work.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    // A link out of the tree must arrive as a link, never as the host's file.
    std::os::unix::fs::symlink("/etc/hostname", work.join("sub/escape")).unwrap();
    std::os::unix::fs::symlink("inner.txt", work.join("sub/alias")).unwrap();
    // A link standing in for a directory: never a way to pick the host's /etc as subdir.
    std::os::unix::fs::symlink("/etc", work.join("etc-link")).unwrap();
    common::run_ok(git(&work).args(["add", "-A"]));
    common::run_ok(git(&work).args(["commit", "-q", "-m", "v1"]));
    common::run_ok(git(&work).args(["tag", "-a", "-m", "release one", "v1"]));
    common::run_ok(git(&work).args(["tag", "light"]));
    let v1 = git_out(&work, &["rev-parse", "HEAD"]);
    let v1_tag_object = git_out(&work, &["rev-parse", "v1"]);
    let v1_time = git_out(&work, &["log", "-1", "--format=%ct"])
        .parse()
        .unwrap();
    fs::write(work.join("top.txt"), "top v2\n").unwrap();
    fs::write(work.join("sub/inner.txt"), "inner v2\n").unwrap();
    common::run_ok(
        git(&work)
            .env("GIT_COMMITTER_DATE", "2021-01-02T03:04:05Z")
            .args(["commit", "-q", "-am", "v2"]),
    );
    let main = git_out(&work, &["rev-parse", "HEAD"]);
    let root = dir.path().join("srv");
    fs::create_dir_all(&root).unwrap();
    common::run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&work)
            .arg(root.join("repo.git")),
    );
    Fixture {
        _dir: dir,
        root,
        v1,
        v1_tag_object,
        main,
        v1_time,
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` on 127.0.0.1, killed by PID when dropped.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(root: &Path) -> GitDaemon {
        let port = free_port();
        // The daemon itself, not `git daemon`: the `git` wrapper would be the PID we kill,
        // and the daemon its orphan.
        let exec_path = common::run_ok(Command::new("git").arg("--exec-path"));
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .args(["--export-all", "--reuseaddr", "--informative-errors"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (the git package; scripts/setup installs it)");
        let d = GitDaemon { child, port };
        // Ready when it accepts connections; `git ls-remote` in the tests would fail loudly.
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("git daemon did not listen on 127.0.0.1:{port}");
    }

    fn url(&self, rest: &str) -> String {
        format!("git://127.0.0.1:{}/{rest}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Smart HTTP: each request handed to `git http-backend` as CGI, one per connection.
struct HttpGit {
    addr: String,
    /// How many `fetch` commands (protocol v2) the server answered.
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpGit {
    fn start(root: &Path) -> HttpGit {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (st, root, count) = (stop.clone(), root.to_path_buf(), fetches.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (root, count) = (root.clone(), count.clone());
                        std::thread::spawn(move || cgi(conn, &root, &count));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpGit {
            addr,
            fetches,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cgi(conn: TcpStream, root: &Path, fetches: &AtomicUsize) {
    conn.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        (&mut reader).take(n).read_to_end(&mut body).unwrap();
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let mut plain = Vec::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
    } else {
        plain.clone_from(&body);
    }
    if plain.windows(13).any(|w| w == b"command=fetch") {
        fetches.fetch_add(1, Ordering::SeqCst);
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = headers.get(header) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let Some((at, sep)) = split else {
        return;
    };
    let head = String::from_utf8_lossy(&out.stdout[..at]).to_string();
    let payload = &out.stdout[at + sep..];
    let mut status = "200 OK".to_string();
    let mut reply = Vec::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => reply.push(h.to_string()),
            None => {}
        }
    }
    let mut conn = conn;
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    for h in reply {
        resp.push_str(&h);
        resp.push_str("\r\n");
    }
    resp.push_str("\r\n");
    let _ = conn.write_all(resp.as_bytes());
    let _ = conn.write_all(payload);
    let _ = conn.flush();
}

fn source(url: &str, keep: Option<bool>, checksum: Option<&str>) -> GitSource {
    GitSource::classify(url, keep, checksum)
        .expect("a git source")
        .expect("a usable git source")
}

/// Resolves and checks out `url`; returns the resolved commit and the copied directory.
fn checkout(url: &str, keep: Option<bool>, out: &Path) -> (cairn::git::Resolved, PathBuf) {
    let g = source(url, keep, None);
    let r = g.resolve().unwrap_or_else(|e| panic!("{url}: {e}"));
    fs::create_dir_all(out).unwrap();
    let root = g.checkout(&r, out).unwrap_or_else(|e| panic!("{url}: {e}"));
    (r, root)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn branch_tag_and_commit_over_git_daemon() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let t = common::tempdir();

    let (r, root) = checkout(&d.url("repo.git#main"), None, &t.path().join("main"));
    assert_eq!(r.commit, fx.main);
    assert_eq!(r.used_ref, "refs/heads/main");
    assert_eq!(read(&root.join("top.txt")), "top v2\n");
    assert!(
        !root.join(".git").exists(),
        ".git is dropped without --keep-git-dir"
    );

    // The default branch, when no ref is given.
    let (r, _) = checkout(&d.url("repo.git"), None, &t.path().join("default"));
    assert_eq!(r.commit, fx.main);

    // An annotated tag resolves to its commit; the tag object is kept beside it.
    let (r, root) = checkout(&d.url("repo.git#v1"), None, &t.path().join("v1"));
    assert_eq!(
        (r.commit.as_str(), r.object.as_str()),
        (fx.v1.as_str(), fx.v1_tag_object.as_str())
    );
    assert_eq!(r.used_ref, "refs/tags/v1");
    assert_eq!(read(&root.join("top.txt")), "top v1\n");

    // A lightweight tag, and a commit by its full name (fetched by commit, no ls-remote ref).
    let (r, _) = checkout(&d.url("repo.git#light"), None, &t.path().join("light"));
    assert_eq!(r.commit, fx.v1);
    let (r, root) = checkout(
        &d.url(&format!("repo.git#{}", fx.v1)),
        None,
        &t.path().join("sha"),
    );
    assert_eq!(r.commit, fx.v1);
    assert_eq!(read(&root.join("sub/inner.txt")), "inner v1\n");

    // Modes come from git; links stay links, the one out of the tree never followed; times
    // are the commit's, not the clock's.
    let sub = root.join("sub");
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub.join("run.sh")) & 0o111, 0o111);
    assert_eq!(mode(&sub.join("inner.txt")) & 0o111, 0);
    assert!(fs::symlink_metadata(sub.join("escape"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(sub.join("escape")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        fs::read_link(sub.join("alias")).unwrap(),
        Path::new("inner.txt")
    );
    use std::os::unix::fs::MetadataExt;
    for p in [root.join("top.txt"), sub.join("escape"), sub.clone()] {
        assert_eq!(
            fs::symlink_metadata(&p).unwrap().mtime(),
            fx.v1_time,
            "{}",
            p.display()
        );
    }

    // The key follows the commit: the tag, the branch's old commit and the commit name agree.
    let by_tag = source(&d.url("repo.git#v1"), None, None);
    let by_sha = source(&d.url(&format!("repo.git#{}", fx.v1)), None, None);
    let by_branch = source(&d.url("repo.git#main"), None, None);
    let k = |g: &GitSource| g.key_digest(&g.resolve().unwrap());
    assert_eq!(k(&by_tag), k(&by_sha));
    assert_ne!(k(&by_tag), k(&by_branch));
}

#[test]
fn subdir_and_keep_git_dir_over_smart_http() {
    let fx = fixture();
    let h = HttpGit::start(&fx.root);
    let t = common::tempdir();
    let url = |rest: &str| format!("http://{}/repo.git{rest}", h.addr);

    let (_, root) = checkout(&url("#v1:sub"), None, &t.path().join("sub"));
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alias", "deeper", "escape", "inner.txt", "run.sh"]);
    assert_eq!(read(&root.join("deeper/d.txt")), "deep\n");

    // The query form, as BuildKit reads it.
    let (r, root) = checkout(
        &url("?tag=v1&subdir=sub/deeper"),
        None,
        &t.path().join("query"),
    );
    assert_eq!(r.commit, fx.v1);
    assert_eq!(read(&root.join("d.txt")), "deep\n");

    // --keep-git-dir: a real repository at the commit, clean, its remote without password.
    let with_pw = format!("http://user:hunter2@{}/repo.git#main", h.addr);
    let (r, root) = checkout(&with_pw, Some(true), &t.path().join("keep"));
    assert_eq!(git_out(&root, &["rev-parse", "HEAD"]), r.commit);
    assert_eq!(git_out(&root, &["status", "--porcelain"]), "");
    let config = read(&root.join(".git/config"));
    assert!(!config.contains("hunter2"), "{config}");
    assert!(!root.join(".git/FETCH_HEAD").exists());
    // ?keep-git-dir in the URL does the same; with a subdir there is no .git (BuildKit).
    let (_, root) = checkout(&url("?keep-git-dir#v1"), None, &t.path().join("keepq"));
    assert!(root.join(".git/HEAD").is_file());
    let (_, root) = checkout(&url("#v1:sub"), Some(true), &t.path().join("keepsub"));
    assert!(!root.join(".git").exists());
}

#[test]
fn checksum_match_and_mismatch() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let url = d.url("repo.git#v1");
    // The commit, a prefix of it, and the annotated tag's object all match.
    for sum in [fx.v1.as_str(), &fx.v1[..12], fx.v1_tag_object.as_str()] {
        source(&url, None, Some(sum)).resolve().unwrap();
    }
    let wrong = fx.main.clone();
    let e = source(&url, None, Some(&wrong)).resolve().unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, GitError::ChecksumMismatch { .. }), "{text}");
    for part in [url.split('#').next().unwrap(), "#v1", &wrong, &fx.v1] {
        assert!(text.contains(part), "{text} should name {part}");
    }
    // A commit named as the ref is checked without the network.
    let e = source(
        &d.url(&format!("repo.git#{}", fx.v1)),
        None,
        Some(&wrong[..8]),
    )
    .resolve()
    .unwrap_err();
    assert!(matches!(e, GitError::ChecksumMismatch { .. }), "{e}");
    assert_eq!(cairn::Error::from(e).exit_code(), cairn::ExitCode::Usage);
}

#[test]
fn missing_refs_and_unreachable_servers_are_network_errors_naming_url_and_ref() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let e = source(&d.url("repo.git#no-such-branch"), None, None)
        .resolve()
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("no-such-branch") && text.contains(&d.url("repo.git")),
        "{text}"
    );
    assert_eq!(cairn::Error::from(e).exit_code(), cairn::ExitCode::Registry);

    let e = source(&d.url("missing.git#main"), None, None)
        .resolve()
        .unwrap_err();
    assert!(e.is_network(), "{e}");
    let closed = format!("git://127.0.0.1:{}/repo.git#main", free_port());
    let e = source(&closed, None, None).resolve().unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&closed), "{text}");
    assert_eq!(cairn::Error::from(e).exit_code(), cairn::ExitCode::Registry);
}

#[test]
fn a_hostile_repository_stays_inside_its_checkout() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let t = common::tempdir();
    // A subdir that is a link to the host's /etc is refused, not followed.
    let g = source(&d.url("repo.git#v1:etc-link"), None, None);
    let r = g.resolve().unwrap();
    let e = g.checkout(&r, t.path()).unwrap_err();
    assert!(matches!(e, GitError::Subdir { .. }), "{e}");
    assert!(e.to_string().contains("symlink"), "{e}");
    assert_eq!(cairn::Error::from(e).exit_code(), cairn::ExitCode::Usage);

    // A submodule pointing at a repository on the host's disk (file transport) is refused,
    // and a hook in the served repository never runs.
    let secret = t.path().join("host-secret");
    fs::create_dir_all(&secret).unwrap();
    common::run_ok(git(&secret).args(["init", "-q"]));
    fs::write(secret.join("key"), "host secret\n").unwrap();
    common::run_ok(git(&secret).args(["add", "-A"]));
    common::run_ok(git(&secret).args(["commit", "-q", "-m", "s"]));
    let work = t.path().join("evil-work");
    common::run_ok(git(t.path()).args(["init", "-q", "evil-work"]));
    common::run_ok(
        git(&work)
            .args(["-c", "protocol.file.allow=always", "submodule", "add", "-q"])
            .arg(format!("file://{}", secret.display()))
            .arg("mod"),
    );
    common::run_ok(git(&work).args(["commit", "-q", "-m", "evil"]));
    common::run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&work)
            .arg(fx.root.join("evil.git")),
    );
    let marker = t.path().join("hook-ran");
    let hook = fx.root.join("evil.git/hooks/post-checkout");
    fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let g = source(&d.url("evil.git#main"), None, None);
    let r = g.resolve().unwrap();
    let out = t.path().join("evil-out");
    fs::create_dir_all(&out).unwrap();
    let e = g.checkout(&r, &out).unwrap_err();
    assert!(e.to_string().contains("submodule"), "{e}");
    assert!(!out.join("tree/mod/key").exists());
    assert!(!marker.exists(), "a hook ran");
    // Without submodules the tree checks out, the submodule an empty directory.
    let g = source(&d.url("evil.git?submodules=false#main"), None, None);
    let out = t.path().join("evil-nosub");
    fs::create_dir_all(&out).unwrap();
    let root = g.checkout(&g.resolve().unwrap(), &out).unwrap();
    assert!(root.join(".gitmodules").is_file());
    assert!(!root.join("mod/key").exists());
}

#[test]
fn submodules_are_checked_out_relative_to_the_remote() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let t = common::tempdir();
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    common::run_ok(git(&lib).args(["init", "-q"]));
    fs::write(lib.join("lib.txt"), "from the submodule\n").unwrap();
    common::run_ok(git(&lib).args(["add", "-A"]));
    common::run_ok(git(&lib).args(["commit", "-q", "-m", "lib"]));
    common::run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&lib)
            .arg(fx.root.join("lib.git")),
    );
    let app = t.path().join("app");
    common::run_ok(git(t.path()).args(["init", "-q", "app"]));
    fs::write(app.join("app.txt"), "app\n").unwrap();
    common::run_ok(git(&app).args(["submodule", "add", "-q", &d.url("lib.git"), "vendor/lib"]));
    // A relative URL, resolved against the remote the superproject came from.
    common::run_ok(git(&app).args([
        "config",
        "-f",
        ".gitmodules",
        "submodule.vendor/lib.url",
        "../lib.git",
    ]));
    common::run_ok(git(&app).args(["add", "-A"]));
    common::run_ok(git(&app).args(["commit", "-q", "-m", "app"]));
    common::run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&app)
            .arg(fx.root.join("app.git")),
    );
    let (_, root) = checkout(&d.url("app.git#main"), None, &t.path().join("with"));
    assert_eq!(
        read(&root.join("vendor/lib/lib.txt")),
        "from the submodule\n"
    );
    assert_eq!(read(&root.join("app.txt")), "app\n");
    let (_, root) = checkout(
        &d.url("app.git?submodules=false#main"),
        None,
        &t.path().join("without"),
    );
    assert!(root.join("vendor/lib").is_dir());
    assert!(!root.join("vendor/lib/lib.txt").exists());
}

/// Every path in the image's layers (in order) with its bytes, from an OCI layout.
fn layer_files(layout: &Path) -> BTreeMap<String, (u32, Vec<u8>, Option<String>)> {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let index: serde_json::Value = serde_json::from_str(&read(&layout.join("index.json"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&read(&blob(
        index["manifests"][0]["digest"].as_str().unwrap(),
    )))
    .unwrap();
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let f = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
        let mut ar = tar::Archive::new(cairn::rootfs::decompressed(f).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mode = e.header().mode().unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            files.insert(path, (mode, body, link));
        }
    }
    files
}

#[test]
fn cairn_build_adds_a_git_subdir_and_follows_the_commit() {
    let fx = fixture();
    let d = GitDaemon::start(&fx.root);
    let ctx = common::tempdir();
    let root = common::tempdir();
    let df = ctx.path().join("Dockerfile");
    let build = |layout: &Path, extra: &[&str]| {
        common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--progress=plain", "-o"])
                .arg(format!("type=oci,dest={}", layout.display()))
                .args(extra),
        )
    };
    fs::write(
        &df,
        format!(
            "FROM scratch\nADD {} /dst\nADD --keep-git-dir {} /repo\n",
            d.url("repo.git#v1:sub"),
            d.url("repo.git#main")
        ),
    )
    .unwrap();
    let one = ctx.path().join("one");
    let out = build(&one, &[]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resolved to commit {}", fx.v1)),
        "{stderr}"
    );
    let files = layer_files(&one);
    assert_eq!(files["dst/inner.txt"].1, b"inner v1\n");
    assert_eq!(files["dst/run.sh"].0 & 0o111, 0o111);
    assert_eq!(files["dst/escape"].2.as_deref(), Some("/etc/hostname"));
    assert!(
        !files.contains_key("dst/top.txt"),
        "only the subdir is added"
    );
    assert!(files.keys().all(|p| !p.starts_with("dst/.git")));
    assert!(
        files.contains_key("repo/.git/HEAD"),
        "--keep-git-dir keeps .git"
    );
    assert_eq!(files["repo/top.txt"].1, b"top v2\n");

    // The same commits again: every step cached.
    let two = ctx.path().join("two");
    let out = build(&two, &[]);
    assert!(out.status.success());
    assert_eq!(read(&one.join("index.json")), read(&two.join("index.json")));

    // The branch moves: the ADD of main misses, --explain names the new commit; the
    // ADD pinned to the tag stays cached.
    let work = fx.root.parent().unwrap().join("work");
    fs::write(work.join("top.txt"), "top v3\n").unwrap();
    common::run_ok(git(&work).args(["commit", "-q", "-am", "v3"]));
    let v3 = git_out(&work, &["rev-parse", "HEAD"]);
    common::run_ok(
        git(&work)
            .args(["push", "-q"])
            .arg(fx.root.join("repo.git"))
            .arg("main"),
    );
    let three = ctx.path().join("three");
    let out = build(&three, &["--explain"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resolved to commit {v3}")),
        "{stderr}"
    );
    let miss = |commit: &str, what: &str| {
        stderr
            .lines()
            .any(|l| l.contains("miss:") && l.contains(commit) && l.ends_with(what))
    };
    assert!(
        miss(&v3, "added") && miss(&fx.main, "removed"),
        "--explain names the old and the new commit: {stderr}"
    );
    let cached = stderr
        .lines()
        .skip_while(|l| !l.contains("#v1:sub /dst"))
        .nth(2);
    assert!(
        cached.is_some_and(|l| l.ends_with("CACHED")),
        "the ADD pinned to the tag stays cached: {stderr}"
    );
    assert_eq!(layer_files(&three)["repo/top.txt"].1, b"top v3\n");

    // A missing ref is a network-class failure naming the URL and ref — never an HTTP 404.
    let h = HttpGit::start(&fx.root);
    let missing = format!("http://{}/repo.git#nope", h.addr);
    fs::write(&df, format!("FROM scratch\nADD {missing} /x\n")).unwrap();
    let out = build(&ctx.path().join("four"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:2") && stderr.contains("\"nope\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("http://{}/repo.git", h.addr)),
        "{stderr}"
    );
    assert!(!stderr.contains("404"), "{stderr}");

    // A malformed git URL is a Dockerfile error.
    fs::write(&df, "FROM scratch\nADD git://127.0.0.1:99999999/r.git /x\n").unwrap();
    let out = build(&ctx.path().join("five"), &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cached_add_from_git_lists_refs_but_fetches_nothing() {
    let fx = fixture();
    let h = HttpGit::start(&fx.root);
    let ctx = common::tempdir();
    let root = common::tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD http://{}/repo.git#v1 /src\n", h.addr),
    )
    .unwrap();
    let build = |n: &str| {
        let layout = ctx.path().join(n);
        let out = common::run(
            common::cairn(root.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--progress=plain", "-o"])
                .arg(format!("type=oci,dest={}", layout.display())),
        );
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    build("one");
    let first = h.fetches.load(Ordering::SeqCst);
    assert!(first >= 1, "the first build fetches");
    let stderr = build("two");
    assert!(stderr.contains("CACHED"), "{stderr}");
    assert_eq!(
        h.fetches.load(Ordering::SeqCst),
        first,
        "a cached ADD fetched again"
    );
    assert!(
        stderr.contains(&format!("resolved to commit {}", fx.v1)),
        "{stderr}"
    );
}

#[test]
fn scp_like_sources_reach_the_repository_over_ssh() {
    // The user's ssh, stood in for by a script that runs the remote command locally in the
    // served directory: the URL, the transport and the prompt-free environment are real.
    let fx = fixture();
    let t = common::tempdir();
    let ssh = t.path().join("fake-ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nfor last; do :; done\ncd '{}' && exec sh -c \"$last\"\n",
            fx.root.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = common::tempdir();
    let root = common::tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nADD git@git.example.invalid:repo.git#v1:sub /dst\n",
    )
    .unwrap();
    let layout = ctx.path().join("out");
    let out = common::run(
        common::cairn(root.path())
            .env("GIT_SSH_COMMAND", &ssh)
            .env("GIT_SSH_VARIANT", "ssh")
            .arg("build")
            .arg(ctx.path())
            .args(["--progress=plain", "-o"])
            .arg(format!("type=oci,dest={}", layout.display())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resolved to commit {}", fx.v1)),
        "{stderr}"
    );
    assert_eq!(layer_files(&layout)["dst/inner.txt"].1, b"inner v1\n");
}
