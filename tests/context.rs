//! The build context on disk: resolution under ignore rules, COPY layout, staging, and the
//! inputs hash — which must ignore mtimes and notice everything else.

use cairn::context::{
    hash_sources, heredoc_sources, plan_copy, resolve_dest, resolve_in, stage, stage_checked,
    Context, CopyOptions, EntryKind, Error, InputsHash, SourceRoot,
};
use cairn::dockerfile::ignore::IgnoreMatcher;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
}

/// app/{main.py, lib/util.py, lib/link -> util.py, empty/}, docs/{a.md, keep.md},
/// secret.env, build/out.bin, README.md, top -> app
fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "app/main.py", "print('hi')\n");
    write(r, "app/lib/util.py", "X = 1\n");
    symlink("util.py", r.join("app/lib/link")).unwrap();
    fs::create_dir(r.join("app/empty")).unwrap();
    write(r, "docs/a.md", "a\n");
    write(r, "docs/keep.md", "keep\n");
    write(r, "secret.env", "TOKEN=x\n");
    write(r, "build/out.bin", "bin\n");
    write(r, "README.md", "readme\n");
    symlink("app", r.join("top")).unwrap();
    for d in ["", "app", "app/lib", "app/empty", "docs", "build"] {
        fs::set_permissions(r.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

const IGNORE: &str = "# build output\nbuild\n*.env\ndocs\n!docs/keep.md\n";

fn ctx(dir: &Path) -> Context {
    Context::open(dir, IgnoreMatcher::parse(IGNORE).unwrap()).unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn hash(c: &Context, srcs: &[&str], dest: &str, opts: &CopyOptions) -> InputsHash {
    hash_sources(&c.resolve(&s(srcs)).unwrap(), dest, opts).unwrap()
}

#[test]
fn context_lists_what_docker_would_send() {
    let dir = sample();
    let files = ctx(dir.path()).files().unwrap();
    assert_eq!(
        files,
        s(&[
            "README.md",
            "app",
            "app/empty",
            "app/lib",
            "app/lib/link",
            "app/lib/util.py",
            "app/main.py",
            "docs",
            "docs/keep.md",
            "top",
        ])
    );
}

#[test]
fn resolution_follows_docker_rules() {
    let dir = sample();
    let c = ctx(dir.path());
    // `..` cannot leave the context; a leading `/` is the context root.
    let r = c
        .resolve(&s(&["../../README.md", "/app/./main.py"]))
        .unwrap();
    assert_eq!(r[0].rel_path(), "README.md");
    assert_eq!(r[1].rel_path(), "app/main.py");
    // Wildcards match in sorted order, never across `/`, and skip ignored files.
    let r = c.resolve(&s(&["*.md", "app/*.py", "*.env"])).unwrap();
    let got: Vec<String> = r.iter().map(|x| x.rel_path()).collect();
    assert_eq!(got, s(&["README.md", "app/main.py"]));
    let r = c.resolve(&s(&["docs/*"])).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].rel_path(), "docs/keep.md");
    // A top-level symlink is followed inside the context.
    let r = c.resolve(&s(&["top/lib/link"])).unwrap();
    assert_eq!(r[0].rel_path(), "app/lib/util.py");
    assert!(c.resolve(&s(&["top"])).unwrap()[0].is_dir());
}

#[test]
fn missing_sources_are_errors_naming_them() {
    let dir = sample();
    let c = ctx(dir.path());
    for (srcs, needle) in [
        (s(&["nope.txt"]), "\"nope.txt\": not found in build context"),
        (s(&["secret.env"]), "\"secret.env\": not found"), // excluded = not sent
        (s(&["build/out.bin"]), "\"build/out.bin\": not found"),
        (s(&["*.nothing"]), "no files match"),
        (s(&["[z"]), "syntax error in pattern"),
    ] {
        let err = c.resolve(&srcs).unwrap_err();
        assert!(err.to_string().contains(needle), "{srcs:?}: {err}");
    }
    // An empty wildcard is fine when something else matched (`yarn.lock*`).
    assert_eq!(
        c.resolve(&s(&["README.md", "yarn.lock*"])).unwrap().len(),
        1
    );
    // Symlinks cannot lead out of the context.
    symlink("/etc", dir.path().join("escape")).unwrap();
    assert!(c.resolve(&s(&["escape/passwd"])).is_err());
}

#[test]
fn destination_rules() {
    let dir = sample();
    let c = ctx(dir.path());
    let o = CopyOptions::default();
    let dests = |srcs: &[&str], dest: &str| -> Vec<String> {
        let plan = plan_copy(&c.resolve(&s(srcs)).unwrap(), dest, &o).unwrap();
        plan.iter()
            .map(|e| String::from_utf8(e.dest.clone()).unwrap())
            .collect()
    };
    assert_eq!(dests(&["README.md"], "/x/"), s(&["x/README.md"]));
    assert_eq!(dests(&["README.md"], "/x"), s(&["x"]));
    assert_eq!(dests(&["top/main.py"], "/srv/"), s(&["srv/main.py"]));
    assert_eq!(
        dests(&["app/lib"], "/opt/lib"),
        s(&["opt/lib", "opt/lib/link", "opt/lib/util.py"])
    );
    assert_eq!(
        dests(&["README.md", "docs/keep.md"], "/d/"),
        s(&["d/README.md", "d/keep.md"])
    );
    let err = plan_copy(&c.resolve(&s(&["README.md", "top"])).unwrap(), "/d", &o).unwrap_err();
    assert!(matches!(err, Error::DestNotDir { .. }), "{err}");
    let known_dir = CopyOptions {
        dest_is_dir: true,
        ..o.clone()
    };
    let plan = plan_copy(&c.resolve(&s(&["README.md"])).unwrap(), "/etc", &known_dir).unwrap();
    assert_eq!(plan[0].dest, b"etc/README.md");
    assert_eq!(resolve_dest("/app", "."), "/app/");
    assert_eq!(resolve_dest("/app", "sub/x"), "/app/sub/x");
    assert_eq!(resolve_dest("/app", "sub/"), "/app/sub/");
    assert_eq!(resolve_dest("", "x"), "/x");
    assert_eq!(resolve_dest("/app", "/abs/../y"), "/y");
}

#[test]
fn hash_ignores_mtime_and_sees_every_real_change() {
    let dir = sample();
    let r = dir.path();
    let c = ctx(r);
    let o = CopyOptions::default();
    let base = hash(&c, &["."], "/app/", &o);
    assert_eq!(base, hash(&c, &["."], "/app/", &o), "same tree, same hash");

    // Touch: mtime only.
    let f = fs::File::options()
        .append(true)
        .open(r.join("app/main.py"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    assert_eq!(
        base,
        hash(&c, &["."], "/app/", &o),
        "touch changed the hash"
    );

    // Ignored files do not count.
    write(r, "build/other.bin", "x");
    assert_eq!(
        base,
        hash(&c, &["."], "/app/", &o),
        "an ignored file changed the hash"
    );

    let mut seen = vec![base.digest.clone()];
    let mut expect_change = |what: &str, h: InputsHash| {
        assert!(!seen.contains(&h.digest), "{what} did not change the hash");
        seen.push(h.digest.clone());
        h
    };
    write(r, "app/main.py", "print('bye')\n");
    let h = expect_change("content", hash(&c, &["."], "/app/", &o));
    assert_ne!(h.files["app/main.py"], base.files["app/main.py"]);
    assert_eq!(h.files["app/lib/util.py"], base.files["app/lib/util.py"]);

    fs::set_permissions(r.join("app/main.py"), fs::Permissions::from_mode(0o755)).unwrap();
    expect_change("mode", hash(&c, &["."], "/app/", &o));

    fs::rename(r.join("app/main.py"), r.join("app/main2.py")).unwrap();
    let h = expect_change("rename", hash(&c, &["."], "/app/", &o));
    assert!(h.files.contains_key("app/main2.py") && !h.files.contains_key("app/main.py"));

    fs::remove_file(r.join("app/lib/link")).unwrap();
    symlink("other.py", r.join("app/lib/link")).unwrap();
    expect_change("link target", hash(&c, &["."], "/app/", &o));

    xattr::set(r.join("README.md"), "user.cairn", b"1").unwrap();
    expect_change("xattr", hash(&c, &["."], "/app/", &o));

    write(r, "docs/keep.md", "kept, changed\n");
    expect_change("an exception's content", hash(&c, &["."], "/app/", &o));

    let chmod = CopyOptions {
        chmod: Some(cairn::dockerfile::Chmod::octal(0o700)),
        ..o.clone()
    };
    expect_change("--chmod", hash(&c, &["."], "/app/", &chmod));
    let chown = CopyOptions {
        chown: Some((1000, 1000)),
        ..o.clone()
    };
    expect_change("--chown", hash(&c, &["."], "/app/", &chown));
    expect_change("dest", hash(&c, &["."], "/srv/", &o));
    fs::create_dir(r.join("app/newdir")).unwrap();
    expect_change("an empty dir", hash(&c, &["."], "/app/", &o));
}

#[test]
fn same_tree_elsewhere_hashes_the_same() {
    let a = sample();
    let b = sample(); // different path, inodes, mtimes
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(b.path(), "README.md", "readme\n");
    let o = CopyOptions::default();
    assert_eq!(
        hash(&ctx(a.path()), &["."], "/app/", &o),
        hash(&ctx(b.path()), &["."], "/app/", &o)
    );
}

#[test]
fn staging_writes_the_planned_tree() {
    let dir = sample();
    let r = dir.path();
    fs::hard_link(r.join("app/main.py"), r.join("app/main-hard.py")).unwrap();
    let c = ctx(r);
    let out = tempfile::tempdir().unwrap();
    let opts = CopyOptions {
        chmod: Some(cairn::dockerfile::Chmod::octal(0o750)),
        ..Default::default()
    };
    stage(
        &c.resolve(&s(&["app"])).unwrap(),
        "/srv/app/",
        &opts,
        out.path(),
    )
    .unwrap();
    let o = out.path();
    assert_eq!(
        fs::read_to_string(o.join("srv/app/main.py")).unwrap(),
        "print('hi')\n"
    );
    let mode = |p: &str| fs::symlink_metadata(o.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("srv"), 0o755, "dest parents are 0755");
    assert_eq!(mode("srv/app"), 0o750, "--chmod applies to the copied dir");
    assert_eq!(mode("srv/app/main.py"), 0o750);
    assert_eq!(mode("srv/app/empty"), 0o750);
    assert!(o.join("srv/app/empty").is_dir(), "empty dirs are kept");
    let link = fs::read_link(o.join("srv/app/lib/link")).unwrap();
    assert_eq!(link, Path::new("util.py"), "symlinks are copied as links");
    let ino = |p: &str| fs::metadata(o.join(p)).unwrap().ino();
    assert_eq!(
        ino("srv/app/main.py"),
        ino("srv/app/main-hard.py"),
        "hardlinks kept"
    );
    // Source mtimes are kept, as Docker does (they never reach the key).
    let src_mtime = fs::metadata(r.join("app/lib/util.py")).unwrap().mtime();
    assert_eq!(
        fs::metadata(o.join("srv/app/lib/util.py")).unwrap().mtime(),
        src_mtime
    );

    // A single file to a path without `/` becomes that path.
    let out2 = tempfile::tempdir().unwrap();
    stage(
        &c.resolve(&s(&["README.md"])).unwrap(),
        "/etc/motd",
        &CopyOptions::default(),
        out2.path(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(out2.path().join("etc/motd")).unwrap(),
        "readme\n"
    );
}

#[test]
fn copy_exclude_patterns_apply_below_each_source() {
    let dir = sample();
    let c = ctx(dir.path());
    let dests = |srcs: &[&str], exclude: &[&str]| -> Vec<String> {
        let opts = CopyOptions {
            exclude: s(exclude),
            ..Default::default()
        };
        let plan = plan_copy(&c.resolve(&s(srcs)).unwrap(), "/x/", &opts).unwrap();
        plan.iter()
            .map(|e| String::from_utf8(e.dest.clone()).unwrap())
            .collect()
    };
    assert_eq!(
        dests(&["app"], &["*.py", "empty"]),
        s(&["x", "x/lib", "x/lib/link", "x/lib/util.py"]),
        "*.py only matches at the top of the copied directory"
    );
    assert_eq!(
        dests(&["app"], &["**/*.py", "!lib/util.py", "empty"]),
        s(&["x", "x/lib", "x/lib/link", "x/lib/util.py"])
    );
    assert_eq!(dests(&["app"], &["lib"]), s(&["x", "x/empty", "x/main.py"]));
    assert_eq!(
        dests(&["*.md", "app/main.py"], &["*.md"]),
        s(&["x/main.py"])
    );
    let o = CopyOptions::default();
    let excl = CopyOptions {
        exclude: s(&["lib"]),
        ..Default::default()
    };
    let srcs = c.resolve(&s(&["app"])).unwrap();
    assert_ne!(
        hash_sources(&srcs, "/x/", &o).unwrap(),
        hash_sources(&srcs, "/x/", &excl).unwrap()
    );
    let bad = CopyOptions {
        exclude: s(&["[oops"]),
        ..Default::default()
    };
    let err = plan_copy(&srcs, "/x/", &bad).unwrap_err().to_string();
    assert!(err.starts_with("--exclude:1: invalid pattern"), "{err}");
}

#[test]
fn a_trailing_slash_demands_a_directory() {
    let dir = sample();
    let c = ctx(dir.path());
    let err = c.resolve(&s(&["README.md/"])).unwrap_err().to_string();
    assert!(err.contains("\"README.md/\": not a directory"), "{err}");
    assert!(c.resolve(&s(&["app/"])).unwrap()[0].is_dir());
}

#[test]
fn one_file_reached_by_two_names_is_two_files_not_a_hardlink() {
    let dir = sample();
    let c = ctx(dir.path());
    let srcs = c.resolve(&s(&["app/lib/link", "app/lib/util.py"])).unwrap();
    let plan = plan_copy(&srcs, "/x/", &CopyOptions::default()).unwrap();
    let kinds: Vec<_> = plan
        .iter()
        .map(|e| (e.dest.clone(), e.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (b"x/link".to_vec(), EntryKind::File { size: 6 }),
            (b"x/util.py".to_vec(), EntryKind::File { size: 6 }),
        ]
    );
}

#[test]
fn plans_record_kinds_owners_and_sockets() {
    let dir = sample();
    let r = dir.path();
    let _sock = std::os::unix::net::UnixListener::bind(r.join("app/daemon.sock")).unwrap();
    let c = ctx(r);
    let plan = plan_copy(
        &c.resolve(&s(&["app"])).unwrap(),
        "/a/",
        &CopyOptions::default(),
    )
    .unwrap();
    // BuildKit's context transfer delivers a socket as an empty file (see buildkit_compat).
    let sock = plan.iter().find(|e| e.dest == b"a/daemon.sock").unwrap();
    assert_eq!(sock.kind, EntryKind::Socket);
    assert!(
        plan.iter().all(|e| (e.uid, e.gid) == (0, 0)),
        "context files become 0:0"
    );
    let link = plan.iter().find(|e| e.dest == b"a/lib/link").unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: b"util.py".to_vec()
        }
    );
}

#[test]
fn source_roots_keep_owners_and_have_no_ignore_rules() {
    let dir = sample();
    let r = dir.path();
    nix::unistd::chown(&r.join("secret.env"), Some(1234.into()), Some(5678.into())).ok();
    let srcs = resolve_in(r, &s(&["secret.env", "build"])).unwrap();
    let plan = plan_copy(&srcs, "/x/", &CopyOptions::default()).unwrap();
    let secret = plan.iter().find(|e| e.dest == b"x/secret.env").unwrap();
    let md = fs::metadata(r.join("secret.env")).unwrap();
    assert_eq!((secret.uid, secret.gid), (md.uid(), md.gid()));
    assert!(plan.iter().any(|e| e.dest == b"x/out.bin"));
    let reset = SourceRoot::new(r)
        .reset_owners()
        .resolve(&s(&["secret.env"]))
        .unwrap();
    let plan = plan_copy(&reset, "/x", &CopyOptions::default()).unwrap();
    assert_eq!((plan[0].uid, plan[0].gid), (0, 0));
    let err = resolve_in(r, &s(&["missing"])).unwrap_err().to_string();
    assert!(err.contains("\"missing\": not found in /"), "{err}");
}

#[test]
fn non_utf8_names_are_hashed_and_staged() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(dir.path().join(name), "latin-1").unwrap();
    let c = Context::open(dir.path(), IgnoreMatcher::empty()).unwrap();
    let srcs = c.resolve(&s(&["*.txt"])).unwrap();
    let h = hash_sources(&srcs, "/d/", &CopyOptions::default()).unwrap();
    assert_eq!(h.files.len(), 1);
    let out = tempfile::tempdir().unwrap();
    stage(&srcs, "/d/", &CopyOptions::default(), out.path()).unwrap();
    assert!(out.path().join("d").join(name).is_file());
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    if nix::unistd::geteuid().is_root() {
        // root reads anything; a directory that vanishes mid-walk stands in.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d/f", "x");
        let c = Context::open(dir.path(), IgnoreMatcher::empty()).unwrap();
        let srcs = c.resolve(&s(&["d/f"])).unwrap();
        fs::remove_file(dir.path().join("d/f")).unwrap();
        let err = hash_sources(&srcs, "/x", &CopyOptions::default()).unwrap_err();
        assert!(err.to_string().contains("d/f"), "{err}");
        return;
    }
    let dir = sample();
    fs::set_permissions(
        dir.path().join("README.md"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let c = ctx(dir.path());
    let srcs = c.resolve(&s(&["."])).unwrap();
    let err = hash_sources(&srcs, "/", &CopyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("README.md"), "{err}");
}

#[test]
fn twenty_thousand_files_hash_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in 0..100 {
        let sub = r.join(format!("d{d:03}"));
        fs::create_dir(&sub).unwrap();
        for f in 0..200 {
            fs::write(sub.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    let c = Context::open(r, IgnoreMatcher::parse("d099\n").unwrap()).unwrap();
    let t = std::time::Instant::now();
    let h = hash(&c, &["."], "/src/", &CopyOptions::default());
    eprintln!("hashed 20,000 files in {:?}", t.elapsed());
    // 99 visible dirs of 200 files each, the dirs, and the context root as /src itself.
    assert_eq!(h.files.len(), 99 * 201 + 1);
    fs::write(r.join("d050/f100"), "changed").unwrap();
    let h2 = hash(&c, &["."], "/src/", &CopyOptions::default());
    assert_ne!(h.digest, h2.digest);
    let changed: Vec<&String> = h
        .files
        .keys()
        .filter(|k| h.files[*k] != h2.files[*k])
        .collect();
    assert_eq!(changed, vec!["d050/f100"]);
}

#[test]
fn staging_refuses_content_that_changed_after_hashing() {
    let dir = sample();
    let c = ctx(dir.path());
    let srcs = c.resolve(&s(&["app"])).unwrap();
    let o = CopyOptions::default();
    let keyed = hash_sources(&srcs, "/a/", &o).unwrap();
    let out = tempfile::tempdir().unwrap();
    stage_checked(&srcs, "/a/", &o, out.path(), &keyed).unwrap();
    write(dir.path(), "app/lib/util.py", "X = 2\n");
    let out = tempfile::tempdir().unwrap();
    let err = stage_checked(&srcs, "/a/", &o, out.path(), &keyed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "context file app/lib/util.py changed during the build; run it again"
    );
}

#[test]
fn symlinks_resolve_inside_the_root_and_loops_stop() {
    let dir = sample();
    let r = dir.path();
    symlink("/app/lib", r.join("abs")).unwrap(); // absolute: from the context root
    symlink("../../../../README.md", r.join("app/up")).unwrap(); // `..` stops at the root
    symlink("loop2", r.join("loop1")).unwrap();
    symlink("loop1", r.join("loop2")).unwrap();
    let c = ctx(r);
    assert_eq!(
        c.resolve(&s(&["abs/util.py"])).unwrap()[0].rel_path(),
        "app/lib/util.py"
    );
    assert_eq!(
        c.resolve(&s(&["app/up"])).unwrap()[0].rel_path(),
        "README.md"
    );
    let err = c.resolve(&s(&["loop1"])).unwrap_err();
    assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
    // Inside a copied directory a symlink stays a link, even a dangling one.
    symlink("nowhere", r.join("app/dangling")).unwrap();
    let plan = plan_copy(
        &c.resolve(&s(&["app"])).unwrap(),
        "/a/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(plan.iter().any(|e| e.dest == b"a/dangling"));
}

#[test]
fn heredoc_bodies_hash_the_same_whatever_the_umask_or_user() {
    let docs = vec![("run.sh".to_string(), "#!/bin/sh\necho hi\n".to_string())];
    let hash_with_umask = |mask: u32| {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        let srcs = heredoc_sources(dir.path(), &docs);
        nix::sys::stat::umask(old);
        let srcs = srcs.unwrap();
        let plan = plan_copy(&srcs, "/usr/local/bin/run.sh", &CopyOptions::default()).unwrap();
        assert_eq!((plan[0].mode, plan[0].uid, plan[0].gid), (0o664, 0, 0));
        hash_sources(&srcs, "/usr/local/bin/run.sh", &CopyOptions::default()).unwrap()
    };
    assert_eq!(hash_with_umask(0o022), hash_with_umask(0o077));
    let dir = tempfile::tempdir().unwrap();
    let bad = vec![("../x".to_string(), String::new())];
    assert!(heredoc_sources(dir.path(), &bad).is_err());
}

/// Hashes `.` to `/app/` through `cache`.
fn hash_cached(c: &Context, cache: &mut cairn::context::StatCache) -> InputsHash {
    let srcs = c.resolve(&s(&["."])).unwrap();
    cairn::context::hash_sources_cached(&srcs, "/app/", &CopyOptions::default(), cache).unwrap()
}

/// A stat cache whose clock runs an hour ahead, so files written by the test count as
/// settled (their ctime cannot be aged any other way).
fn settled_cache(bytes: &[u8]) -> cairn::context::StatCache {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    cairn::context::StatCache::from_bytes(bytes).with_clock(later)
}

#[test]
fn stat_cache_answers_for_unchanged_files_and_the_key_stays_content_only() {
    let dir = sample();
    let c = ctx(dir.path());
    let plain = hash(&c, &["."], "/app/", &CopyOptions::default());
    let mut cache = settled_cache(b"");
    assert_eq!(hash_cached(&c, &mut cache), plain);
    assert_eq!(cache.hits, 0);
    assert!(cache.is_changed() && cache.len() == 4, "{}", cache.len());
    // Saved and loaded again: every file is answered from the cache, same key.
    let mut warm = settled_cache(&cache.to_bytes());
    assert_eq!(hash_cached(&c, &mut warm), plain);
    assert_eq!((warm.hits, warm.misses), (4, 0));
    assert!(!warm.is_changed(), "nothing new to save");

    // The cache is really consulted: a lying entry for README.md's exact stat data moves
    // the key (which is why an entry is only ever written from a full read).
    let readme = dir.path().join("README.md");
    let mut lying = settled_cache(b"");
    lying.begin();
    lying.put(
        &fs::canonicalize(&readme).unwrap(),
        cairn::context::StatKey::of(&fs::symlink_metadata(&readme).unwrap()),
        cairn::Digest::of_bytes(b"not the content"),
        &Default::default(),
    );
    assert_ne!(hash_cached(&c, &mut lying).digest, plain.digest);
}

#[test]
fn stat_cache_rehashes_a_racily_clean_file() {
    // A file hashed within the racy margin of its last change is not recorded, so a second
    // change in the same timestamp tick (same size, same mtime, same ctime) is still read.
    let dir = sample();
    let c = ctx(dir.path());
    write(dir.path(), "app/main.py", "print('A')\n");
    let mut cache = cairn::context::StatCache::default();
    let first = hash_cached(&c, &mut cache);
    let main = fs::canonicalize(dir.path().join("app/main.py")).unwrap();
    let stat = fs::symlink_metadata(&main).unwrap();
    assert!(
        cache
            .get(&main, &cairn::context::StatKey::of(&stat))
            .is_none(),
        "a file changed just now was recorded"
    );
    write(dir.path(), "app/main.py", "print('B')\n");
    // Put the old mtime back too: only the content differs from what was hashed.
    let f = fs::File::options().write(true).open(&main).unwrap();
    f.set_modified(stat.modified().unwrap()).unwrap();
    let mut again = cairn::context::StatCache::from_bytes(&cache.to_bytes());
    let second = hash_cached(&c, &mut again);
    assert_ne!(first.digest, second.digest);
    assert_eq!(second, hash(&c, &["."], "/app/", &CopyOptions::default()));
}

#[test]
fn stat_cache_catches_a_change_restored_to_the_old_size_and_mtime() {
    let dir = sample();
    let c = ctx(dir.path());
    let mut cache = settled_cache(b"");
    let before = hash_cached(&c, &mut cache);
    let main = dir.path().join("app/main.py");
    let md = fs::symlink_metadata(&main).unwrap();
    // Same length, other bytes, and `touch -d` puts the mtime back to the nanosecond.
    write(dir.path(), "app/main.py", "print('HI')\n");
    assert_eq!(fs::metadata(&main).unwrap().len(), md.len());
    let stamp = format!("@{}.{:09}", md.mtime(), md.mtime_nsec());
    let out = std::process::Command::new("touch")
        .args(["-d", &stamp])
        .arg(&main)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let now = fs::symlink_metadata(&main).unwrap();
    assert_eq!(
        (now.mtime(), now.mtime_nsec(), now.len()),
        (md.mtime(), md.mtime_nsec(), md.len())
    );
    let mut warm = settled_cache(&cache.to_bytes());
    let after = hash_cached(&c, &mut warm);
    assert_ne!(after.digest, before.digest, "the changed file was not read");
    assert_eq!(after, hash(&c, &["."], "/app/", &CopyOptions::default()));
    assert_eq!(warm.misses, 1);
}

#[test]
fn stat_cache_catches_an_xattr_change_on_a_settled_file() {
    // The plan takes a settled file's xattrs from the cache; setting one moves the ctime, so
    // the file is listed (and read) again and the key moves.
    let dir = sample();
    let c = ctx(dir.path());
    let mut cache = settled_cache(b"");
    let before = hash_cached(&c, &mut cache);
    xattr::set(dir.path().join("app/main.py"), "user.cairn.test", b"1").unwrap();
    let mut warm = settled_cache(&cache.to_bytes());
    let after = hash_cached(&c, &mut warm);
    assert_ne!(after.digest, before.digest);
    assert_eq!(after, hash(&c, &["."], "/app/", &CopyOptions::default()));
    assert_eq!(warm.misses, 1);
}

#[test]
fn stat_cache_rereads_a_touched_file_and_the_key_does_not_move() {
    // `touch` moves mtime and ctime but not the bytes: the file is read again (its stat
    // data no longer matches), the key stays, and the new stat data is what is remembered.
    let dir = sample();
    let c = ctx(dir.path());
    let mut cache = settled_cache(b"");
    let before = hash_cached(&c, &mut cache);
    let main = dir.path().join("app/main.py");
    let old = fs::symlink_metadata(&main).unwrap().modified().unwrap();
    let f = fs::File::options().write(true).open(&main).unwrap();
    f.set_modified(old - std::time::Duration::from_secs(60))
        .unwrap();
    let mut warm = settled_cache(&cache.to_bytes());
    assert_eq!(hash_cached(&c, &mut warm), before);
    assert_eq!(warm.misses, 1);
    assert!(warm.is_changed());
    let mut again = settled_cache(&warm.to_bytes());
    assert_eq!(hash_cached(&c, &mut again), before);
    assert_eq!((again.hits, again.misses), (4, 0));
}

#[test]
fn a_directory_plan_is_in_destination_byte_order_whatever_the_walk_order() {
    // A walk visits `a/` then its children then `a.txt`; the plan (and so the key and the
    // layer) is sorted by path bytes, where `a.txt` < `a/b` ('.' < '/').
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for f in ["a/b", "a/c/d", "a.txt", "a-b", "a0", "b"] {
        write(r, f, f);
    }
    let c = Context::open(r, IgnoreMatcher::empty()).unwrap();
    let srcs = c.resolve(&s(&["."])).unwrap();
    let plan = plan_copy(&srcs, "/x/", &CopyOptions::default()).unwrap();
    let dests: Vec<String> = plan
        .iter()
        .map(|e| String::from_utf8(e.dest.clone()).unwrap())
        .collect();
    assert_eq!(
        dests,
        s(&["x", "x/a", "x/a-b", "x/a.txt", "x/a/b", "x/a/c", "x/a/c/d", "x/a0", "x/b"])
    );
    // Two sources copied to one place: still one sorted list, the later file winning.
    write(r, "other/a.txt", "new");
    let srcs = c.resolve(&s(&[".", "other/"])).unwrap();
    let plan = plan_copy(&srcs, "/x/", &CopyOptions::default()).unwrap();
    let mut sorted = plan.clone();
    sorted.sort_by(|a, b| a.dest.cmp(&b.dest));
    assert_eq!(plan, sorted);
    let txt: Vec<_> = plan.iter().filter(|e| e.dest == b"x/a.txt").collect();
    assert_eq!(txt.len(), 1);
    assert!(
        txt[0].source.ends_with("other/a.txt"),
        "{:?}",
        txt[0].source
    );
}

#[test]
fn a_wide_tree_is_planned_once_per_path_with_the_ignore_exceptions_kept() {
    // Enough directories that several walk threads take part (each lists whole
    // directories): every path is planned once, in byte order, and an excluded directory
    // comes back only for an exception found below it.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let mut want = vec!["x".to_string()];
    for d in 0..40 {
        let top = format!("d{d:02}");
        want.push(format!("x/{top}"));
        want.push(format!("x/{top}/sub"));
        for f in 0..5 {
            write(r, &format!("{top}/f{f}"), "a");
            write(r, &format!("{top}/sub/g{f}"), "b");
            want.push(format!("x/{top}/f{f}"));
            want.push(format!("x/{top}/sub/g{f}"));
        }
    }
    write(r, "skip/keep.txt", "k");
    write(r, "skip/deep/x", "no");
    write(r, "gone/deep/y", "no");
    want.extend(s(&["x/skip", "x/skip/keep.txt"]));
    want.sort();
    let ignore = "skip\n!skip/keep.txt\ngone\n!gone/none-such\n";
    let c = Context::open(r, IgnoreMatcher::parse(ignore).unwrap()).unwrap();
    let srcs = c.resolve(&s(&["."])).unwrap();
    let o = CopyOptions::default();
    // A clock an hour ahead: the files just written count as settled, so the cache keeps
    // them and later plans take the threaded walk (a warm cache's).
    let mut cache = cairn::context::StatCache::default()
        .with_clock(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    let serial = hash_sources(&srcs, "/x/", &o).unwrap();
    for _ in 0..3 {
        let plan = cairn::context::plan_copy_cached(&srcs, "/x/", &o, Some(&cache)).unwrap();
        let dests: Vec<String> = plan
            .iter()
            .map(|e| String::from_utf8(e.dest.clone()).unwrap())
            .collect();
        assert_eq!(dests, want);
        let cached = cairn::context::hash_sources_cached(&srcs, "/x/", &o, &mut cache).unwrap();
        assert_eq!(cached, serial);
        assert!(!cache.is_empty());
    }
}
