//! Layer tars: determinism, entry order, whiteouts and opaque directories from a real
//! overlay upper, hardlinks, owners, and stable compressed bytes.

mod common;

use cairn::idmap::IdMap;
use cairn::layer::{self, Chown, Compression, LayerOptions};
use cairn::Digest;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

/// One tar entry as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    kind: tar::EntryType,
    link: Option<String>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn list(tar_bytes: &[u8]) -> Vec<Seen> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(px) = e.pax_extensions().unwrap() {
            for p in px {
                let p = p.unwrap();
                if let Some(name) = p.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), p.value_bytes().to_vec()));
                }
            }
        }
        let h = e.header();
        out.push(Seen {
            path: String::from_utf8(e.path_bytes().to_vec()).unwrap(),
            kind: h.entry_type(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.to_vec()).unwrap()),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: h.size().unwrap(),
            xattrs,
        });
    }
    out
}

fn tar_of(dir: &Path, opts: &LayerOptions) -> Vec<u8> {
    let mut out = Vec::new();
    layer::write_tar(dir, &mut out, opts).unwrap();
    out
}

fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn write(path: &Path, data: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of entry and names that trip naive orderings.
fn sample_tree(root: &Path, mtime: u64) {
    for d in ["a", "a/b", "z"] {
        fs::create_dir_all(root.join(d)).unwrap();
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&root.join("a-b"), "dash", 0o644);
    write(&root.join("a.txt"), "dot", 0o644);
    write(&root.join("a/b/file"), "deep", 0o640);
    write(&root.join("B"), "upper", 0o644);
    write(&root.join("z/setuid"), "#!/bin/sh\n", 0o4755);
    write(&root.join("z/orig"), "shared data", 0o644);
    fs::hard_link(root.join("z/orig"), root.join("a/hard")).unwrap();
    symlink("../z/orig", root.join("a/sym")).unwrap();
    let fifo = root.join("z/fifo");
    common::run_ok(Command::new("mkfifo").arg("-m").arg("0600").arg(&fifo));
    xattr::set(root.join("B"), "user.cairn.test", b"v1").unwrap();
    let mut paths: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    paths.reverse();
    for e in paths {
        if !e.path_is_symlink() && e.file_type().is_file() || e.file_type().is_dir() {
            set_mtime(e.path(), mtime);
        }
    }
}

#[test]
fn same_tree_same_bytes_and_mtimes_clamped() {
    let t1 = common::tempdir();
    let t2 = common::tempdir();
    sample_tree(t1.path(), 2_000_000_000);
    sample_tree(t2.path(), 2_100_000_000);
    let plain = LayerOptions::default();
    assert_eq!(tar_of(t1.path(), &plain), tar_of(t1.path(), &plain));
    assert_ne!(
        tar_of(t1.path(), &plain),
        tar_of(t2.path(), &plain),
        "mtimes are recorded"
    );

    let sde = LayerOptions {
        source_date_epoch: Some(1_000_000_000),
        ..LayerOptions::default()
    };
    let (a, b) = (tar_of(t1.path(), &sde), tar_of(t2.path(), &sde));
    assert_eq!(Digest::of_bytes(&a), Digest::of_bytes(&b));
    assert!(list(&a)
        .iter()
        .filter(|e| e.kind != tar::EntryType::Symlink)
        .all(|e| e.mtime == 1_000_000_000));
    // Older mtimes are kept, not raised to the epoch.
    let late = LayerOptions {
        source_date_epoch: Some(2_050_000_000),
        ..LayerOptions::default()
    };
    assert!(list(&tar_of(t1.path(), &late))
        .iter()
        .any(|e| e.mtime == 2_000_000_000));
}

#[test]
fn entries_sorted_parents_first_numeric_owners() {
    let t = common::tempdir();
    sample_tree(t.path(), 1_600_000_000);
    let bytes = tar_of(t.path(), &LayerOptions::default());
    let es = list(&bytes);
    let paths: Vec<&str> = es.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "B", "a/", "a-b", "a.txt", "a/b/", "a/b/file", "a/hard", "a/sym", "z/", "z/fifo",
            "z/orig", "z/setuid"
        ],
        "sorted by path bytes (a directory's own name, without its slash, is its prefix)"
    );
    let by = |p: &str| es.iter().find(|e| e.path == p).unwrap().clone();
    assert_eq!(by("a/sym").link.as_deref(), Some("../z/orig"));
    assert_eq!(by("z/setuid").mode, 0o4755);
    assert_eq!(by("a/b/file").mode, 0o640);
    assert_eq!(by("z/fifo").kind, tar::EntryType::Fifo);
    assert_eq!(
        by("B").xattrs,
        [("user.cairn.test".to_string(), b"v1".to_vec())]
    );
    // The first path in tar order carries the data; later links point at it, relative.
    assert_eq!(by("a/hard").kind, tar::EntryType::Regular);
    assert_eq!(by("a/hard").size, 11);
    assert_eq!(by("z/orig").kind, tar::EntryType::Link);
    assert_eq!(by("z/orig").link.as_deref(), Some("a/hard"));
    // Empty uname/gname; no GNU headers anywhere.
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().as_ustar().is_some(), "ustar only");
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
    }
}

#[test]
fn owners_mapped_back_and_chown_prefix() {
    let t = common::tempdir();
    write(&t.path().join("app/x"), "x", 0o644);
    write(&t.path().join("apple"), "y", 0o644);
    write(&t.path().join("etc/f"), "z", 0o644);
    for p in ["app", "app/x", "apple", "etc", "etc/f"] {
        std::os::unix::fs::lchown(t.path().join(p), Some(100_005), Some(100_007)).unwrap();
    }
    let map = vec![IdMap {
        container: 0,
        host: 100_000,
        size: 65536,
    }];
    let opts = LayerOptions {
        uid_maps: map.clone(),
        gid_maps: map,
        chown: Some(Chown {
            prefix: "/app/".into(),
            uid: 1000,
            gid: 1001,
        }),
        ..LayerOptions::default()
    };
    let owners: Vec<(String, u64, u64)> = list(&tar_of(t.path(), &opts))
        .into_iter()
        .map(|e| (e.path, e.uid, e.gid))
        .collect();
    let want = [
        ("app/", 1000, 1001),
        ("app/x", 1000, 1001),
        ("apple", 5, 7),
        ("etc/", 5, 7),
        ("etc/f", 5, 7),
    ];
    let want: Vec<(String, u64, u64)> = want
        .iter()
        .map(|(p, u, g)| (p.to_string(), *u, *g))
        .collect();
    assert_eq!(owners, want);
    // Outside every range: the overflow id, as the kernel shows it.
    let narrow = LayerOptions {
        uid_maps: vec![IdMap {
            container: 0,
            host: 1,
            size: 1,
        }],
        ..LayerOptions::default()
    };
    assert!(list(&tar_of(t.path(), &narrow))
        .iter()
        .all(|e| e.uid == 65534));
}

/// Mounts an overlay in a private mount namespace, runs `script` in the merged directory
/// and returns with the upper directory filled and nothing left mounted.
fn overlay_run(base: &Path, script: &str) {
    let mount = format!(
        "mount -t overlay overlay -o lowerdir={b}/lower,upperdir={b}/upper,workdir={b}/work {b}/merged && cd {b}/merged && {script}",
        b = base.display()
    );
    common::run_ok(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-ec",
        &mount,
    ]));
}

#[test]
fn overlay_upper_whiteouts_and_opaque_dirs() {
    common::require_root();
    let t = common::tempdir();
    let b = t.path();
    for d in ["lower", "upper", "work", "merged"] {
        fs::create_dir(b.join(d)).unwrap();
    }
    write(&b.join("lower/gone"), "1", 0o644);
    write(&b.join("lower/keep/k"), "2", 0o644);
    write(&b.join("lower/keep/old"), "3", 0o644);
    write(&b.join("lower/op/old1"), "4", 0o644);
    write(&b.join("lower/op/sub/old2"), "5", 0o644);
    overlay_run(
        b,
        "rm gone keep/old && rm -r op && mkdir op && echo new > op/-first && echo z > op/zz && \
         chmod 0700 op && echo n > keep/new && ln keep/new keep/new2",
    );
    let es = list(&tar_of(&b.join("upper"), &LayerOptions::default()));
    let paths: Vec<&str> = es.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".wh.gone",
            "keep/",
            "keep/.wh.old",
            "keep/new",
            "keep/new2",
            "op/",
            "op/.wh..wh..opq",
            "op/-first",
            "op/zz"
        ]
    );
    let by = |p: &str| es.iter().find(|e| e.path == p).unwrap().clone();
    for wh in [".wh.gone", "keep/.wh.old"] {
        let e = by(wh);
        assert_eq!(
            (e.kind, e.size, e.mode),
            (tar::EntryType::Regular, 0, 0o600),
            "{wh}"
        );
    }
    let opq = by("op/.wh..wh..opq");
    assert_eq!(
        (opq.kind, opq.size, opq.mode),
        (tar::EntryType::Regular, 0, 0o700)
    );
    assert_eq!(by("keep/new2").link.as_deref(), Some("keep/new"));
    assert!(
        es.iter()
            .all(|e| e.xattrs.iter().all(|(k, _)| !k.contains("overlay"))),
        "overlay's own xattrs never reach the layer: {es:?}"
    );
}

#[test]
fn metacopy_upper_is_refused() {
    common::require_root();
    let t = common::tempdir();
    write(&t.path().join("f"), "", 0o644);
    xattr::set(t.path().join("f"), "trusted.overlay.metacopy", b"").unwrap();
    let err = layer::write_tar(t.path(), Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(
        matches!(err, layer::Error::UnsupportedUpper { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("metacopy=off"));
}

#[test]
fn empty_dir_gives_no_layer() {
    let t = common::tempdir();
    assert!(
        layer::write_layer(t.path(), Vec::new(), &LayerOptions::default())
            .unwrap()
            .is_none()
    );
    assert_eq!(tar_of(t.path(), &LayerOptions::default()), vec![0u8; 1024]);
}

/// Pins the exact bytes: a change in tar normalisation, the gzip backend or level, or
/// the zstd settings changes these digests and must be deliberate.
#[test]
fn compressed_bytes_are_pinned() {
    let t = common::tempdir();
    write(&t.path().join("etc/hostname"), "cairn\n", 0o644);
    write(&t.path().join("bin/tool"), &"x".repeat(10_000), 0o755);
    for p in ["etc", "etc/hostname", "bin", "bin/tool"] {
        std::os::unix::fs::lchown(t.path().join(p), Some(0), Some(0)).unwrap();
    }
    fs::set_permissions(t.path().join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.path().join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut got = Vec::new();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = LayerOptions {
            compression: c,
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        };
        let (blob, diff_id) = layer::write_layer(t.path(), Vec::new(), &opts)
            .unwrap()
            .unwrap();
        let (blob2, _) = layer::write_layer(t.path(), Vec::new(), &opts)
            .unwrap()
            .unwrap();
        assert_eq!(blob, blob2, "{c}");
        got.push((c, diff_id, Digest::of_bytes(&blob)));
    }
    for (c, diff_id, blob) in &got {
        eprintln!("{c}: diff_id {diff_id} blob {blob}");
    }
    assert_eq!(
        got[0].1, got[0].2,
        "uncompressed: blob digest is the diffID"
    );
    assert!(got.iter().all(|g| g.1 == got[0].1));
    let pinned = [
        "sha256:f38f112260b4b9d45c11d751f76a8bb78f92a3de15268531e6156d3cc3888510",
        // gzip: parallel 128 KiB blocks on zlib-rs since the pigz-style encoder (was 763b4338… on
        // single-stream miniz_oxide).
        "sha256:6b7d370d14b0ff06203fb31e40fe33fe3f7830db736cc85bd629f08c4e743cb3",
        "sha256:c3c7d1e9bd6a4bfff807490ea08948732dd4078c7a4f2ce67a7302fa2bef6490",
    ];
    for ((c, _, blob), want) in got.iter().zip(pinned) {
        assert_eq!(blob.as_str(), want, "{c}");
    }
}

/// GNU tar (a reader cairn does not share code with) restores exactly the tree the layer
/// was written from: odd and long names (PAX), modes with setuid, owners, symlinks,
/// hardlinks, devices, FIFOs and xattrs.
#[test]
fn gnu_tar_restores_the_tree() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    common::require_root();
    let t = common::tempdir();
    let src = t.path().join("src");
    sample_tree(&src, 1_650_000_000);
    let odd = src.join(OsStr::from_bytes(b"bad-\xff-name"));
    write(&odd, "not utf-8", 0o600);
    let long = src
        .join("l".repeat(90))
        .join("m".repeat(90))
        .join("n".repeat(120));
    write(&long, "long", 0o644);
    write(&src.join("caf\u{e9}"), "utf-8", 0o644);
    std::os::unix::fs::lchown(&odd, Some(3_000_000), Some(4242)).unwrap();
    common::run_ok(
        Command::new("mknod")
            .arg(src.join("null"))
            .args(["c", "1", "3"]),
    );

    let tar_path = t.path().join("layer.tar");
    fs::write(&tar_path, tar_of(&src, &LayerOptions::default())).unwrap();
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    common::run_ok(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&tar_path)
            .arg("-C")
            .arg(&dst),
    );

    // (path, mode, uid, gid, rdev, content or link target)
    type Row = (Vec<u8>, u32, u32, u32, u64, Option<Vec<u8>>);
    let walk = |root: &Path| -> Vec<Row> {
        walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .skip(1)
            .map(|e| {
                let e = e.unwrap();
                let md = fs::symlink_metadata(e.path()).unwrap();
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                let content = if md.is_file() {
                    Some(fs::read(e.path()).unwrap())
                } else if md.file_type().is_symlink() {
                    Some(
                        fs::read_link(e.path())
                            .unwrap()
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                    )
                } else {
                    None
                };
                (rel, md.mode(), md.uid(), md.gid(), md.rdev(), content)
            })
            .collect()
    };
    assert_eq!(walk(&dst), walk(&src));
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&dst.join("a/hard")),
        ino(&dst.join("z/orig")),
        "hardlink kept"
    );
    assert_eq!(
        xattr::get(dst.join("B"), "user.cairn.test")
            .unwrap()
            .as_deref(),
        Some(&b"v1"[..])
    );
}
