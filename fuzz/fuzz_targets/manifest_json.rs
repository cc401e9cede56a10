//! Manifest and index parsing as a registry's answer would reach it: any bytes, with and
//! without each content type; an index then goes through platform selection.
#![no_main]

use cairn::registry::{
    parse_manifest, select_platform, Manifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let platform: cairn::Platform = "linux/amd64".parse().unwrap();
    for ct in [
        None,
        Some(OCI_MANIFEST),
        Some(OCI_INDEX),
        Some(DOCKER_MANIFEST),
        Some(DOCKER_LIST),
        Some("text/html"),
    ] {
        if let Ok(Manifest::Index(entries)) = parse_manifest("fuzz/x:latest", data, ct) {
            let _ = select_platform("fuzz/x:latest", &entries, &platform);
        }
    }
});
