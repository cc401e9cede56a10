//! Benchmark (run on demand: `cargo test --test registry_bench -- --ignored --nocapture`,
//! with `CAIRN_BENCH_BIN=target/release/cairn` to time a release binary): pulling a ~200 MB
//! image from the local registry with `cairn pull` against `skopeo copy docker://… oci:…`
//! of the same image in the same run.

mod common;

use common::images::{self, Entry, LayerSrc, Layout};
use common::registry::Registry;
use std::process::Command;
use std::time::{Duration, Instant};

/// Incompressible bytes (an xorshift stream), so the gzip layer stays as large as the data.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn best_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap()
}

#[test]
#[ignore = "benchmark: slow, run on demand with --ignored"]
fn pull_vs_skopeo_copy() {
    let reg = Registry::start();
    let layout = Layout::new(&reg.scratch("bench"));
    let (gz, diff_id) = images::debian_layer_gz();
    let mut layers = vec![LayerSrc::Gzipped(gz, diff_id)];
    for i in 0..3u64 {
        let e = vec![Entry::File(
            format!("noise-{i}.bin"),
            0o644,
            noise(i + 1, 50 << 20),
        )];
        layers.push(LayerSrc::Entries(e));
    }
    let m = layout.image(&layers, "amd64", None);
    layout.tag(&m);
    let digest = images::skopeo_push(&reg, &layout, "bench:1", &[]);
    let size: u64 = std::fs::read_dir(layout.dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let reference = format!("{}/bench:1", reg.addr);

    let skopeo = best_of(3, || {
        let dir = common::tempdir();
        let t = Instant::now();
        common::run_ok(
            Command::new("skopeo")
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:bench", dir.path().join("oci").display())),
        );
        t.elapsed()
    });
    let cairn = best_of(3, || {
        let root = common::tempdir();
        let t = Instant::now();
        let bin = std::env::var_os("CAIRN_BENCH_BIN").map_or_else(common::cairn_bin, Into::into);
        let out = common::run_ok(
            Command::new(bin)
                .env("CAIRN_ROOT", root.path())
                .args(["pull", "-q", &reference]),
        );
        let el = t.elapsed();
        assert_eq!(out.trim(), digest);
        el
    });
    println!(
        "image {:.0} MB: cairn pull {:.2}s, skopeo copy {:.2}s, ratio cairn/skopeo {:.2}",
        size as f64 / 1e6,
        cairn.as_secs_f64(),
        skopeo.as_secs_f64(),
        cairn.as_secs_f64() / skopeo.as_secs_f64()
    );
}
