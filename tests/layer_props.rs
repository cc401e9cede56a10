//! Property tests of the layer tar over random trees: the same tree always gives the same
//! bytes; entries are strictly sorted by path bytes with every parent before its children;
//! every file's content and mode come back out.

mod common;

use cairn::layer::{self, LayerOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Names that stress byte ordering around '/', '-', '.', upper case and non-ASCII.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "a-b", "a.b", "a0", "B", "b", "_", "-x", ".hidden", "z", "\u{e9}", "a b", "aa",
    ])
    .prop_map(str::to_string)
}

/// Random relative file paths (1–4 components) with contents and modes.
fn tree() -> impl Strategy<Value = BTreeMap<Vec<String>, (Vec<u8>, u32)>> {
    prop::collection::btree_map(
        prop::collection::vec(name(), 1..4),
        (
            prop::collection::vec(any::<u8>(), 0..300),
            prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755]),
        ),
        1..25,
    )
}

/// Materialises `t`, skipping paths whose prefix is already a file.
fn make(
    root: &Path,
    t: &BTreeMap<Vec<String>, (Vec<u8>, u32)>,
) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut made = BTreeMap::new();
    for (parts, (data, mode)) in t {
        let rel = parts.join("/");
        let path = root.join(&rel);
        let blocked = (1..parts.len()).any(|i| root.join(parts[..i].join("/")).is_file());
        if blocked || path.is_dir() || path.exists() {
            continue;
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        made.insert(rel, (data.clone(), *mode));
    }
    made
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_are_deterministic_sorted_and_complete(t in tree()) {
        let dir = common::tempdir();
        let files = make(dir.path(), &t);
        let opts = LayerOptions { source_date_epoch: Some(1_000), ..LayerOptions::default() };
        let mut a = Vec::new();
        let mut b = Vec::new();
        layer::write_tar(dir.path(), &mut a, &opts).unwrap();
        layer::write_tar(dir.path(), &mut b, &opts).unwrap();
        prop_assert_eq!(&a, &b);

        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut got = BTreeMap::new();
        let mut ar = tar::Archive::new(&a[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let raw = e.path_bytes().to_vec();
            let path = raw.strip_suffix(b"/").unwrap_or(&raw).to_vec();
            if let Some(i) = path.iter().rposition(|&c| c == b'/') {
                let parent = &path[..i];
                prop_assert!(seen.iter().any(|s| s == parent), "parent of {:?} not before it", path);
            }
            if let Some(last) = seen.last() {
                prop_assert!(last < &path, "{:?} not after {:?}", path, last);
            }
            prop_assert_eq!(e.header().mtime().unwrap(), 1_000);
            if e.header().entry_type().is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let mode = e.header().mode().unwrap();
                got.insert(String::from_utf8(path.clone()).unwrap(), (data, mode));
            }
            seen.push(path);
        }
        prop_assert_eq!(got, files);
    }
}
