//! SIGKILL during `docker load` (issue 18), into each engine a user has: the machine's
//! Docker 20.10 (classic image store; only loaded into, never reconfigured) and Docker
//! Engine 26 with the containerd image store (`scripts/engines`). Kills are spread over the
//! load itself (from cairn's "loading the image into Docker" line to its end, timed on an
//! uninterrupted load). After each: the engine has the whole image under the tag (it runs)
//! or none, the store verifies clean, no process is left, and the next build loads the
//! image an uninterrupted build gives (its digest, built into a store of its own), which
//! `docker run` runs.
//!
//! A load that ends before its kill point (loads vary on a loaded machine) is tried again
//! with new content and half the delay, up to three times per point. The short form
//! (`scripts/test`) tries 4 kill points per engine;
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
/// moment; other bytes for each `seed`) and `/x` holding `x`; no base image and no RUN.
fn context(dir: &Path, x: &str, seed: u64) {
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("x"), x).unwrap();
    let mut v: u64 = 0x2545f4914f6cdd1d ^ (seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
    let big: Vec<u8> = (0..(16usize << 20))
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
    let tag = format!(
        "cairn-test-reliab-load-{}-{}:t{}",
        e.name,
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    // Every load sends an image the engine never had (content of this test and this try
    // only): a removed image's blobs are collected by the containerd store in the
    // background, and an import of the same blobs meanwhile may lose them, so images are
    // only untagged during the test and removed at its end.
    let mut cleanup = Rmi(e.clone(), vec![tag.clone()]);
    let id_of = |j: &serde_json::Value| {
        j[if e.containerd_store {
            "manifest_digest"
        } else {
            "config_digest"
        }]
        .as_str()
        .unwrap()
        .to_string()
    };

    // How long an uninterrupted load takes (the shorter of two).
    let mut span = Duration::MAX;
    for k in 0..2 {
        context(ctx.path(), &format!("{}-timing-{k}", m.name), 100 + k);
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
        if let Some(id) = e.image_id(&tag) {
            cleanup.1.push(id);
        }
        e.rmi(std::slice::from_ref(&tag));
    }

    let n = kills();
    let reference = common::tempdir();
    let (mut tries, mut survived, mut landed, mut whole) = (0, 0, 0, 0);
    for i in 0..n {
        let mut after = span.mul_f64((i as f64 + 0.5) / n as f64);
        for attempt in 0..3 {
            tries += 1;
            // This try's image, and its digest and ID built without a load (an archive whose
            // layers are as the store holds them, zstd, so its manifest is the store's).
            let x = format!("{}-{i}-{attempt}", m.name);
            context(ctx.path(), &x, (i * 3 + attempt) as u64 + 1);
            let o = m
                .cairn(reference.path())
                .arg("build")
                .arg(ctx.path())
                .args(["--format=json", "--output"])
                .arg(format!(
                    "type=docker,dest={},compression=zstd",
                    reference.path().join("o.tar").display()
                ))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let want: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let want_id = id_of(&want);
            cleanup.1.push(want_id.clone());

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
                "{} load kill {i}.{attempt} at load+{after:?} (killed: {killed})",
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
            e.rmi(std::slice::from_ref(&tag));
            if killed {
                break;
            }
            // The load was quicker than the timed ones: again, with new content, earlier.
            after /= 2;
        }
    }
    eprintln!(
        "RELIABILITY load-sigkill {} tries={tries} killed-mid-load={landed} whole-image-after={whole} survived={survived}",
        e.name
    );
    assert!(
        landed * 2 >= n,
        "{}: only {landed} of {n} kill points landed inside a load",
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
