//! The build context and cache keys: walking and hashing a 20,000-file context for a
//! `COPY . /src/` (plan only, plan + content hashes, and the no-op through a warm stat
//! cache), and computing the keys of a 200-step chain as the executor does on every build.

use cairn::cache::{base_key, KeyInputs};
use cairn::context::{
    hash_sources, hash_sources_cached, plan_copy, Context, CopyOptions, StatCache,
};
use cairn::dockerfile::ignore::IgnoreMatcher;
use cairn::{Digest, Platform};
use criterion::{criterion_group, criterion_main, Criterion};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// 100 directories of 200 small files, plus an ignored `target/` of 1,000 more.
fn make_context(root: &Path) {
    for d in 0..100 {
        let dir = root.join(format!("src/m{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            fs::write(
                dir.join(format!("f{f:03}.rs")),
                format!("// {d}/{f}\n").repeat(8),
            )
            .unwrap();
        }
    }
    let target = root.join("target/debug");
    fs::create_dir_all(&target).unwrap();
    for f in 0..1000 {
        fs::write(target.join(format!("o{f}")), "obj").unwrap();
    }
}

fn context(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    make_context(dir.path());
    let ignore = IgnoreMatcher::parse("target\n*.tmp\n!keep.tmp\n").unwrap();
    let ctx = Context::open(dir.path(), ignore).unwrap();
    let opts = CopyOptions::default();
    let mut g = c.benchmark_group("context");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("plan 20k files", |b| {
        b.iter(|| {
            let srcs = ctx.resolve(&[".".to_string()]).unwrap();
            plan_copy(&srcs, "/src/", &opts).unwrap().len()
        })
    });
    g.bench_function("hash 20k files", |b| {
        b.iter(|| {
            let srcs = ctx.resolve(&[".".to_string()]).unwrap();
            hash_sources(&srcs, "/src/", &opts).unwrap().digest
        })
    });
    // The COPY no-op: every file answered by a saved stat cache (loaded each time, as a
    // build does), so what is left is one lstat per file, the plan and the Merkle hash.
    let saved = {
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let mut cache = StatCache::default().with_clock(later);
        let srcs = ctx.resolve(&[".".to_string()]).unwrap();
        hash_sources_cached(&srcs, "/src/", &opts, &mut cache).unwrap();
        cache.to_bytes()
    };
    g.bench_function("no-op hash 20k files (warm stat cache)", |b| {
        b.iter(|| {
            let mut cache = StatCache::from_bytes(&saved);
            let srcs = ctx.resolve(&[".".to_string()]).unwrap();
            let d = hash_sources_cached(&srcs, "/src/", &opts, &mut cache).unwrap();
            assert_eq!(cache.misses, 0);
            d.digest
        })
    });
    g.finish();
}

fn keys(c: &mut Criterion) {
    let platform: Platform = "linux/amd64".parse().unwrap();
    let base = base_key(&Digest::of_bytes(b"manifest"), &platform);
    let env: Vec<String> = (0..20).map(|i| format!("VAR{i}=value-{i}")).collect();
    c.bench_function("keys of a 200-step chain", |b| {
        b.iter(|| {
            let mut parent = base.clone();
            for i in 0..200 {
                let mut k = KeyInputs::new(parent, format!("RUN step {i} && make -j4 target{i}"));
                k.env = env.clone();
                k.user = "coder".into();
                k.workdir = "/home/coder".into();
                k.shell = vec!["/bin/sh".into(), "-c".into()];
                k.network = "default".into();
                if i % 10 == 0 {
                    k.inputs = Some(Digest::of_bytes(&[i as u8]));
                }
                parent = k.key();
            }
            parent
        })
    });
}

criterion_group!(benches, context, keys);
criterion_main!(benches);
