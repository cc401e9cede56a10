//! Layer writing: the deterministic tar of a tree, sha256 digesting, and the pinned gzip and
//! zstd encoders, each over the same ~16 MiB tree of mixed small and large files.

use cairn::digest::HashingWriter;
use cairn::layer::{self, Compression, LayerOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// 2,000 small text files in 40 directories plus four 3 MiB semi-compressible files.
fn make_tree(root: &Path) -> u64 {
    let mut total = 0u64;
    for d in 0..40 {
        let dir = root.join(format!("usr/share/d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let body = format!("file {d}/{f}\n").repeat(20 + f);
            total += body.len() as u64;
            fs::write(dir.join(format!("f{f:03}.txt")), body).unwrap();
        }
    }
    let bin = root.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..4 {
        let mut data = Vec::with_capacity(3 << 20);
        while data.len() < 3 << 20 {
            // xorshift noise, with runs so that it compresses about as well as binaries do
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes()[..4]);
            data.extend_from_slice(&[0u8; 4]);
        }
        total += data.len() as u64;
        fs::write(bin.join(format!("tool{i}")), data).unwrap();
    }
    total
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = make_tree(dir.path());
    let mut g = c.benchmark_group("layer");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));

    g.bench_function("tar", |b| {
        b.iter(|| layer::write_tar(dir.path(), io::sink(), &LayerOptions::default()).unwrap())
    });
    let mut tar = Vec::new();
    layer::write_tar(dir.path(), &mut tar, &LayerOptions::default()).unwrap();
    g.bench_function("sha256", |b| {
        b.iter(|| {
            let mut w = HashingWriter::new(io::sink());
            w.write_all(&tar).unwrap();
            w.finish().1
        })
    });
    for comp in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = LayerOptions {
            compression: comp,
            ..LayerOptions::default()
        };
        g.bench_function(format!("tar+digest+{comp}"), |b| {
            b.iter(|| {
                layer::write_layer(dir.path(), io::sink(), &opts)
                    .unwrap()
                    .unwrap()
                    .1
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
