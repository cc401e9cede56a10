//! The sandbox's start-up cost per RUN: `RUN true` on a busybox root with the host's
//! network, an empty network namespace (`none`), and the default network (its own
//! namespace connected through `slirp4netns`), so the network's cost per step is the
//! difference. Needs root (the rootless path is the same code). A criterion bench, run on
//! demand: `cargo bench --bench sandbox`.

use cairn::sandbox::{run_with, Network, RootMode, RunSpec};
use cairn::userns::Privilege;
use criterion::{criterion_group, criterion_main, Criterion};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static");
    for applet in ["sh", "true"] {
        symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\n").unwrap();
    layer
}

fn bench(c: &mut Criterion) {
    std::env::set_var(cairn::userns::EXE_ENV, env!("CARGO_BIN_EXE_cairn"));
    let dir = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir()
        .unwrap();
    let layer = busybox_layer(dir.path());
    let privilege = Privilege::detect();
    let mut group = c.benchmark_group("run_true");
    group.sample_size(20);
    for (name, network) in [
        ("host", Network::Host),
        ("none", Network::None),
        ("default", Network::Default),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let step = tempfile::tempdir_in(dir.path()).unwrap();
                let (upper, work) = (step.path().join("u"), step.path().join("w"));
                std::fs::create_dir(&upper).unwrap();
                std::fs::create_dir(&work).unwrap();
                let spec = RunSpec {
                    lowers: vec![layer.clone()],
                    upper,
                    work,
                    argv: vec!["true".into()],
                    env: vec![],
                    user: String::new(),
                    workdir: "/".into(),
                    network,
                    security: Default::default(),
                    limits: Default::default(),
                    hostname: "bench".into(),
                    mounts: vec![],
                    stdin: None,
                };
                let code =
                    run_with(&spec, &privilege, RootMode::Auto, &mut |_| {}, &mut |_| {}).unwrap();
                assert_eq!(code, 0);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
