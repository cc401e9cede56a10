//! Store upkeep behind `cairn cache`: listing ([`blobs`], [`usage`]), re-verification
//! ([`verify`]) and garbage collection ([`prune`]).
//!
//! Reachability is computed from the roots (tag entries and cache entries) by following
//! every `sha256:` digest named inside reachable JSON blobs (indexes, manifests, configs,
//! executor state), so prune never removes what a tag or cache entry needs — including
//! unpacked layer directories named by a reachable config's diffIDs.

use super::index::remove_opt;
use super::{io_err, lock, Error, Store};
use crate::digest::{Digest, HashingReader};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Blobs younger than this are never pruned (unless `all`): a concurrent build may have
/// just committed them and not yet written the index entry that references them.
pub const PRUNE_GRACE: Duration = Duration::from_secs(600);

/// JSON blobs larger than this are not scanned for digests (layers are never JSON).
const MAX_SCAN: u64 = 8 << 20;

/// Every blob in the store with its size, sorted by digest.
pub fn blobs(store: &Store) -> Result<BTreeMap<Digest, u64>, Error> {
    let dir = store.root().join("blobs/sha256");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
            let len = e.metadata().map_err(io_err(&e.path()))?.len();
            out.insert(d, len);
        }
    }
    Ok(out)
}

/// Disk usage by kind: (entries, bytes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub blobs: (u64, u64),
    pub layers: (u64, u64),
    pub temp: (u64, u64),
    pub index: (u64, u64),
}

pub fn usage(store: &Store) -> Result<Usage, Error> {
    let b = blobs(store)?;
    let mut u = Usage {
        blobs: (b.len() as u64, b.values().sum()),
        ..Usage::default()
    };
    u.layers = dir_usage(&store.root().join("layers"));
    u.temp = dir_usage(&store.tmp_root());
    for d in ["tags", "cache", "records"] {
        let (n, s) = dir_usage(&store.root().join(d));
        u.index.0 += n;
        u.index.1 += s;
    }
    Ok(u)
}

/// (top-level entries, total bytes of regular files below).
fn dir_usage(dir: &Path) -> (u64, u64) {
    let n = fs::read_dir(dir).map(|r| r.count() as u64).unwrap_or(0);
    let bytes = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    (n, bytes)
}

/// The digests reachable from `roots` through the JSON blobs they name.
pub fn reachable(store: &Store, roots: impl IntoIterator<Item = Digest>) -> BTreeSet<Digest> {
    let mut seen = BTreeSet::new();
    let mut queue: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = queue.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let small = fs::metadata(store.blob_path(&d)).is_ok_and(|m| m.len() <= MAX_SCAN);
        if !small {
            continue;
        }
        let Ok(bytes) = fs::read(store.blob_path(&d)) else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            collect_digests(&v, &mut queue);
        }
    }
    seen
}

fn collect_digests(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(d) = Digest::parse(s) {
                out.push(d);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

/// What `cache verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    /// Blobs whose content does not hash to their name, with what it hashes to.
    pub corrupt: Vec<(Digest, String)>,
    /// Cache entry files naming a missing or corrupt blob.
    pub broken_entries: Vec<String>,
    /// Tags whose manifest is missing or corrupt.
    pub broken_tags: Vec<String>,
    /// Whether the problems were repaired (bad blobs and the entries naming them removed).
    pub repaired: bool,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.broken_entries.is_empty() && self.broken_tags.is_empty()
    }
}

/// Re-hashes every blob; with `repair`, removes corrupt blobs and the index entries that
/// name a missing or corrupt blob.
pub fn verify(store: &Store, repair: bool) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport::default();
    for d in blobs(store)?.into_keys() {
        report.checked += 1;
        let path = store.blob_path(&d);
        let f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut r = HashingReader::new(std::io::BufReader::with_capacity(256 * 1024, f));
        let outcome = std::io::copy(&mut r, &mut std::io::sink());
        let actual = match outcome {
            Ok(_) => r.finish().1.to_string(),
            Err(e) => format!("unreadable: {e}"),
        };
        if actual != d.as_str() {
            if repair {
                remove_opt(&path)?;
            }
            report.corrupt.push((d, actual));
        }
    }
    for (path, entry) in store.cache_list()? {
        if !store.entry_complete(&entry) {
            if repair {
                remove_opt(&path)?;
            }
            report.broken_entries.push(path.display().to_string());
        }
    }
    for (reference, tag) in store.tag_list()? {
        if !store.has_blob(&tag.digest) {
            if repair {
                store.tag_remove(&reference)?;
            }
            report.broken_tags.push(reference);
        }
    }
    report.repaired = repair && !report.is_clean();
    Ok(report)
}

/// How `cache prune` chooses.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove cache entries not used within this duration (then what only they kept).
    pub keep_duration: Option<Duration>,
    /// Remove every tag, cache entry, blob and unpacked layer.
    pub all: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub temps: usize,
    pub entries: usize,
    pub tags: usize,
    pub blobs: usize,
    pub layers: usize,
    pub bytes: u64,
}

/// Removes temp leftovers of dead processes, old cache entries (per `opts`), and blobs and
/// layer directories that no tag or cache entry reaches. Never removes a blob or layer
/// younger than [`PRUNE_GRACE`] unless `opts.all`. Holds the store's `gc` lock.
pub fn prune(store: &Store, opts: &PruneOptions) -> Result<PruneReport, Error> {
    let _gc = store.lock("gc")?;
    let mut report = PruneReport {
        temps: lock::clean_stale_temps(store)?,
        ..PruneReport::default()
    };
    let now = SystemTime::now();
    let age = |p: &Path| {
        fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    let mut roots = Vec::new();
    for (path, entry) in store.cache_list()? {
        let expired = opts.keep_duration.is_some_and(|k| age(&path) > k);
        if opts.all || expired {
            remove_opt(&path)?;
            report.entries += 1;
        } else {
            roots.push(entry.state);
            roots.extend(entry.refs);
        }
    }
    for (reference, tag) in store.tag_list()? {
        if opts.all {
            store.tag_remove(&reference)?;
            report.tags += 1;
        } else {
            roots.push(tag.digest);
        }
    }
    let keep = reachable(store, roots);
    let removable = |p: &Path| opts.all || age(p) > PRUNE_GRACE;
    for (d, size) in blobs(store)? {
        let p = store.blob_path(&d);
        if !keep.contains(&d) && removable(&p) {
            remove_opt(&p)?;
            report.blobs += 1;
            report.bytes += size;
        }
    }
    let layers = store.root().join("layers");
    for e in fs::read_dir(&layers).map_err(io_err(&layers))? {
        let e = e.map_err(io_err(&layers))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let kept = Digest::parse(&format!("sha256:{name}")).is_ok_and(|d| keep.contains(&d));
        if !kept && removable(&e.path()) {
            report.bytes += dir_usage(&e.path()).1;
            fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
            report.layers += 1;
        }
    }
    Ok(report)
}

/// How many cache entries the index holds.
pub fn cache_entry_count(store: &Store) -> Result<usize, Error> {
    Ok(store.cache_list()?.len())
}
