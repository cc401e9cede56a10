//! Layer unpacking: every kind of entry a layer holds, in overlayfs form afterwards;
//! hostile layers that try to write or follow outside the target; compressed blobs through
//! the store with their diff ids checked; and a Debian minbase base against `tar -x`.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use cairn::rootfs::{ensure_unpacked, unpack_tar};
use cairn::userns::Privilege;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use support::tars::*;

fn root_opts() -> Privilege {
    Privilege::Root
}

#[test]
fn every_entry_kind_unpacks_in_overlay_form() {
    common::require_root();
    let dir = common::tempdir();
    let target = dir.path().join("t");
    std::fs::create_dir(&target).unwrap();
    let long = format!("deep/{}/file", "n".repeat(150));
    let mut t = TarBuilder::default();
    t.dir("ro", 0o555, 0, 0);
    t.file("ro/inside", b"x", 0o644, 7, 8);
    t.file("bin/ping", b"ELF", 0o4755, 0, 0);
    t.xattr("security.capability", &cap_net_raw());
    t.xattr("user.lost", b"replaced");
    t.file("bin/ping", b"ELF", 0o4755, 0, 0); // a duplicate entry: the later one wins
    t.xattr("security.capability", &cap_net_raw());
    t.xattr("user.note", b"kept");
    t.xattr("trusted.overlay.redirect", b"/etc");
    t.hardlink("bin/ping6", "bin/ping");
    t.hardlink("other/ping-again", "/bin/ping");
    t.symlink("bin/sh", "/bin/busybox");
    t.dir("tmp", 0o1777, 0, 0);
    t.fifo("run/fifo", 0o600);
    t.char_device("dev/null", 1, 3);
    t.file(&long, b"long", 0o600, 0, 0);
    t.file("etc/.wh.passwd", b"", 0o600, 0, 0);
    t.file("var/cache/.wh..wh..opq", b"", 0o600, 0, 0);
    unpack_tar(&t.finish()[..], &target, &root_opts(), &mut |_| {}).unwrap();

    let m = |p: &str| std::fs::symlink_metadata(target.join(p)).unwrap();
    assert_eq!(
        m("ro").mode() & 0o7777,
        0o555,
        "directory modes are set after their children"
    );
    assert_eq!((m("ro/inside").uid(), m("ro/inside").gid()), (7, 8));
    assert_eq!(
        m("bin/ping").mode() & 0o7777,
        0o4755,
        "setuid survives the chown"
    );
    assert_eq!(
        xattr::get(target.join("bin/ping"), "security.capability").unwrap(),
        Some(cap_net_raw())
    );
    assert_eq!(
        xattr::get(target.join("bin/ping"), "user.note").unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(
        xattr::get(target.join("bin/ping"), "trusted.overlay.redirect").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(target.join("bin/ping"), "user.lost").unwrap(),
        None
    );
    assert_eq!(m("bin/ping").ino(), m("bin/ping6").ino());
    assert_eq!(m("bin/ping").ino(), m("other/ping-again").ino());
    assert_eq!(
        std::fs::read_link(target.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(m("tmp").mode() & 0o7777, 0o1777);
    assert!(m("run/fifo").file_type().is_fifo());
    assert!(
        m("dev/null").file_type().is_char_device()
            && m("dev/null").rdev() == nix::sys::stat::makedev(1, 3)
    );
    assert_eq!(std::fs::read(target.join(&long)).unwrap(), b"long");
    assert!(cairn::overlay::is_whiteout(&m("etc/passwd")));
    assert!(cairn::overlay::is_opaque(&target.join("var/cache")));
    assert_eq!(m("var/cache").mode() & 0o777, 0o755);
}

#[test]
fn hostile_entries_are_refused_or_contained() {
    common::require_root();
    let dir = common::tempdir();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("victim"), "intact").unwrap();
    std::fs::set_permissions(
        outside.join("victim"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", {
            let mut t = TarBuilder::default();
            t.raw_file("../outside/victim", b"owned");
            t.finish()
        }),
        ("dotdot-inner", {
            let mut t = TarBuilder::default();
            t.raw_file("a/../../outside/victim", b"owned");
            t.finish()
        }),
        ("absolute", {
            let mut t = TarBuilder::default();
            t.raw_file(&format!("{}/victim", outside.display()), b"owned");
            t.finish()
        }),
        ("symlink-then-through", {
            let mut t = TarBuilder::default();
            t.symlink("etc", "/etc");
            t.file("etc/cairn-owned", b"owned", 0o644, 0, 0);
            t.symlink("out", &outside.display().to_string());
            t.file("out/victim", b"owned", 0o644, 0, 0);
            t.symlink("up", "../../../../../../..");
            t.file(
                &format!("up{}/victim", outside.display()),
                b"owned",
                0o644,
                0,
                0,
            );
            t.finish()
        }),
        ("hardlink-to-host", {
            let mut t = TarBuilder::default();
            t.hardlink("passwd", "/etc/passwd");
            t.finish()
        }),
        ("hardlink-dotdot", {
            let mut t = TarBuilder::default();
            t.hardlink("victim", "../outside/victim");
            t.finish()
        }),
        ("symlink-replaced-by-dir", {
            let mut t = TarBuilder::default();
            t.symlink("d", &outside.display().to_string());
            t.dir("d", 0o755, 0, 0);
            t.file("d/victim", b"owned", 0o644, 0, 0);
            t.finish()
        }),
        ("dir-replaced-by-symlink-before-its-mode-is-set", {
            let mut t = TarBuilder::default();
            t.dir("d", 0o777, 0, 0);
            t.symlink("d", &outside.display().to_string());
            t.finish()
        }),
        ("parent-replaced-by-symlink-before-its-mode-is-set", {
            let mut t = TarBuilder::default();
            t.dir("p/victim", 0o777, 0, 0);
            t.symlink("p", &outside.display().to_string());
            t.finish()
        }),
        ("whiteout-through-symlink", {
            let mut t = TarBuilder::default();
            t.symlink("w", &outside.display().to_string());
            t.file("w/.wh.victim", b"", 0o644, 0, 0);
            t.file("w/.wh..wh..opq", b"", 0o644, 0, 0);
            t.finish()
        }),
    ];
    for (name, tar) in cases {
        let target = dir.path().join(name);
        std::fs::create_dir(&target).unwrap();
        let result = unpack_tar(&tar[..], &target, &root_opts(), &mut |_| {});
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "intact",
            "{name}: {result:?}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "{name}");
        assert!(!cairn::overlay::is_opaque(&outside), "{name}");
        let mode = std::fs::metadata(&outside).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o755,
            "{name}: the mode of a directory outside changed"
        );
        assert!(!Path::new("/etc/cairn-owned").exists(), "{name}");
        // Whatever was not refused stayed inside the target.
        if result.is_ok() {
            assert!(!walk_has_outside_links(&target), "{name}");
        }
    }
    let refused = |tar: Vec<u8>| {
        let target = tempfile::tempdir().unwrap();
        unpack_tar(&tar[..], target.path(), &root_opts(), &mut |_| {}).is_err()
    };
    let mut t = TarBuilder::default();
    t.raw_file("../x", b"");
    assert!(refused(t.finish()), "a path climbing out is refused");
    let mut t = TarBuilder::default();
    t.hardlink("passwd", "/etc/passwd");
    assert!(
        refused(t.finish()),
        "a hardlink to a file outside the layer is refused"
    );
}

/// Whether a hardlinked file in `dir` shares an inode with something outside it.
fn walk_has_outside_links(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.file_type().is_file() && e.metadata().unwrap().nlink() > 1)
}

#[test]
fn compressed_blobs_unpack_once_through_the_store_and_check_their_diff_id() {
    common::require_root();
    let dir = common::tempdir();
    let store = cairn::store::Store::open(&dir.path().join("store")).unwrap();
    let mut t = TarBuilder::default();
    t.file("hello", b"world", 0o644, 0, 0);
    let tar = t.finish();
    let diff_id = cairn::Digest::of_bytes(&tar);
    for blob in [
        tar.clone(),
        gzip(&tar),
        zstd::encode_all(&tar[..], 3).unwrap(),
    ] {
        let digest = store.put_bytes(&blob).unwrap();
        let layer = ensure_unpacked(&store, &digest, &diff_id, &root_opts(), &mut |_| {}).unwrap();
        assert_eq!(layer, store.layer_dir(&diff_id));
        assert_eq!(std::fs::read(layer.join("hello")).unwrap(), b"world");
        std::fs::remove_dir_all(&layer).unwrap();
    }
    let wrong = cairn::Digest::of_bytes(b"not this tar");
    let digest = store.put_bytes(&tar).unwrap();
    let err = ensure_unpacked(&store, &digest, &wrong, &root_opts(), &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("does not match its diff id"),
        "{err}"
    );
    assert!(!store.layer_dir(&wrong).exists());
    // Idempotent: a second call finds the directory.
    let a = ensure_unpacked(&store, &digest, &diff_id, &root_opts(), &mut |_| {}).unwrap();
    std::fs::write(a.join("marker"), "").unwrap();
    let b = ensure_unpacked(&store, &digest, &diff_id, &root_opts(), &mut |_| {}).unwrap();
    assert!(b.join("marker").exists());
}

/// The stream is decompressed and hashed on a thread of its own, in chunks, ahead of the
/// unpacker: a file spanning many chunks arrives whole, the bytes after the tar's end
/// marker (which the unpacker never reads) still count in the diff id, and a truncated
/// blob fails and leaves no layer.
#[test]
fn read_ahead_unpacking_hashes_every_byte_and_fails_on_truncation() {
    common::require_root();
    let dir = common::tempdir();
    let store = cairn::store::Store::open(&dir.path().join("store")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut t = TarBuilder::default();
    t.file("big", &big, 0o644, 0, 0);
    t.file("small", b"after", 0o600, 0, 0);
    let mut tar = t.finish();
    tar.extend(std::iter::repeat_n(0u8, 700_000));
    let diff_id = cairn::Digest::of_bytes(&tar);
    let digest = store.put_bytes(&gzip(&tar)).unwrap();
    let layer = ensure_unpacked(&store, &digest, &diff_id, &root_opts(), &mut |_| {}).unwrap();
    assert!(std::fs::read(layer.join("big")).unwrap() == big);
    assert_eq!(std::fs::read(layer.join("small")).unwrap(), b"after");

    // The same tar without its trailing zeros has another diff id: the tail was hashed.
    let short = cairn::Digest::of_bytes(&tar[..tar.len() - 700_000]);
    let err = ensure_unpacked(&store, &digest, &short, &root_opts(), &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("does not match its diff id"),
        "{err}"
    );
    assert!(!store.layer_dir(&short).exists());

    let gz = gzip(&tar);
    let truncated = store.put_bytes(&gz[..gz.len() / 2]).unwrap();
    let other = cairn::Digest::of_bytes(b"truncated");
    let err = ensure_unpacked(&store, &truncated, &other, &root_opts(), &mut |_| {}).unwrap_err();
    assert!(!err.to_string().contains("does not match"), "{err}");
    assert!(!store.layer_dir(&other).exists());
}

#[test]
fn debian_minbase_unpacks_exactly_like_tar_x() {
    common::require_root();
    let tar_path = support::debian_minbase_tar();
    let dir = tempfile::Builder::new()
        .prefix("cairn-unpack-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("tar"));
    std::fs::create_dir(&ours).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    let started = std::time::Instant::now();
    let cpu = support::cpu_ticks("thread-self");
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&tar_path).unwrap());
    unpack_tar(file, &ours, &root_opts(), &mut |_| {}).unwrap();
    let ours_t = started.elapsed();
    let ours_cpu = support::cpu_ticks("thread-self") - cpu;
    let cpu = support::cpu_ticks("self");
    let started = std::time::Instant::now();
    let st = std::process::Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(st.success());
    let tar_t = started.elapsed();
    // tar's CPU shows in this process's children times (run this test alone to read it).
    let tar_cpu = support::cpu_ticks("self") - cpu;
    eprintln!(
        "BENCH unpack {} MB: cairn {:?} wall {} CPU ticks, tar -x {:?} wall {} CPU ticks, wall ratio {:.2}, CPU ratio {:.2}",
        std::fs::metadata(&tar_path).unwrap().len() >> 20,
        ours_t,
        ours_cpu,
        tar_t,
        tar_cpu,
        ours_t.as_secs_f64() / tar_t.as_secs_f64(),
        ours_cpu as f64 / tar_cpu.max(1) as f64
    );
    assert_eq!(
        support::describe_tree(&ours),
        support::describe_tree(&theirs)
    );
}

#[test]
fn rootless_ensure_unpacked_keeps_owners_through_the_id_maps() {
    if !support::rootless_inner("rootless_ensure_unpacked_keeps_owners_through_the_id_maps") {
        return;
    }
    let dir = common::tempdir();
    let store = cairn::store::Store::open(&dir.path().join("store")).unwrap();
    let mut t = TarBuilder::default();
    t.dir("var/cache/apt", 0o755, 42, 42);
    t.dir("secret", 0o700, 42, 42);
    t.file("secret/key", b"k", 0o600, 42, 42);
    t.file("var/cache/apt/pkgcache.bin", b"x", 0o4755, 42, 42);
    t.char_device("dev/null", 1, 3);
    t.file("etc/.wh.gone", b"", 0o644, 0, 0);
    t.file("opq/.wh..wh..opq", b"", 0o644, 0, 0);
    let tar = t.finish();
    let diff_id = cairn::Digest::of_bytes(&tar);
    let blob = store.put_bytes(&gzip(&tar)).unwrap();
    let privilege = Privilege::detect();
    assert!(!privilege.is_root());
    let mut warnings = Vec::new();
    let layer = ensure_unpacked(&store, &blob, &diff_id, &privilege, &mut |w| {
        warnings.push(w.to_string())
    })
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("skipped") && w.contains("dev/null")),
        "the skipped device comes back as a warning: {warnings:?}"
    );
    let (uids, gids) = Privilege::detect().id_maps();
    let m = std::fs::symlink_metadata(layer.join("var/cache/apt/pkgcache.bin")).unwrap();
    assert_eq!(m.uid(), cairn::idmap::container_to_host(&uids, 42).unwrap());
    assert_eq!(m.gid(), cairn::idmap::container_to_host(&gids, 42).unwrap());
    assert_eq!(m.mode() & 0o7777, 0o4755);
    let d = std::fs::symlink_metadata(layer.join("secret")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o700);
    assert!(
        !layer.join("dev/null").exists(),
        "device nodes cannot be made rootless"
    );
    assert!(cairn::overlay::is_whiteout(
        &std::fs::symlink_metadata(layer.join("etc/gone")).unwrap()
    ));
    assert!(cairn::overlay::is_opaque(&layer.join("opq")));
    cairn::userns::remove_as_root(&Privilege::detect(), &layer).unwrap();
    assert!(!layer.exists());
}
