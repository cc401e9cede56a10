//! The layer writer alone on a tree `scripts/bench` made, timed once per invocation so the
//! bench can put it beside `tar -c | sha256sum`, `pigz` and `zstd -T0` on the same bytes
//! and read its peak memory with `/usr/bin/time`. Not a criterion bench: the trees are
//! hundreds of MiB and one pass is the measurement.
//!
//! `cargo bench --bench pipeline -- MODE DIR [STORE]` prints one JSON object:
//! - `tar`: walk + deterministic tar into a sink
//! - `none` | `gzip` | `zstd`: walk + tar + diffID (+ compression + blob digest), into a sink
//! - `store-none` | `store-gzip` | `store-zstd`: `layer::from_upper` into a store at STORE
//!   (what a build step's "layer" stage does: the above plus the blob write, fsync, rename)

use cairn::digest::HashingWriter;
use cairn::layer::{self, Compression, LayerOptions};
use cairn::store::Store;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

/// Counts bytes on their way to a sink.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn options(c: Compression) -> LayerOptions {
    LayerOptions {
        compression: c,
        ..LayerOptions::default()
    }
}

fn run(mode: &str, dir: &Path, store: Option<&Path>) -> Result<(u64, String), String> {
    let e = |e: cairn::layer::Error| e.to_string();
    if mode == "tar" {
        let mut n = Counter::default();
        layer::write_tar(dir, &mut n, &LayerOptions::default()).map_err(e)?;
        return Ok((n.0, String::new()));
    }
    if let Some(comp) = mode.strip_prefix("store-") {
        let c: Compression = comp.parse().map_err(|e| format!("{e}"))?;
        let root = store.ok_or("store-* modes need a STORE directory")?;
        let store = Store::open(root).map_err(|e| e.to_string())?;
        let l = layer::from_upper(&store, dir, &options(c))
            .map_err(e)?
            .ok_or("empty tree")?;
        return Ok((l.size, l.diff_id.to_string()));
    }
    let c: Compression = mode.parse().map_err(|e| format!("{e}"))?;
    let out = HashingWriter::new(Counter::default());
    let (out, diff_id) = layer::write_layer(dir, out, &options(c))
        .map_err(e)?
        .ok_or("empty tree")?;
    let (n, _blob, _) = out.finish();
    Ok((n.0, diff_id.to_string()))
}

fn main() {
    // cargo passes --bench; scripts/bench passes MODE DIR [STORE].
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(mode), Some(dir)) = (args.first(), args.get(1)) else {
        // `cargo bench` with no arguments (as for the criterion benches): nothing to time.
        eprintln!("usage: pipeline MODE DIR [STORE] (see benches/pipeline.rs)");
        return;
    };
    let started = Instant::now();
    match run(mode, Path::new(dir), args.get(2).map(Path::new)) {
        Ok((bytes, diff_id)) => println!(
            "{}",
            serde_json::json!({
                "mode": mode,
                "seconds": started.elapsed().as_secs_f64(),
                "out_bytes": bytes,
                "diff_id": diff_id,
            })
        ),
        Err(msg) => {
            eprintln!("pipeline: {msg}");
            std::process::exit(1);
        }
    }
}
