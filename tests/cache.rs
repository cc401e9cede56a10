//! Cache keys: each hashed field changes the key, identical inputs give identical keys,
//! the encoding is unambiguous, and `--explain` names what changed.

use cairn::cache::{self, base_key, explain_change, scratch_key, KeyInputs};
use cairn::{Digest, Platform};
use std::collections::BTreeMap;

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

const PINNED: &str = "sha256:de79e7f1c434f43728d5dbd29d0c086ab8e65e88c89222dff7a6d3ee44104c8e";

fn step() -> KeyInputs {
    let mut k = KeyInputs::new(
        base_key(&Digest::of_bytes(b"manifest"), &amd64()),
        "RUN apt-get install -y python3",
    );
    k.env = vec!["PATH=/usr/bin".into(), "PY=3".into()];
    k.user = "coder".into();
    k.workdir = "/home/coder".into();
    k.shell = vec!["/bin/sh".into(), "-c".into()];
    k.network = "default".into();
    k
}

#[test]
fn identical_inputs_give_identical_keys() {
    assert_eq!(step().key(), step().key());
    let mut with_files = step();
    with_files
        .input_files
        .insert("app/x".into(), Digest::of_bytes(b"x"));
    assert_eq!(
        with_files.key(),
        step().key(),
        "input_files is explanation only"
    );
    // A known vector pins the encoding: changing it silently would orphan every cache.
    assert_eq!(step().key().to_string(), PINNED, "the key encoding changed");
}

#[test]
fn every_hashed_field_changes_the_key() {
    let base = step().key();
    type Change = (&'static str, fn(&mut KeyInputs));
    let changes: Vec<Change> = vec![
        ("parent", |k| k.parent = scratch_key(&amd64())),
        ("instruction", |k| {
            k.instruction = "RUN apt-get install -y python3.12".into()
        }),
        ("env value", |k| k.env[1] = "PY=3.12".into()),
        ("env order", |k| k.env.reverse()),
        ("env added", |k| k.env.push("X=1".into())),
        ("user", |k| k.user = "root".into()),
        ("workdir", |k| k.workdir = "/".into()),
        ("shell", |k| k.shell = vec!["/bin/bash".into(), "-c".into()]),
        ("network", |k| k.network = "none".into()),
        ("inputs", |k| k.inputs = Some(Digest::of_bytes(b"ctx"))),
    ];
    let mut seen = vec![base.clone()];
    for (what, change) in changes {
        let mut k = step();
        change(&mut k);
        let key = k.key();
        assert!(
            !seen.contains(&key),
            "changing {what} gave a key seen before"
        );
        seen.push(key);
    }
}

#[test]
fn framing_keeps_neighbouring_fields_apart() {
    let mut a = step();
    a.env = vec!["ab".into(), "c".into()];
    let mut b = step();
    b.env = vec!["a".into(), "bc".into()];
    assert_ne!(a.key(), b.key());

    let mut a = step();
    a.shell = vec!["ab".into(), "c".into()];
    let mut b = step();
    b.shell = vec!["a".into(), "bc".into()];
    assert_ne!(a.key(), b.key());

    // A value moving between adjacent string fields.
    let mut a = step();
    (a.user, a.workdir) = ("ab".into(), "c".into());
    let mut b = step();
    (b.user, b.workdir) = ("a".into(), "bc".into());
    assert_ne!(a.key(), b.key());

    // An empty list versus one empty item.
    let mut a = step();
    a.env = vec![];
    let mut b = step();
    b.env = vec![String::new()];
    assert_ne!(a.key(), b.key());
}

#[test]
fn base_and_scratch_keys_depend_on_digest_and_platform_only() {
    let d1 = Digest::of_bytes(b"one");
    let d2 = Digest::of_bytes(b"two");
    let arm: Platform = "linux/arm64".parse().unwrap();
    assert_eq!(base_key(&d1, &amd64()), base_key(&d1, &amd64()));
    assert_ne!(base_key(&d1, &amd64()), base_key(&d2, &amd64()));
    assert_ne!(base_key(&d1, &amd64()), base_key(&d1, &arm));
    assert_ne!(scratch_key(&amd64()), scratch_key(&arm));
    assert_ne!(scratch_key(&amd64()), base_key(&d1, &amd64()));
    assert_eq!(
        KeyInputs::base(Some(&d1), &amd64()).key(),
        base_key(&d1, &amd64())
    );
    assert_eq!(KeyInputs::base(None, &amd64()).key(), scratch_key(&amd64()));
}

#[test]
fn explain_names_what_changed() {
    let prev = step();
    let mut cur = step();
    assert!(explain_change(&prev, &cur).is_empty());

    cur.instruction = "RUN apt-get install -y python3.12".into();
    cur.env[1] = "PY=3.12".into();
    cur.env.push("NEW=1".into());
    let why = explain_change(&prev, &cur);
    assert!(
        why.iter()
            .any(|s| s.starts_with("instruction changed: RUN apt-get install -y python3 ->")),
        "{why:?}"
    );
    assert!(
        why.contains(&"build arg/env PY changed".to_string()),
        "{why:?}"
    );
    assert!(
        why.contains(&"build arg/env NEW added".to_string()),
        "{why:?}"
    );
    assert!(
        why.iter().all(|s| !s.contains("3.12\"")),
        "values of args are not printed: {why:?}"
    );

    let mut a = step();
    a.inputs = Some(Digest::of_bytes(b"1"));
    a.input_files = BTreeMap::from([
        ("app/x".to_string(), Digest::of_bytes(b"x1")),
        ("app/gone".to_string(), Digest::of_bytes(b"g")),
    ]);
    let mut b = a.clone();
    b.inputs = Some(Digest::of_bytes(b"2"));
    b.input_files
        .insert("app/x".into(), Digest::of_bytes(b"x2"));
    b.input_files.remove("app/gone");
    b.input_files
        .insert("app/new".into(), Digest::of_bytes(b"n"));
    let why = explain_change(&a, &b);
    assert_eq!(
        why,
        vec![
            "context file app/new added".to_string(),
            "context file app/x changed".to_string(),
            "context file app/gone removed".to_string(),
        ]
    );

    let old = KeyInputs::base(Some(&Digest::of_bytes(b"old")), &amd64());
    let new = KeyInputs::base(Some(&Digest::of_bytes(b"new")), &amd64());
    let why = explain_change(&old, &new);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].starts_with("base image digest changed: sha256:"),
        "{why:?}"
    );

    let mut reordered = step();
    reordered.env.reverse();
    assert_eq!(
        explain_change(&prev, &reordered),
        vec!["environment order changed"]
    );
}

#[test]
fn records_round_trip_through_json() {
    let mut k = step();
    k.inputs = Some(Digest::of_bytes(b"i"));
    k.input_files.insert("a".into(), Digest::of_bytes(b"a"));
    let json = serde_json::to_string(&k).unwrap();
    let back: KeyInputs = serde_json::from_str(&json).unwrap();
    assert_eq!(back, k);
    assert_eq!(back.key(), k.key());
    let _ = cache::FROM;
}
