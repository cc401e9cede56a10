//! SIGKILL during `docker load` (issue 18), into each engine a user has: the machine's
//! Docker 20.10 (classic image store; only loaded into, never reconfigured) and Docker
//! Engine 26 with the containerd image store (`scripts/engines`). Kills are spread over the
//! load itself (from cairn's "loading the image into Docker" line to its end, timed on an
//! uninterrupted load). After each: the engine has the whole image under the tag (it runs)
//! or none, the store verifies clean, no process is left, and the next build loads the
//! uninterrupted image, which `docker run` runs.
//!
//! The short form (`scripts/test`) tries 4 kill points per engine;
//! `CAIRN_RELIABILITY_KILLS=N` (or `CAIRN_RELIABILITY_FULL=1`, 16) tries more.

mod common;
mod reliability_support;

use common::engines::{self, Engine};
use reliability_support::{assert_verify_clean, kills, Marker, Running};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LOADING: &str = "loading the image into Docker";

/// A context whose image is busybox, bytes that do not compress (so the load takes a
/// moment) and `/x` holding `x`; no base image and no RUN.
fn context(dir: &Path, x: &str) {
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("x"), x).unwrap();
    let mut v: u64 = 0x2545f4914f6cdd1d ^ x.len() as u64;
    let big: Vec<u8> = (0..(24usize << 20))
        .map(|_| {
            v ^= v << 13;
            v ^= v >> 7;
            v ^= v << 17;
            v as u8
        })
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY big.bin /big.bin\nCOPY x /x\n\
         CMD [\"/bin/busybox\", \"cat\", \"/x\"]\n",
    )
    .unwrap();
}

/// `cairn build CTX -t TAG` into engine `e` (the default output: load).
fn build(m: &Marker, e: &Engine, root: &Path, ctx: &Path, tag: &str) -> Command {
    let mut c = m.cairn(root);
    e.env(&mut c)
        .arg("build")
        .arg(ctx)
        .args(["--progress=json", "--format=json", "-t", tag]);
    c
}

/// Images removed from an engine when dropped, however the test ends.
struct Rmi(Engine, Vec<String>);

impl Drop for Rmi {
    fn drop(&mut self) {
        self.0.rmi(&self.1);
    }
}

/// What `docker run` of `tag` prints, or its error.
fn run_cat(e: &Engine, tag: &str) -> Result<String, String> {
    let o = e
        .docker()
        .args(["run", "--rm", "--network", "none", tag])
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn kill_during_load(e: &Engine) {
    let m = Marker::new(&format!("load-{}", e.name));
    let root = common::tempdir();
    let ctx = common::tempdir();
    // Content of this test only: other tests may share the engine.
    let x = format!("{}-{}", m.name, e.name);
    context(ctx.path(), &x);
    let tag = format!(
        "cairn-test-reliab-load-{}-{}:t{}",
        e.name,
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    let mut cleanup = Rmi(e.clone(), vec![tag.clone()]);

    // The uninterrupted build and load: the image's ID and digest, and how long the load
    // takes (the shorter of two, each into an engine without the image).
    let mut span = Duration::MAX;
    let mut want = serde_json::Value::Null;
    for _ in 0..2 {
        let mut run = Running::spawn(&mut build(&m, e, root.path(), ctx.path(), &tag));
        assert!(run.wait_for_line(LOADING, Duration::from_secs(600)));
        let from = run
            .seen
            .iter()
            .find(|s| s.line.contains(LOADING))
            .unwrap()
            .at;
        assert_eq!(run.wait(), Some(0), "uninterrupted build and load");
        span = span.min(run.started.elapsed().saturating_sub(from));
        let o = build(&m, e, root.path(), ctx.path(), &tag)
            .output()
            .unwrap();
        assert!(o.status.success());
        want = serde_json::from_slice(&o.stdout).unwrap();
        e.rmi(&[tag.clone(), want["image_id"].as_str().unwrap().to_string()]);
    }
    let want_id = want["image_id"].as_str().unwrap().to_string();
    cleanup.1.push(want_id.clone());

    let n = kills();
    let (mut survived, mut landed, mut whole) = (0, 0, 0);
    for i in 0..n {
        let after = span.mul_f64((i as f64 + 0.5) / n as f64);
        let mut run = Running::spawn(&mut build(&m, e, root.path(), ctx.path(), &tag));
        let mut loading = None;
        let killed = run.kill_when(|t, seen| {
            if loading.is_none() {
                loading = seen.iter().find(|s| s.line.contains(LOADING)).map(|s| s.at);
            }
            loading.is_some_and(|l| t >= l + after)
        });
        landed += killed as usize;
        let what = format!(
            "{} load kill {i} at load+{after:?} (killed: {killed})",
            e.name
        );
        assert!(m.strays().is_empty(), "{what}: processes left");
        // The engine may still be reading what cairn sent before it died: whatever it
        // holds under the tag, at any moment, is none or the whole image (it runs). Looked
        // at twice: at once, and after the store's verify.
        let look = |when: &str| {
            if let Some(id) = e.image_id(&tag) {
                assert_eq!(id, want_id, "{what} ({when}): another image under the tag");
                assert_eq!(
                    run_cat(e, &tag).as_deref(),
                    Ok(x.as_str()),
                    "{what} ({when})"
                );
                true
            } else {
                false
            }
        };
        let at_once = look("at once");
        assert_verify_clean(&m, root.path(), &what);
        whole += (look("after verify") || at_once) as usize;
        let o = build(&m, e, root.path(), ctx.path(), &tag)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{what}: next build: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got["manifest_digest"], want["manifest_digest"], "{what}");
        assert_eq!(got["image_id"], want_id.as_str(), "{what}");
        assert_eq!(
            e.image_id(&tag).as_deref(),
            Some(want_id.as_str()),
            "{what}"
        );
        assert_eq!(run_cat(e, &tag).as_deref(), Ok(x.as_str()), "{what}: run");
        survived += 1;
        eprintln!("{what}: survived");
        e.rmi(&[tag.clone(), want_id.clone()]);
    }
    eprintln!(
        "RELIABILITY load-sigkill {} tries={n} killed-mid-load={landed} whole-image-after={whole} survived={survived}",
        e.name
    );
    assert!(
        landed * 2 >= n,
        "{}: only {landed} of {n} kills landed inside a load",
        e.name
    );
}

#[test]
fn sigkill_during_load_into_the_classic_store() {
    common::require_root();
    kill_during_load(&engines::system());
}

#[test]
fn sigkill_during_load_into_the_containerd_store() {
    common::require_root();
    kill_during_load(&engines::engine26());
}
