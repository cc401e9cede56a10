//! Pulling from the real `docker-registry` the harness starts: multi-layer images, digests,
//! manifest lists, offline fallback and `--pull=never`.

mod common;

use common::images;
use common::registry::Registry;
use std::process::Command;

#[test]
fn harness_pushes_busybox_and_restarts() {
    let mut reg = Registry::start();
    let digest = images::push_busybox(&reg, "busybox:1");
    assert!(cairn::Digest::parse(&digest).is_ok(), "{digest}");
    let raw = common::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/busybox:1", reg.addr)),
    );
    assert_eq!(cairn::Digest::of_bytes(raw.as_bytes()).to_string(), digest);
    reg.restart();
    assert_eq!(common::registry::http_status(&reg.addr, "/v2/"), Some(200));
    reg.stop();
    assert_eq!(common::registry::http_status(&reg.addr, "/v2/"), None);
}
