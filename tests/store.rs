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
use std::path::Path;
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

    let mut child = std::process::Command::new("flock")
        .arg("-o")
        .arg(dir.path().join("locks/pull"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux is needed");
    let deadline = SystemTime::now() + Duration::from_secs(5);
    while store.try_lock("pull").unwrap().is_some() {
        assert!(SystemTime::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
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
}
