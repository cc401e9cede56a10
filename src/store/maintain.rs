//! Store upkeep behind `cairn cache`: listing ([`blobs`], [`usage`]), re-verification
//! ([`verify`]) and garbage collection ([`prune`]).
//!
//! Reachability is computed from the roots (tag entries, cache entries and the pins of
//! running builds, see [`super::Lease`]) by following every `sha256:` digest named inside
//! reachable JSON blobs (indexes, manifests, configs, executor state), so prune never
//! removes what a tag, a cache entry or a running build needs — including unpacked layer
//! directories named by a reachable config's diffIDs.
//!
//! Under a size cap ([`PruneOptions::max_size`], `max_store_size` in the config file) cache
//! entries are kept most recently used first while what they reach still fits; the rest
//! go, then everything unreachable. Tags and pins are never evicted, so a store whose tags
//! alone exceed the cap stays over it ([`PruneReport::over_cap`]).

use super::index::remove_opt;
use super::pin::{self, COLLECTING};
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
    reachable_beyond(store, roots, &BTreeSet::new())
}

/// Like [`reachable`], but stops at (and leaves out) digests in `known`, which must already
/// hold everything reachable from its members.
fn reachable_beyond(
    store: &Store,
    roots: impl IntoIterator<Item = Digest>,
    known: &BTreeSet<Digest>,
) -> BTreeSet<Digest> {
    let mut seen = BTreeSet::new();
    let mut queue: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = queue.pop() {
        if known.contains(&d) || !seen.insert(d.clone()) {
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
    /// Unpacked layer directories checked against their layer blob.
    pub layers_checked: usize,
    /// Unpacked layer directories that differ from their layer, with the first difference
    /// (repair removes them; the next build that needs one unpacks it again).
    pub broken_layers: Vec<(Digest, String)>,
    /// Files in layer directories this user could not read (rootless unpacks).
    pub unchecked_files: usize,
    /// Whether the problems were repaired (bad blobs and the entries naming them removed).
    pub repaired: bool,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.broken_entries.is_empty()
            && self.broken_tags.is_empty()
            && self.broken_layers.is_empty()
    }
}

/// Re-hashes every blob and re-checks every unpacked layer directory whose layer blob is
/// known; with `repair`, removes corrupt blobs, the index entries that name a missing or
/// corrupt blob, and layer directories that differ from their layer.
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
    verify_layers(store, repair, &mut report)?;
    report.repaired = repair && !report.is_clean();
    Ok(report)
}

fn verify_layers(store: &Store, repair: bool, report: &mut VerifyReport) -> Result<(), Error> {
    let origins = super::layers::origins(store, MAX_SCAN)?;
    let dir = store.root().join("layers");
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(diff_id) = Digest::parse(&format!("sha256:{name}")) else {
            continue;
        };
        // A directory whose layer blob is gone or corrupt cannot be checked (prune removes
        // it once nothing reaches it).
        let Some(blob) = origins.get(&diff_id) else {
            continue;
        };
        if !store.has_blob(blob) || report.corrupt.iter().any(|(d, _)| d == blob) {
            continue;
        }
        report.layers_checked += 1;
        let check = super::layers::check_dir(store, blob, &e.path())?;
        report.unchecked_files += check.unchecked;
        if let Some(problem) = check.problem {
            if repair {
                fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
            }
            report.broken_layers.push((diff_id, problem));
        }
    }
    Ok(())
}

/// How `cache prune` chooses.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove cache entries not used within this duration (then what only they kept).
    pub keep_duration: Option<Duration>,
    /// Remove every tag, cache entry, blob and unpacked layer.
    pub all: bool,
    /// Evict least recently used cache entries until blobs and unpacked layers fit in this
    /// many bytes. Removes unreachable items however young: running builds pin theirs.
    pub max_size: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub temps: usize,
    pub entries: usize,
    pub tags: usize,
    pub blobs: usize,
    pub layers: usize,
    /// Idle lock files removed.
    pub locks: usize,
    pub bytes: u64,
    /// Bytes of blobs and unpacked layers left.
    pub kept_bytes: u64,
    /// Whether tags and running builds alone hold more than `max_size`.
    pub over_cap: bool,
}

/// Clears the in-process "collecting" flag however `prune` returns.
struct Collecting;

impl Drop for Collecting {
    fn drop(&mut self) {
        COLLECTING.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Removes temp leftovers of dead processes, idle lock files, old cache entries (per
/// `opts`), and blobs and layer directories that no tag, cache entry or running build
/// reaches. Without `max_size` or `all`, never removes a blob or layer younger than
/// [`PRUNE_GRACE`]. Holds the store's `gc` lock, which pins wait for.
pub fn prune(store: &Store, opts: &PruneOptions) -> Result<PruneReport, Error> {
    let _gc = store.lock("gc")?;
    COLLECTING.store(true, std::sync::atomic::Ordering::SeqCst);
    let _collecting = Collecting;
    let mut report = PruneReport {
        temps: lock::clean_stale_temps(store)?,
        locks: lock::prune_idle(store)?,
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
    let mut roots: Vec<Digest> = if opts.all {
        Vec::new()
    } else {
        pin::live_pins(store)?.into_iter().collect()
    };
    let mut entries = Vec::new();
    for (path, entry) in store.cache_list()? {
        let expired = opts.keep_duration.is_some_and(|k| age(&path) > k);
        if opts.all || expired {
            remove_opt(&path)?;
            report.entries += 1;
        } else {
            entries.push((age(&path), path, entry));
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
    let blob_sizes = blobs(store)?;
    let layer_sizes = match opts.max_size {
        Some(_) => layer_sizes(store)?,
        None => BTreeMap::new(),
    };
    let keep = match opts.max_size {
        None => {
            roots.extend(
                entries
                    .iter()
                    .flat_map(|(_, _, e)| std::iter::once(e.state.clone()).chain(e.refs.clone())),
            );
            reachable(store, roots)
        }
        Some(cap) => {
            let size_of = |set: &BTreeSet<Digest>| -> u64 {
                set.iter()
                    .map(|d| {
                        blob_sizes.get(d).copied().unwrap_or(0)
                            + layer_sizes.get(d).copied().unwrap_or(0)
                    })
                    .sum()
            };
            let mut keep = reachable(store, roots);
            let mut kept = size_of(&keep);
            // Most recently used first; an entry whose additions do not fit is evicted,
            // and older ones still get their chance (their blobs are often shared).
            entries.sort_by_key(|(age, _, _)| *age);
            for (_, path, e) in &entries {
                let more = reachable_beyond(
                    store,
                    std::iter::once(e.state.clone()).chain(e.refs.clone()),
                    &keep,
                );
                let cost = size_of(&more);
                if kept + cost <= cap {
                    kept += cost;
                    keep.extend(more);
                } else {
                    remove_opt(path)?;
                    report.entries += 1;
                }
            }
            report.over_cap = kept > cap;
            keep
        }
    };
    let removable = |p: &Path| opts.all || opts.max_size.is_some() || age(p) > PRUNE_GRACE;
    for (d, size) in &blob_sizes {
        let p = store.blob_path(d);
        if !keep.contains(d) && removable(&p) {
            remove_opt(&p)?;
            report.blobs += 1;
            report.bytes += size;
        } else {
            report.kept_bytes += size;
        }
    }
    let layers = store.root().join("layers");
    for e in fs::read_dir(&layers).map_err(io_err(&layers))? {
        let e = e.map_err(io_err(&layers))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let digest = Digest::parse(&format!("sha256:{name}")).ok();
        let kept = digest.as_ref().is_some_and(|d| keep.contains(d));
        let size = match digest.as_ref().and_then(|d| layer_sizes.get(d)) {
            Some(s) => *s,
            None => dir_usage(&e.path()).1,
        };
        if !kept && removable(&e.path()) {
            report.bytes += size;
            fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
            report.layers += 1;
        } else {
            report.kept_bytes += size;
        }
    }
    Ok(report)
}

/// Bytes of blobs and unpacked layers: what a size cap bounds.
pub fn store_size(store: &Store) -> Result<u64, Error> {
    let b: u64 = blobs(store)?.values().sum();
    Ok(b + layer_sizes(store)?.values().sum::<u64>())
}

/// Collects under `cap` when the store has grown past it (after a build); returns the
/// report of the collection, or `None` when none was needed.
pub fn collect_over(store: &Store, cap: u64) -> Result<Option<PruneReport>, Error> {
    if store_size(store)? <= cap {
        return Ok(None);
    }
    let opts = PruneOptions {
        max_size: Some(cap),
        ..PruneOptions::default()
    };
    prune(store, &opts).map(Some)
}

/// The size of every unpacked layer directory, by diffID. Layer directories never change
/// once renamed into place, so sizes are remembered in the record `layer-sizes` and only
/// new directories are walked.
fn layer_sizes(store: &Store) -> Result<BTreeMap<Digest, u64>, Error> {
    const RECORD: &str = "layer-sizes";
    let known: BTreeMap<Digest, u64> = store
        .record_get(RECORD)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let dir = store.root().join("layers");
    let mut out = BTreeMap::new();
    let mut walked = false;
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(d) = Digest::parse(&format!("sha256:{name}")) else {
            continue;
        };
        let size = match known.get(&d) {
            Some(s) => *s,
            None => {
                walked = true;
                dir_usage(&e.path()).1
            }
        };
        out.insert(d, size);
    }
    if walked || out.len() != known.len() {
        let bytes = serde_json::to_vec(&out).expect("sizes serialize");
        store.record_put(RECORD, &bytes)?;
    }
    Ok(out)
}

/// Parses a size such as `20GB`, `512MiB`, `1.5g` or `1073741824`: decimal units (kB, MB,
/// GB, TB) count in powers of 1000 and binary ones (KiB, MiB, GiB, TiB) in 1024, as
/// Docker's `--max-size`-style flags do; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit, e.g. 20GB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as u64)
}

/// How many cache entries the index holds.
pub fn cache_entry_count(store: &Store) -> Result<usize, Error> {
    Ok(store.cache_list()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("20gb"), Ok(20_000_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert!(parse_size("GB").unwrap_err().contains("expected a number"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("-1GB").is_err());
    }
}
