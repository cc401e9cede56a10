//! The layer unpacker on arbitrary tar bytes, as an unprivileged unpack into a fresh
//! temporary root. Whatever the tar says, nothing outside the root may change: a sibling
//! directory with a sentinel file is checked after every run.
#![no_main]

use cairn::rootfs::{unpack_tar_as, Privilege};
use libfuzzer_sys::fuzz_target;
use std::fs;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new()
        .prefix("cairn-fuzz-tar-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("sentinel"), b"untouched").unwrap();
    let _ = unpack_tar_as(data, &root, Privilege::Unprivileged);
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "root"],
        "the unpack wrote beside its root"
    );
    let inside: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(inside, ["sentinel"], "the unpack wrote outside its root");
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"untouched");
    // Unprivileged unpacks may leave read-only directories; make them removable.
    for e in walk(&root) {
        let _ = fs::set_permissions(&e, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
});

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            if let Ok(rd) = fs::read_dir(&p) {
                out.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    out
}
