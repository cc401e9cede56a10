//! The store's promises: atomic blob writes that verify before publishing, temp files that
//! never outlive their owner, locks that die with their holder, cache entries that never
//! lie, and verify/prune that find and remove exactly what they should.

mod common;

use cairn::cache::CacheKey;
use cairn::store::maintain::{self, PruneOptions};
use cairn::store::{CacheEntry, Store};
use cairn::Digest;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn tmp_entries(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn age(path: &Path, by: Duration) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

fn key(s: &str) -> CacheKey {
    CacheKey(Digest::of_bytes(s.as_bytes()))
}

#[test]
fn blob_writer_publishes_only_verified_content() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    assert_eq!(w.written(), 11);
    let want = Digest::of_bytes(b"hello world");
    assert!(!store.has_blob(&want), "visible before commit");
    let (d, n) = w.commit(Some(&want)).unwrap();
    assert_eq!((d.clone(), n), (want.clone(), 11));
    assert_eq!(store.read_blob(&d).unwrap(), b"hello world");
    assert!(tmp_entries(dir.path()).is_empty());

    // A mismatch is an error and leaves neither a blob nor a temp file.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"not what you asked for").unwrap();
    let other = Digest::of_bytes(b"something else");
    let err = w.commit(Some(&other)).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(!store.has_blob(&other));
    assert!(!store.has_blob(&Digest::of_bytes(b"not what you asked for")));
    assert!(tmp_entries(dir.path()).is_empty());

    // Dropping an uncommitted writer removes its temp file.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    assert_eq!(tmp_entries(dir.path()).len(), 1);
    drop(w);
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn read_blob_refuses_corrupt_content() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_bytes(b"{\"a\":1}").unwrap();
    fs::write(store.blob_path(&d), b"{\"a\":2}").unwrap();
    let err = store.read_blob(&d).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    let missing = Digest::of_bytes(b"nope");
    assert!(store
        .read_blob(&missing)
        .unwrap_err()
        .to_string()
        .contains("not in the store"));
}

#[test]
fn cache_entries_never_lie() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let state = store.put_bytes(b"state").unwrap();
    let layer = store.put_bytes(b"layer").unwrap();
    let absent = Digest::of_bytes(b"absent");
    let entry = |refs: Vec<Digest>| CacheEntry {
        state: state.clone(),
        refs,
        created: "2026-01-01T00:00:00Z".into(),
    };
    // Refusing to index a missing blob.
    let err = store
        .cache_put(&key("a"), &entry(vec![absent.clone()]))
        .unwrap_err();
    assert!(err.to_string().contains("not in the store"), "{err}");
    assert_eq!(store.cache_get(&key("a")).unwrap(), None);

    store
        .cache_put(&key("b"), &entry(vec![layer.clone()]))
        .unwrap();
    assert_eq!(
        store.cache_get(&key("b")).unwrap(),
        Some(entry(vec![layer.clone()]))
    );
    // A referenced blob disappears: the entry is a miss, not a lie.
    fs::remove_file(store.blob_path(&layer)).unwrap();
    assert_eq!(store.cache_get(&key("b")).unwrap(), None);
}

#[test]
fn tags_and_records_round_trip() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let r = "127.0.0.1:5000/base:1";
    assert!(store.tag_get(r).unwrap().is_none());
    assert!(store.tag_set(r, &Digest::of_bytes(b"missing")).is_err());
    let m = store.put_bytes(b"{}").unwrap();
    store.tag_set(r, &m).unwrap();
    let t = store.tag_get(r).unwrap().unwrap();
    assert_eq!(t.digest, m);
    assert!(
        humantime::parse_rfc3339(&t.resolved_at).is_ok(),
        "{}",
        t.resolved_at
    );
    assert_eq!(store.tag_list().unwrap()[0].0, r);

    assert_eq!(store.record_get("last/../x").unwrap(), None);
    store.record_put("last/../x", b"one").unwrap();
    store.record_put("last/../x", b"two").unwrap();
    assert_eq!(
        store.record_get("last/../x").unwrap().as_deref(),
        Some(&b"two"[..])
    );
}

/// A no-op build writes nothing durable: a record put again (if changed) with the bytes it
/// holds is left as it is (same inode, nothing to fsync), while new bytes replace it; a tag
/// resolved again to the same digest, or to a new one, is still written.
#[test]
fn records_holding_the_same_bytes_are_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    store.record_put_if_changed("last-build", b"one").unwrap();
    let path = dir.path().join("records/last-build");
    let first = ino(&path);
    store.record_put_if_changed("last-build", b"one").unwrap();
    assert_eq!(ino(&path), first, "the same bytes were written again");
    store.record_put_if_changed("last-build", b"two").unwrap();
    assert_ne!(ino(&path), first);
    assert_eq!(fs::read(&path).unwrap(), b"two");

    let r = "127.0.0.1:5000/base:1";
    let (m1, m2) = (
        store.put_bytes(b"{}").unwrap(),
        store.put_bytes(b"[]").unwrap(),
    );
    store.tag_set(r, &m1).unwrap();
    store.tag_set(r, &m1).unwrap();
    assert_eq!(store.tag_get(r).unwrap().unwrap().digest, m1);
    store.tag_set(r, &m2).unwrap();
    assert_eq!(store.tag_get(r).unwrap().unwrap().digest, m2);
    assert!(
        tmp_entries(dir.path()).is_empty(),
        "{:?}",
        tmp_entries(dir.path())
    );
}

#[test]
fn stale_temps_removed_only_when_their_owner_is_gone() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    // A live temp dir of this process survives a second open.
    let live = store.temp_dir("unpack").unwrap();
    // A temp file of a process that died: its owner file exists but nobody holds its lock.
    fs::write(dir.path().join("locks/owners/deadbeef0001"), b"").unwrap();
    fs::write(dir.path().join("tmp/deadbeef0001.blob.x1"), b"partial").unwrap();
    fs::create_dir(dir.path().join("tmp/deadbeef0001.unpack.x2")).unwrap();
    // One whose owner file is gone entirely.
    fs::write(dir.path().join("tmp/cafecafe0002.write.x3"), b"partial").unwrap();
    let again = Store::open(dir.path()).unwrap();
    let left = tmp_entries(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(live.path().exists());
    assert!(!dir.path().join("locks/owners/deadbeef0001").exists());
    drop(again);
}

#[test]
fn temp_of_a_killed_process_is_cleaned() {
    // A real other process holds an owner lock, creates a temp file and is killed.
    let dir = common::tempdir();
    let owners = dir.path().join("locks/owners");
    fs::create_dir_all(&owners).unwrap();
    fs::create_dir_all(dir.path().join("tmp")).unwrap();
    fs::write(dir.path().join("tmp/victim0003.blob.x"), b"partial").unwrap();
    let mut child = std::process::Command::new("flock")
        .arg("-o")
        .arg(owners.join("victim0003"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux is needed");
    let lockfile = owners.join("victim0003");
    while !lockfile.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    Store::open(dir.path()).unwrap();
    assert_eq!(
        tmp_entries(dir.path()).len(),
        1,
        "a live owner's temp was removed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    Store::open(dir.path()).unwrap();
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn locks_exclude_and_die_with_their_holder() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let held = store.lock("build").unwrap();
    assert!(store.try_lock("build").unwrap().is_none());
    drop(held);
    assert!(store.try_lock("build").unwrap().is_some());

    let other = OtherHolder::lock(&dir.path().join("locks/pull"));
    assert!(store.try_lock("pull").unwrap().is_none());
    other.end();
    assert!(store.try_lock("pull").unwrap().is_some());
}

#[test]
fn concurrent_writers_of_one_blob_both_succeed() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let data = vec![7u8; 3 << 20];
    let want = Digest::of_bytes(&data);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut w = store.blob_writer().unwrap();
                for chunk in data.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                w.commit(Some(&want)).unwrap();
            });
        }
    });
    assert_eq!(store.read_blob(&want).unwrap().len(), data.len());
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn verify_finds_and_repairs_corruption() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let good = store.put_bytes(b"good").unwrap();
    let bad = store.put_bytes(b"bad").unwrap();
    store
        .cache_put(
            &key("k"),
            &CacheEntry {
                state: good.clone(),
                refs: vec![bad.clone()],
                created: String::new(),
            },
        )
        .unwrap();
    assert!(maintain::verify(&store, false).unwrap().is_clean());
    fs::write(store.blob_path(&bad), b"flipped").unwrap();
    let r = maintain::verify(&store, false).unwrap();
    assert_eq!(r.checked, 2);
    assert_eq!(r.corrupt.len(), 1);
    assert_eq!(r.corrupt[0].0, bad);
    let r = maintain::verify(&store, true).unwrap();
    assert!(r.repaired);
    assert!(!store.has_blob(&bad));
    assert_eq!(store.cache_get(&key("k")).unwrap(), None);
    let r = maintain::verify(&store, false).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert!(store.has_blob(&good));
}

#[test]
fn prune_keeps_what_tags_and_entries_reach() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let layer = store.put_bytes(b"layer bytes").unwrap();
    let diff = Digest::of_bytes(b"diff");
    let config = store
        .put_bytes(format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#).as_bytes())
        .unwrap();
    let manifest = store
        .put_bytes(
            format!(r#"{{"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
    store.tag_set("example.com/a:1", &manifest).unwrap();
    fs::create_dir_all(store.layer_dir(&diff)).unwrap();
    let state = store.put_bytes(b"state").unwrap();
    store
        .cache_put(
            &key("k"),
            &CacheEntry {
                state: state.clone(),
                refs: vec![],
                created: String::new(),
            },
        )
        .unwrap();
    let orphan_old = store.put_bytes(b"orphan old").unwrap();
    let orphan_new = store.put_bytes(b"orphan new").unwrap();
    fs::create_dir_all(store.layer_dir(&Digest::of_bytes(b"old layer dir"))).unwrap();
    let old = Duration::from_secs(3600);
    for d in [&layer, &config, &manifest, &state, &orphan_old] {
        age(&store.blob_path(d), old);
    }
    let old_dir = store.layer_dir(&Digest::of_bytes(b"old layer dir"));
    let f = fs::File::open(&old_dir).unwrap();
    f.set_modified(SystemTime::now() - old).unwrap();

    let r = maintain::prune(&store, &PruneOptions::default()).unwrap();
    assert_eq!((r.blobs, r.layers, r.entries), (1, 1, 0), "{r:?}");
    assert!(!store.has_blob(&orphan_old));
    for d in [&layer, &config, &manifest, &state, &orphan_new] {
        assert!(store.has_blob(d), "pruned {d}");
    }
    assert!(store.layer_dir(&diff).exists());
    assert!(!old_dir.exists());

    // An entry unused for longer than --keep-duration goes, and so does what only it kept.
    age(
        &dir.path().join(format!("cache/{}.json", key("k").hex())),
        old,
    );
    let opts = PruneOptions {
        keep_duration: Some(Duration::from_secs(60)),
        ..PruneOptions::default()
    };
    let r = maintain::prune(&store, &opts).unwrap();
    assert_eq!((r.entries, r.blobs), (1, 1), "{r:?}");
    assert!(!store.has_blob(&state));
    assert!(store.has_blob(&manifest));

    let r = maintain::prune(
        &store,
        &PruneOptions {
            all: true,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.tags, 1);
    assert!(maintain::blobs(&store).unwrap().is_empty());
}

#[test]
fn cache_commands_report_and_exit_as_documented() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_bytes(b"{\"some\":\"config\"}").unwrap();
    store.tag_set("example.com/app:1", &d).unwrap();
    let du = common::run_ok(common::cairn(dir.path()).args(["cache", "du"]));
    assert!(du.lines().next().unwrap().starts_with("blobs"), "{du}");
    let ls = common::run_ok(common::cairn(dir.path()).args(["cache", "ls"]));
    assert!(
        ls.contains("example.com/app:1") && ls.contains(d.as_str()),
        "{ls}"
    );

    let bad =
        common::run(common::cairn(dir.path()).args(["cache", "prune", "--keep-duration", "soon"]));
    assert_eq!(bad.status.code(), Some(2));

    // A flipped blob: verify fails with the store's exit code, --repair fixes it.
    fs::write(store.blob_path(&d), b"{\"some\":\"other\"}").unwrap();
    let out = common::run(common::cairn(dir.path()).args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("corrupt blob {d}")), "{text}");
    let fixed = common::run_ok(common::cairn(dir.path()).args(["cache", "verify", "--repair"]));
    assert!(fixed.contains("removed 1 corrupt blobs"), "{fixed}");
    common::run_ok(common::cairn(dir.path()).args(["cache", "verify"]));
    let pruned =
        common::run_ok(common::cairn(dir.path()).args(["cache", "prune", "--keep-duration", "7d"]));
    assert!(pruned.starts_with("removed"), "{pruned}");

    // --max-size takes Docker-style sizes; a tag is never evicted, and that is said.
    let bad = common::run(common::cairn(dir.path()).args(["cache", "prune", "--max-size", "lots"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-size"));
    let d = store.put_bytes(b"{\"some\":\"config\"}").unwrap();
    store.tag_set("example.com/app:1", &d).unwrap();
    let out = common::run(common::cairn(dir.path()).args(["cache", "prune", "--max-size", "0B"]));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than --max-size"), "{err}");
    assert!(store.has_blob(&d));
    common::run_ok(common::cairn(dir.path()).args(["cache", "prune", "--max-size", "20GB"]));
}

/// A blob of `n` bytes that belong to `tag` alone (so sizes add up exactly).
fn unique(store: &Store, tag: &str, n: usize) -> Digest {
    let mut bytes = tag.as_bytes().to_vec();
    bytes.resize(n, b'.');
    store.put_bytes(&bytes).unwrap()
}

/// A cache entry whose state (a small JSON blob) reaches one 100 kB layer blob of its own,
/// last used `ago`.
fn entry_with_layer(store: &Store, name: &str, ago: Duration) -> (Digest, Digest) {
    let layer = unique(store, name, 100_000);
    let state = store
        .put_bytes(format!(r#"{{"name":"{name}","layer":"{layer}"}}"#).as_bytes())
        .unwrap();
    store
        .cache_put(
            &key(name),
            &CacheEntry {
                state: state.clone(),
                refs: vec![layer.clone()],
                created: String::new(),
            },
        )
        .unwrap();
    age(
        &store.root().join(format!("cache/{}.json", key(name).hex())),
        ago,
    );
    (state, layer)
}

fn capped(max: u64) -> PruneOptions {
    PruneOptions {
        max_size: Some(max),
        ..PruneOptions::default()
    }
}

#[test]
fn size_cap_evicts_least_recently_used_never_tagged_or_leased() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    // A tagged image: a manifest reaching a 100 kB layer.
    let base_layer = unique(&store, "base", 100_000);
    let manifest = store
        .put_bytes(format!(r#"{{"layers":[{{"digest":"{base_layer}"}}]}}"#).as_bytes())
        .unwrap();
    store.tag_set("example.com/base:1", &manifest).unwrap();
    let (old_state, old_layer) = entry_with_layer(&store, "old", Duration::from_secs(3000));
    let (mid_state, mid_layer) = entry_with_layer(&store, "mid", Duration::from_secs(2000));
    let (new_state, new_layer) = entry_with_layer(&store, "new", Duration::from_secs(1000));
    // A running build's lease holds a blob nothing indexes yet.
    let build = store.leased();
    let held = unique(&build, "held by a running build", 100_000);
    // Room for the tag, the lease and one entry (small JSON blobs fit in the slack).
    let r = maintain::prune(&store, &capped(350_000)).unwrap();
    assert_eq!((r.entries, r.blobs), (2, 4), "{r:?}");
    assert!(!r.over_cap);
    assert!(r.kept_bytes <= 350_000, "{r:?}");
    for gone in [&old_state, &old_layer, &mid_state, &mid_layer] {
        assert!(!store.has_blob(gone), "kept {gone}");
    }
    for kept in [&new_state, &new_layer, &manifest, &base_layer, &held] {
        assert!(store.has_blob(kept), "evicted {kept}");
    }
    assert_eq!(store.cache_get(&key("old")).unwrap(), None);
    assert!(store.cache_get(&key("new")).unwrap().is_some());

    // A cap below what tags and leases hold: every entry goes, they stay, and it says so.
    let r = maintain::prune(&store, &capped(0)).unwrap();
    assert!(r.over_cap, "{r:?}");
    assert_eq!(r.entries, 1);
    assert!(store.has_blob(&held) && store.has_blob(&base_layer));
    assert_eq!(store.tag_list().unwrap().len(), 1);

    // The lease ends: what it held goes; a dead process's pin file counts for nothing.
    drop(build);
    fs::write(
        dir.path().join("locks/pins/deadbeef0009.0"),
        format!("{manifest}\n"),
    )
    .unwrap();
    let r = maintain::prune(&store, &capped(0)).unwrap();
    assert!(!store.has_blob(&held), "{r:?}");
    assert!(store.has_blob(&manifest) && store.has_blob(&base_layer));
    assert!(!dir.path().join("locks/pins/deadbeef0009.0").exists());
}

#[test]
fn a_lease_in_another_process_protects_its_blobs() {
    // A pin file of a live process (flock(1) holds its owner lock) is honoured; once the
    // process is gone it is not.
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let held = unique(&store, "held elsewhere", 1000);
    let owner = dir.path().join("locks/owners/otherproc0001");
    fs::write(
        dir.path().join("locks/pins/otherproc0001.0"),
        format!("{held}\n"),
    )
    .unwrap();
    let other = OtherHolder::lock(&owner);
    maintain::prune(&store, &capped(0)).unwrap();
    assert!(store.has_blob(&held), "a live process's pin was ignored");
    other.end();
    maintain::prune(&store, &capped(0)).unwrap();
    assert!(!store.has_blob(&held), "a dead process's pin was honoured");
}

/// Another process holding the lock on a file: flock(1) running `cat` (which ends when
/// its stdin closes, so nothing outlives the test).
struct OtherHolder {
    child: std::process::Child,
    path: PathBuf,
}

impl OtherHolder {
    /// Starts the holder and waits until it holds the lock.
    fn lock(path: &Path) -> Self {
        let child = std::process::Command::new("flock")
            .arg("-o")
            .arg(path)
            .arg("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux is needed");
        let deadline = SystemTime::now() + Duration::from_secs(60);
        while lockable(path) {
            assert!(SystemTime::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        OtherHolder {
            child,
            path: path.to_path_buf(),
        }
    }

    /// Kills the holder and waits until its lock is free: flock(1) forks `cat` and only
    /// then closes that child's copy of the locked descriptor, so on a loaded machine the
    /// lock can outlive flock(1) by a moment. The holder is gone once nothing holds it.
    fn end(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        drop(self.child.stdin.take());
        let deadline = SystemTime::now() + Duration::from_secs(60);
        while !lockable(&self.path) {
            assert!(SystemTime::now() < deadline, "the lock outlived flock(1)");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `path` could be locked now, by another open file (released at once).
fn lockable(path: &Path) -> bool {
    std::process::Command::new("flock")
        .args(["-n", "-x"])
        .arg(path)
        .arg("true")
        .status()
        .expect("flock(1) from util-linux is needed")
        .success()
}

#[test]
fn idle_lock_files_are_pruned_and_held_ones_kept() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let held = store.lock("step-held").unwrap();
    drop(store.lock("unpack-idle").unwrap());
    drop(store.lock("blob-abc").unwrap());
    let r = maintain::prune(&store, &PruneOptions::default()).unwrap();
    assert_eq!(r.locks, 2, "{r:?}");
    assert!(dir.path().join("locks/step-held").exists());
    assert!(!dir.path().join("locks/unpack-idle").exists());
    // The holder still excludes others, and a pruned name locks again.
    assert!(store.try_lock("step-held").unwrap().is_none());
    drop(held);
    let again = store.lock("unpack-idle").unwrap();
    assert!(store.try_lock("unpack-idle").unwrap().is_none());
    drop(again);
}

#[test]
fn a_waiter_on_a_pruned_lock_file_does_not_share_the_lock() {
    // Thread A holds `x`; thread B waits on the same file; A unlinks the file and releases
    // it (as prune does), and a newcomer C locks a fresh `x`. B must not hold `x` while C
    // does: it notices its file is gone and queues on the new one.
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let a = store.lock("x").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let b = store.lock("x").unwrap();
            tx.send(()).unwrap();
            drop(b);
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    fs::remove_file(dir.path().join("locks/x")).unwrap();
    let c = store.lock("x").unwrap();
    drop(a);
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the waiter got a lock on an unlinked file while a newcomer holds it"
    );
    drop(c);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
}

/// An uncompressed layer tar holding `etc/motd`.
fn motd_tar(text: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "etc/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_mode(0o644);
    h.set_size(text.len() as u64);
    b.append_data(&mut h, "etc/motd", text).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn verify_rechecks_unpacked_layer_directories() {
    let dir = common::tempdir();
    let store = Store::open(dir.path()).unwrap();
    let layer = store.put_bytes(&motd_tar(b"hello\n")).unwrap();
    // Uncompressed: the diffID is the blob digest.
    let config = store
        .put_bytes(format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#).as_bytes())
        .unwrap();
    let manifest = store
        .put_bytes(
            format!(r#"{{"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
    store.tag_set("example.com/motd:1", &manifest).unwrap();
    let unpacked = store.layer_dir(&layer);
    fs::create_dir_all(unpacked.join("etc")).unwrap();
    fs::write(unpacked.join("etc/motd"), b"hello\n").unwrap();
    let r = maintain::verify(&store, false).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.layers_checked, 1);

    // Same size, other bytes: found; repair removes the directory for re-unpacking.
    fs::write(unpacked.join("etc/motd"), b"HELLO\n").unwrap();
    let out = common::run(common::cairn(dir.path()).args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("unpacked layer {layer}: etc/motd differs")),
        "{text}"
    );
    let r = maintain::verify(&store, true).unwrap();
    assert!(r.repaired && r.broken_layers.len() == 1, "{r:?}");
    assert!(!unpacked.exists());
    assert!(maintain::verify(&store, false).unwrap().is_clean());
    // The next unpack brings it back as the layer says.
    common::require_root();
    let root = cairn::userns::Privilege::Root;
    cairn::rootfs::ensure_unpacked(&store, &layer, &layer, &root, &mut |_| {}).unwrap();
    assert_eq!(fs::read(unpacked.join("etc/motd")).unwrap(), b"hello\n");
    assert!(maintain::verify(&store, false).unwrap().is_clean());
}

#[test]
fn pull_of_an_image_with_a_bad_config_records_no_tag() {
    use common::images::{busybox_entries, skopeo_push, LayerSrc, Layout};
    let reg = common::registry::Registry::start();
    let root = common::tempdir();
    let layout = Layout::new(&reg.scratch("badconfig"));
    let (layer, _diff_id) = layout.put_layer(&LayerSrc::Entries(busybox_entries()));
    // Valid JSON, but it lists no layers while the manifest has one.
    let config = layout.put(
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    });
    let m = layout.put(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    layout.tag(&m);
    skopeo_push(&reg, &layout, "bad/config:1", &[]);
    let reference = format!("{}/bad/config:1", reg.addr);

    let out = common::run(
        common::cairn(root.path())
            .args(["--insecure-registry", &reg.addr, "pull", "-q"])
            .arg(&reference),
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lists 0 layers but the manifest 1"), "{err}");
    let store = Store::open(root.path()).unwrap();
    assert!(store.tag_list().unwrap().is_empty(), "a tag was recorded");

    // The same through a build's FROM: no tag either.
    let ctx = common::tempdir();
    fs::write(ctx.path().join("Dockerfile"), format!("FROM {reference}\n")).unwrap();
    let out = common::run(
        common::cairn(root.path())
            .args(["--insecure-registry", &reg.addr, "build", "-q", "-o"])
            .arg(format!(
                "type=oci,dest={}",
                ctx.path().join("out").display()
            ))
            .arg(ctx.path()),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(store.tag_list().unwrap().is_empty(), "a tag was recorded");
}

#[test]
fn size_cap_holds_across_twenty_builds() {
    common::require_root();
    let reg = common::registry::Registry::start();
    common::images::push_busybox(&reg, "cap/busybox:latest");
    let root = common::tempdir();
    let ctx = common::tempdir();
    let config = ctx.path().join("config.toml");
    let build = |i: usize| {
        // 200 kB of fresh random bytes per build: a layer that neither compresses nor
        // repeats, so each build adds about 400 kB (blob and unpacked directory).
        fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM {}/cap/busybox:latest\nRUN head -c 200000 /dev/urandom > /blob-{i}\n",
                reg.addr
            ),
        )
        .unwrap();
        let out = common::run(
            common::cairn(root.path())
                .env("CAIRN_CONFIG", &config)
                .args([
                    "--insecure-registry",
                    &reg.addr,
                    "build",
                    "--progress=plain",
                ])
                .arg("-o")
                .arg(format!(
                    "type=oci,dest={}",
                    ctx.path().join(format!("out-{i}")).display()
                ))
                .arg(ctx.path()),
        );
        assert!(out.status.success(), "build {i} failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let size = || {
        let store = Store::open(root.path()).unwrap();
        maintain::store_size(&store).unwrap()
    };
    build(0);
    let one = size();
    build(1);
    let per_build = size() - one;
    assert!(per_build >= 200_000, "a build added only {per_build} bytes");
    // Room for the base and about three builds.
    let cap = one + 2 * per_build + per_build / 2;
    fs::write(&config, format!("max_store_size = \"{cap}\"\n")).unwrap();
    let mut collections = 0;
    for i in 2..20 {
        let log = build(i);
        collections += log.matches("store over max_store_size").count();
        let now = size();
        assert!(
            now <= cap,
            "after build {i} the store holds {now} bytes, cap {cap}\n{log}"
        );
    }
    assert!(
        collections >= 10,
        "only {collections} collections in 18 builds"
    );
    // The most recent build survived collection: it is a no-op now.
    let again = build(19);
    assert!(again.contains(" CACHED"), "{again}");
    assert!(!again.contains("store over"), "{again}");
    let store = Store::open(root.path()).unwrap();
    assert_eq!(
        store.tag_list().unwrap().len(),
        1,
        "the base tag was evicted"
    );
    // Unpacked layers (the base's, and RUN uppers adopted as lowers) match their layers.
    let r = maintain::verify(&store, false).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert!(r.layers_checked >= 2, "{r:?}");
}
