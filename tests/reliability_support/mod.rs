//! Helpers shared by the `reliability_*` tests: a build runner that can be killed at a
//! chosen moment, and the checks run after every kill (store verified, no mount and no
//! process left behind).
//!
//! Stray sandbox processes are told apart from other engineers' by a marker: every build
//! re-executes cairn through a uniquely named symlink (`CAIRN_SANDBOX_EXE`), so its helper's
//! command line names that symlink, and the RUN commands of the test Dockerfiles carry the
//! same marker in a comment, so the step's own shell is found too.
#![allow(dead_code)]

use crate::common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `SOURCE_DATE_EPOCH` for every build, so digests can be compared.
pub const EPOCH: &str = "1700000000";

/// Whether the long forms were asked for (`CAIRN_RELIABILITY_FULL=1`).
pub fn full() -> bool {
    std::env::var("CAIRN_RELIABILITY_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Kill points per fault of the kill loops: 4 in the short form, 16 with
/// `CAIRN_RELIABILITY_FULL=1`, N with `CAIRN_RELIABILITY_KILLS=N`.
pub fn kills() -> usize {
    std::env::var("CAIRN_RELIABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { 16 } else { 4 })
}

/// A per-test marker and the symlink to cairn that carries it.
pub struct Marker {
    pub name: String,
    pub exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl Marker {
    pub fn new(tag: &str) -> Marker {
        let dir = common::tempdir();
        let name = format!("cairn-reliab-{tag}-{}", std::process::id());
        let exe = dir.path().join(&name);
        std::os::unix::fs::symlink(common::cairn_bin(), &exe).unwrap();
        Marker {
            name,
            exe,
            _dir: dir,
        }
    }

    /// A cairn command on store `root` whose sandboxes carry this marker.
    pub fn cairn(&self, root: &Path) -> Command {
        let mut c = common::cairn(root);
        c.env("CAIRN_SANDBOX_EXE", &self.exe)
            .env("SOURCE_DATE_EPOCH", EPOCH);
        c
    }

    /// Live (non-zombie) processes whose command line carries the marker, as
    /// `pid: cmdline`. Waits up to 5 s for the kernel to finish killing them.
    pub fn strays(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = processes_matching(&self.name);
            if found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Live processes (not this one, not zombies) whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(needle) {
            continue;
        }
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Mounts (in this mount namespace) at or below any of `paths`.
pub fn mounts_under(paths: &[&Path]) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| {
            let point = l.split_whitespace().nth(4).unwrap_or("");
            paths.iter().any(|p| {
                let p = p.to_string_lossy();
                point == p || point.starts_with(&format!("{p}/"))
            })
        })
        .map(String::from)
        .collect()
}

/// `cairn cache verify` on `root`: must exit 0 and say "all good".
pub fn assert_verify_clean(m: &Marker, root: &Path, what: &str) {
    let out = m
        .cairn(root)
        .args(["cache", "verify"])
        .output()
        .expect("run cairn cache verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all good"),
        "{what}: cache verify found problems (exit {:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a finished build printed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// (config digest, manifest digest) from `--format json`.
    pub fn digests(&self) -> (String, String) {
        let j = self.json();
        (
            j["config_digest"].as_str().unwrap().to_string(),
            j["manifest_digest"].as_str().unwrap().to_string(),
        )
    }

    /// The error the build ended with: the `error` event's message under
    /// `--progress=json` (where it is the last event), else the `cairn: error:` line.
    pub fn error(&self) -> String {
        let event = self
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "error");
        match event {
            Some(e) => format!("cairn: error: {}", e["message"].as_str().unwrap_or("")),
            None => self
                .stderr
                .lines()
                .find(|l| l.contains("cairn: error"))
                .unwrap_or("")
                .to_string(),
        }
    }

    pub fn assert_ok(&self, what: &str) -> &Self {
        assert_eq!(self.code, Some(0), "{what}: build failed:\n{}", self.stderr);
        self
    }
}

/// `cairn build CTX --progress=json --format=json --output type=docker,dest=OUT`.
pub fn build_cmd(m: &Marker, root: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = m.cairn(root);
    c.arg("build")
        .arg(ctx)
        .args(["--progress=json", "--format=json", "--output"])
        .arg(format!("type=docker,dest={}", out.display()))
        .args(extra);
    c
}

/// Runs a build to its end.
pub fn run_build(cmd: &mut Command) -> Finished {
    let out = cmd.output().expect("run cairn build");
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One line of `--progress=json` stderr and when it arrived (since the start).
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Duration,
    pub line: String,
}

impl Seen {
    pub fn event(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.line).ok()
    }
}

/// A build running in the background, its stderr read line by line as it comes.
pub struct Running {
    pub child: Child,
    pub started: Instant,
    lines: mpsc::Receiver<Seen>,
    pub seen: Vec<Seen>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let started = Instant::now();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn build");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx
                    .send(Seen {
                        at: started.elapsed(),
                        line,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Running {
            child,
            started,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(s) = self.lines.try_recv() {
            self.seen.push(s);
        }
    }

    /// Waits until `when` says the moment has come (checked on every line and every
    /// millisecond), then kills the build with SIGKILL. Returns `false` when the build
    /// ended on its own first.
    pub fn kill_when(&mut self, mut when: impl FnMut(Duration, &[Seen]) -> bool) -> bool {
        loop {
            self.drain();
            if when(self.started.elapsed(), &self.seen) {
                // SIGKILL, as an OOM killer or a CI timeout would: no handler runs.
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                self.drain();
                return false;
            }
            match self.lines.recv_timeout(Duration::from_millis(1)) {
                Ok(s) => self.seen.push(s),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
            }
        }
    }

    /// Waits (without killing) until some line contains `needle`; `false` when the build
    /// ended or `timeout` passed first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if self.seen.iter().any(|s| s.line.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                self.drain();
                return self.seen.iter().any(|s| s.line.contains(needle));
            }
            if let Ok(s) = self.lines.recv_timeout(Duration::from_millis(10)) {
                self.seen.push(s);
            }
        }
    }

    /// Waits for the build to end on its own.
    pub fn wait(&mut self) -> Option<i32> {
        let st = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        self.drain();
        st.code()
    }
}

/// sha256 of a file, hex.
pub fn file_sha256(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    cairn::Digest::of_bytes(&bytes).hex().to_string()
}

/// A tmpfs mounted by the test; unmounted on drop.
pub struct SmallFs {
    at: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SmallFs {
    /// A tmpfs of `size` (as mount(8) takes it) on a new temporary directory.
    pub fn mount(size: &str) -> SmallFs {
        let dir = common::tempdir();
        let mut fs = SmallFs::mount_at(dir.path(), size);
        fs._dir = Some(dir);
        fs
    }

    /// A tmpfs of `size` on directory `at` (created if missing).
    pub fn mount_at(at: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "cairn-reliab"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a tmpfs");
        SmallFs {
            at: at.to_path_buf(),
            _dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.at
    }

    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.path()).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the file system until only `leave` bytes are free.
    pub fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.path().join(format!("filler-{leave}"));
        let n = self.free().saturating_sub(leave);
        let f = std::fs::File::create(&filler).unwrap();
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0xa5u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..k]).unwrap();
            left -= k as u64;
        }
        w.flush().unwrap();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

/// The warnings a build printed (`--progress=json` `warning` events).
pub fn warnings(f: &Finished) -> Vec<String> {
    f.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

// Reading a registry over plain HTTP, to check what it holds after a fault.

/// One plain HTTP/1.1 request to `addr` (Connection: close); (status, headers, body).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply3 {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply3 {
        status,
        head,
        body: raw[split..].to_vec(),
    }
}

pub struct Reply3 {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply3 {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The digest the registry gives `repo:tag`.
pub fn tag_digest(addr: &str, repo: &str, tag: &str) -> Option<String> {
    let r = http(
        addr,
        "HEAD",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", MANIFEST_ACCEPT)],
        b"",
    );
    (r.status == 200).then(|| r.header("Docker-Content-Digest").unwrap())
}

/// The manifest `repo:tag` in the registry at `addr`, if there is one.
pub fn manifest(addr: &str, repo: &str, tag: &str) -> Option<serde_json::Value> {
    let r = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", MANIFEST_ACCEPT)],
        b"",
    );
    (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
}

pub fn tags(addr: &str, repo: &str) -> Vec<String> {
    let r = http(addr, "GET", &format!("/v2/{repo}/tags/list"), &[], b"");
    if r.status != 200 {
        return vec![];
    }
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    j["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Every tag of `repo` names a manifest whose config and layers the registry has
/// (asked with `GET`, which reads the bytes, not only the link).
pub fn assert_every_tag_complete(addr: &str, repo: &str, what: &str) -> usize {
    check_tags(addr, repo, what, true)
}

/// Every tag of `repo` that names a manifest names one whose blobs the registry has; how
/// many do. With `wait_for_manifest`, a tag without one is waited for (a request may be in
/// flight) and then an error; without, it is no entry (a registry killed between the
/// tag's directory and its link leaves such tags, which read as a miss).
pub fn check_tags(addr: &str, repo: &str, what: &str, wait_for_manifest: bool) -> usize {
    let all = tags(addr, repo);
    let mut named = 0;
    for t in &all {
        // The client was killed, but the registry may still be handling its last manifest
        // `PUT`: distribution creates the tag's directory (which `tags/list` reads) before it
        // writes the link to the manifest. A tag counts once that request has had time to end.
        let deadline = Instant::now() + Duration::from_secs(10);
        let m = loop {
            match manifest(addr, repo, t) {
                Some(m) => break m,
                None if !wait_for_manifest => break serde_json::Value::Null,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("{what}: tag {t} lists no manifest"),
            }
        };
        if m.is_null() {
            continue;
        }
        named += 1;
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            let r = http(addr, "GET", &format!("/v2/{repo}/blobs/{b}"), &[], b"");
            assert_eq!(
                r.status, 200,
                "{what}: {repo}:{t} names blob {b} the registry lacks"
            );
            assert_eq!(
                format!("sha256:{}", cairn::Digest::of_bytes(&r.body).hex()),
                b,
                "{what}: blob {b} of {repo}:{t} has other bytes"
            );
        }
    }
    named
}
