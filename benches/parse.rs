//! Parsing a generated 5,000-line Dockerfile: every instruction kind, continuations,
//! heredocs and several stages, so the figure reflects real files rather than one hot path.
//!
//! Run: `cargo bench --bench parse`. Figure at landing (shared, loaded 2-core machine):
//! about 7.3 ms per parse of the 5,000-line file (~17 MiB/s).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

/// About `lines` lines of varied Dockerfile text.
fn generated(lines: usize) -> String {
    let mut out = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:12\n");
    let mut stage = 0;
    while out.matches('\n').count() < lines {
        out.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        out.push_str("WORKDIR /src\nENV A=1 B=\"two words\" C=${A:-x}\nARG VERSION=1.2.3 OTHER\n");
        out.push_str("RUN --mount=type=cache,target=/root/.cache \\\n    apt-get update \\\n    # comment inside\n    && apt-get install -y curl git \\\n    && rm -rf /var/lib/apt/lists/*\n");
        out.push_str("COPY --chown=1000:1000 --chmod=0644 src/ /app/\nCOPY [\"a b\", \"/c d/\"]\n");
        out.push_str("RUN <<EOF\nset -e\necho \"$HOME\"\nEOF\n");
        out.push_str(
            "LABEL org.opencontainers.image.title=\"x\" version=$VERSION\nEXPOSE 80 443/tcp\n",
        );
        out.push_str("HEALTHCHECK --interval=30s CMD curl -f http://localhost/ || exit 1\n");
        out.push_str("CMD [\"/app/run\", \"--flag\"]\nUSER app\nVOLUME /data\n");
        stage += 1;
    }
    out
}

fn bench_parse(c: &mut Criterion) {
    let src = generated(5_000);
    let lines = src.lines().count();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function(format!("dockerfile_{lines}_lines"), |b| {
        b.iter(|| cairn::dockerfile::parse(black_box(&src), "Dockerfile").expect("parses"))
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
