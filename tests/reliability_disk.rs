//! Disk full: the store on a size-limited tmpfs made by the test, filled with a filler
//! file until a build runs out of space while pulling, while copying, and while writing a
//! RUN step's layer. Each failure is exit code 6 with a message that says the disk is
//! full; the store stays consistent (`cache verify` clean, no temp files) and, once the
//! filler is gone, the same build succeeds with the image a roomy store gives.

mod common;
mod reliability_support;

use common::registry::Registry;
use reliability_support::{assert_verify_clean, build_cmd, run_build, Finished, Marker, SmallFs};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Bytes gzip cannot shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_disk_full(f: &Finished, what: &str) {
    assert_eq!(
        f.code,
        Some(6),
        "{what}: expected exit 6 (store problem):\n{}",
        f.stderr
    );
    let err = f.error();
    assert!(
        err.contains("No space left on device"),
        "{what}: the error does not say the disk is full: {err:?}\n{}",
        f.stderr
    );
}

/// Verify clean and no temp file left after a failure.
fn assert_consistent(m: &Marker, root: &Path, what: &str) {
    assert_verify_clean(m, root, what);
    let temps: Vec<_> = fs::read_dir(root.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_a_usable_store() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "reliab/disk:latest");
    let base = format!("{}/reliab/disk:latest", reg.addr);
    let m = Marker::new("disk");
    let ctx = common::tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY big.bin /big.bin\nRUN head -c 6000000 /big.bin > /copy.bin # {}\n",
            m.name
        ),
    )
    .unwrap();
    fs::write(ctx.path().join("big.bin"), noise(6 << 20, 7)).unwrap();
    let outs = common::tempdir();
    let build = |root: &Path, name: &str| {
        run_build(&mut build_cmd(
            &m,
            root,
            ctx.path(),
            &outs.path().join(name),
            &[],
        ))
    };

    // What a roomy store makes.
    let roomy = common::tempdir();
    let reference = build(roomy.path(), "ref.tar");
    reference.assert_ok("reference");
    let want = reference.digests();

    let small = SmallFs::mount("64m");
    let root = small.path().join("store");
    fs::create_dir(&root).unwrap();

    // 1. No room for the base image's layer.
    let filler = small.fill_leaving(256 << 10);
    let f = build(&root, "pull.tar");
    assert_disk_full(&f, "pull");
    assert_consistent(&m, &root, "after the failed pull");
    fs::remove_file(&filler).unwrap();

    // 2. Room for the base, not for the copied file.
    let pulled = Command::new(common::cairn_bin())
        .env("CAIRN_ROOT", &root)
        .args(["pull", &base])
        .output()
        .unwrap();
    assert!(pulled.status.success(), "{pulled:?}");
    let filler = small.fill_leaving(4 << 20);
    let f = build(&root, "copy.tar");
    assert_disk_full(&f, "COPY");
    assert_consistent(&m, &root, "after the failed COPY");
    fs::remove_file(&filler).unwrap();

    // 3. The COPY fits; the RUN's output fits its upper directory but not its layer too.
    let f = {
        // Build up to the COPY with room, then shrink the room for the RUN.
        let copy_only = common::tempdir();
        fs::write(
            copy_only.path().join("Dockerfile"),
            format!("FROM {base}\nCOPY big.bin /big.bin\n"),
        )
        .unwrap();
        fs::copy(ctx.path().join("big.bin"), copy_only.path().join("big.bin")).unwrap();
        run_build(&mut build_cmd(
            &m,
            &root,
            copy_only.path(),
            &outs.path().join("c.tar"),
            &[],
        ))
        .assert_ok("COPY with room");
        // 6 MB unpacked COPY layer + 6 MB upper fit; the 6 MB layer blob does not.
        let filler = small.fill_leaving(14 << 20);
        let f = build(&root, "run.tar");
        fs::remove_file(&filler).unwrap();
        f
    };
    // Either the step's own write or cairn's layer write hits the wall; the latter must be 6.
    if f.code == Some(3) {
        assert!(f.stderr.contains("RUN exited with"), "{}", f.stderr);
        eprintln!("RUN: the step itself ran out of space (exit 3, as docker build)");
    } else {
        assert_disk_full(&f, "RUN layer");
        eprintln!("RUN: the layer write ran out of space (exit 6)");
    }
    assert_consistent(&m, &root, "after the failed RUN");

    // Space is back: the same build succeeds and makes the roomy store's image.
    let f = build(&root, "after.tar");
    f.assert_ok("after freeing space");
    assert_eq!(
        f.digests(),
        want,
        "the image differs from the roomy store's"
    );
    assert_consistent(&m, &root, "after the successful build");
    assert!(m.strays().is_empty());
    eprintln!(
        "disk full: pull, COPY and RUN each failed cleanly; store verified; rebuild matched {}",
        want.0
    );
}

/// The local disk full during a push (a gzip push re-compresses the store's zstd layers
/// into the store first): exit 6 saying the disk is full, no tag in the registry, the store
/// consistent with no temp file; once space is back the push completes and the registry's
/// tag names blobs it has.
#[test]
fn a_full_disk_during_push_fails_clearly_and_pushes_after() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "reliab/diskpush:latest");
    let base = format!("{}/reliab/diskpush:latest", reg.addr);
    let m = Marker::new("diskpush");
    let ctx = common::tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY big.bin /big.bin\n"),
    )
    .unwrap();
    fs::write(ctx.path().join("big.bin"), noise(6 << 20, 11)).unwrap();
    let small = SmallFs::mount("64m");
    let root = small.path().join("store");
    fs::create_dir(&root).unwrap();
    let outs = common::tempdir();
    let local = "local/diskpush:1";
    run_build(&mut build_cmd(
        &m,
        &root,
        ctx.path(),
        &outs.path().join("o.tar"),
        &["-t", local],
    ))
    .assert_ok("build");

    let dest = format!("{}/app/diskpush:1", reg.addr);
    let filler = small.fill_leaving(1 << 20);
    let o = m
        .cairn(&root)
        .args(["push", local, &dest])
        .output()
        .unwrap();
    let f = Finished {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert_disk_full(&f, "push");
    assert!(
        reliability_support::tags(&reg.addr, "app/diskpush").is_empty(),
        "a tag appeared for a failed push"
    );
    assert_consistent(&m, &root, "after the failed push");
    eprintln!(
        "RELIABILITY local disk full during push: exit 6: {}",
        f.error()
    );
    fs::remove_file(&filler).unwrap();

    let o = m
        .cairn(&root)
        .args(["push", "--format=json", local, &dest])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "push after freeing space: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        Some(j["digest"].as_str().unwrap().to_string()),
        reliability_support::tag_digest(&reg.addr, "app/diskpush", "1")
    );
    reliability_support::assert_every_tag_complete(&reg.addr, "app/diskpush", "push");
    assert_consistent(&m, &root, "after the push");
}
