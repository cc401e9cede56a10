//! [`RegistryCache`]: cairn's step cache shared through any OCI registry
//! (`--cache-from type=registry,ref=…`, `--cache-to type=registry,ref=…`).
//!
//! cairn's keys name a step's result strictly (instruction + inputs), so the registry only
//! needs to answer "what did key K produce?". Each entry is one small OCI manifest tagged
//! with the key's hex: its config is the step's state blob (image config + layer list,
//! media type [`STATE_MEDIA_TYPE`]) and its layers are that state's layers. So:
//! - a lookup is one manifest `GET` (and the small state blob); layers are fetched only
//!   when a later step misses and needs the root file system, or the output needs bytes
//!   ([`RegistryCache::materialize`]);
//! - concurrent writers never share an index to overwrite: each writes its own tags;
//! - an entry, once written, is never replaced: export asks (`HEAD`) before writing and
//!   skips keys that exist, and a reader checks that the state lists exactly the
//!   manifest's layers (the registry accepted the manifest only once every blob was there,
//!   and the manifest goes last, so an interrupted export leaves no entry with missing blobs).
//!
//! An import that fails (registry down, bad entry) is a warning and the step is built; an
//! export that fails is a warning unless `ignore-error=false`.
//!
//! An entry is someone else's claim, checked before it is used ([`check_entry`]): its state
//! must have the parent's history with the step's entry on top, add at most the one layer
//! the step may make, and carry exactly the config the step's instruction gives (Env,
//! WorkingDir, Cmd, …), which cairn knows without running the step. A layer an entry
//! brings must, once fetched, hash to its digest and decompress to its diffID
//! ([`RegistryCache::materialize`]); one that does not is remembered as bad, and every
//! entry listing it is refused from then on, so the build that met it runs again and
//! builds those steps (`cli::build`). Nothing of a refused entry is recorded: the local
//! cache index only ever names states this machine built or checked. Entries carry their creation
//! time ([`CREATED_ANNOTATION`]), which [`prune`] reads to delete old ones.

use crate::cache::CacheKey;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{BuildResult, Expect, RemoteCache, State};
use crate::image::LayerDesc;
use crate::registry::{self, Reference, RegistryOptions};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The media type of an entry's config: a step's [`State`] as cairn stores it.
pub const STATE_MEDIA_TYPE: &str = "application/vnd.cairn.step-state.v1+json";

/// The annotation holding when an entry was written (RFC 3339, UTC).
pub const CREATED_ANNOTATION: &str = "org.cairn.created";
/// The annotation holding the entry's cache key.
pub const KEY_ANNOTATION: &str = "org.cairn.cache-key";

/// Which steps an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// The final stage's steps only (BuildKit's default).
    #[default]
    Min,
    /// Every stage's steps.
    Max,
}

/// A parsed `--cache-to type=registry,ref=…[,mode=min|max][,ignore-error=true|false]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub reference: Reference,
    pub mode: ExportMode,
    /// A failed export is only a warning (the default).
    pub ignore_error: bool,
}

fn spec_pairs<'a>(flag: &str, spec: &'a str) -> Result<Vec<(&'a str, &'a str)>> {
    let pairs = spec
        .split(',')
        .map(|p| {
            p.split_once('=').ok_or_else(|| {
                Error::Usage(format!("{flag} {spec}: expected key=value, got {p:?}"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    match pairs.iter().find(|(k, _)| *k == "type").map(|(_, v)| *v) {
        Some("registry") => Ok(pairs),
        Some(other) => Err(Error::Usage(format!(
            "{flag} {spec}: unsupported type {other:?} (cairn shares its cache through type=registry)"
        ))),
        None => Err(Error::Usage(format!("{flag} {spec}: missing type=registry"))),
    }
}

fn cache_ref(flag: &str, spec: &str, v: &str) -> Result<Reference> {
    let r = Reference::parse(v).map_err(|e| Error::Usage(format!("{flag} {spec}: ref: {e}")))?;
    if r.digest.is_some() {
        return Err(Error::Usage(format!(
            "{flag} {spec}: ref names a repository (REGISTRY/NAME), not a digest"
        )));
    }
    Ok(r)
}

/// Parses `--cache-from type=registry,ref=REG/NAME[:TAG]`.
pub fn parse_cache_from(spec: &str) -> Result<Reference> {
    let mut reference = None;
    for (k, v) in spec_pairs("--cache-from", spec)? {
        match k {
            "type" => {}
            "ref" => reference = Some(cache_ref("--cache-from", spec, v)?),
            _ => {
                return Err(Error::Usage(format!(
                    "--cache-from {spec}: unknown key {k:?} (expected type=, ref=)"
                )))
            }
        }
    }
    reference.ok_or_else(|| Error::Usage(format!("--cache-from {spec}: missing ref=")))
}

/// Parses `--cache-to type=registry,ref=REG/NAME[:TAG][,mode=min|max][,ignore-error=BOOL]`.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo> {
    let mut reference = None;
    let mut mode = ExportMode::Min;
    let mut ignore_error = true;
    for (k, v) in spec_pairs("--cache-to", spec)? {
        match (k, v) {
            ("type", _) => {}
            ("ref", v) => reference = Some(cache_ref("--cache-to", spec, v)?),
            ("mode", "min") => mode = ExportMode::Min,
            ("mode", "max") => mode = ExportMode::Max,
            ("ignore-error", "true") => ignore_error = true,
            ("ignore-error", "false") => ignore_error = false,
            // BuildKit options that change nothing for cairn's entries.
            ("oci-mediatypes" | "image-manifest" | "compression", _) => {}
            (k @ ("mode" | "ignore-error"), v) => {
                return Err(Error::Usage(format!(
                    "--cache-to {spec}: {k}={v:?}: expected {}",
                    if k == "mode" {
                        "min or max"
                    } else {
                        "true or false"
                    }
                )))
            }
            (k, _) => {
                return Err(Error::Usage(format!(
                "--cache-to {spec}: unknown key {k:?} (expected type=, ref=, mode=, ignore-error=)"
            )))
            }
        }
    }
    let reference =
        reference.ok_or_else(|| Error::Usage(format!("--cache-to {spec}: missing ref=")))?;
    Ok(CacheTo {
        reference,
        mode,
        ignore_error,
    })
}

/// The reference of `key`'s entry in the cache repository `r`.
fn entry_ref(r: &Reference, key: &CacheKey) -> Reference {
    Reference {
        tag: Some(key.hex().to_string()),
        digest: None,
        ..r.clone()
    }
}

/// The caches a build reads (`--cache-from`), in order.
pub struct RegistryCache {
    from: Vec<Reference>,
    /// For lookups (quiet: one small manifest and blob per step).
    opts: RegistryOptions,
    /// For layer fetches, which report their progress as pulls do.
    fetch_opts: RegistryOptions,
    /// The state blob of each key a remote lookup hit.
    hits: Mutex<BTreeMap<CacheKey, Digest>>,
    /// Where each layer of a remote hit can be fetched.
    sources: Mutex<BTreeMap<Digest, Reference>>,
    /// Caches that failed once (unreachable, refused): not asked again in this build.
    failed: Mutex<BTreeSet<usize>>,
    /// What an entry's layers must be checked against, and what was found.
    layers: Mutex<Layers>,
}

/// The layers remote entries added, and what their checks found.
#[derive(Default)]
struct Layers {
    /// The diffID an entry claims for the layer it adds (blob → (diffID, entry)).
    claimed: BTreeMap<Digest, (Digest, Reference)>,
    /// Blobs fetched and decompressed to the diffID claimed for them.
    verified: BTreeSet<(Digest, Digest)>,
    /// Blob and diffID pairs that failed: the blob could not be fetched, did not hash to
    /// its digest, or did not decompress to the diffID.
    bad: BTreeSet<(Digest, Digest)>,
}

impl RegistryCache {
    pub fn new(from: Vec<Reference>, opts: RegistryOptions) -> RegistryCache {
        RegistryCache {
            from,
            opts: RegistryOptions {
                quiet: true,
                ..opts.clone()
            },
            fetch_opts: opts,
            hits: Mutex::default(),
            sources: Mutex::default(),
            failed: Mutex::default(),
            layers: Mutex::default(),
        }
    }

    /// How many layers were found bad so far: when a failed build raised it, running the
    /// build again builds the steps whose entries listed them.
    pub fn bad_layers(&self) -> usize {
        self.layers.lock().map(|l| l.bad.len()).unwrap_or(0)
    }

    /// The state blob a remote lookup found for `key` in this build, if any.
    pub fn hit(&self, key: &CacheKey) -> Option<Digest> {
        self.hits.lock().ok()?.get(key).cloned()
    }

    /// The entry for `key` in cache `r`: its state blob, checked against the manifest and
    /// against what the step must produce. `Err(Refused)` is an entry that is there but
    /// not used (the step is built); other errors are the cache failing.
    fn lookup_in(
        &self,
        store: &Store,
        r: &Reference,
        key: &CacheKey,
        expect: &Expect<'_>,
    ) -> std::result::Result<Option<Digest>, LookupError> {
        let er = entry_ref(r, key);
        let Some(entry) = registry::remote::fetch_entry(store, &er, &self.opts)? else {
            return Ok(None);
        };
        if entry.config_media_type != STATE_MEDIA_TYPE {
            return Err(Error::Internal(format!(
                "{er} is not a cairn cache entry (config {})",
                entry.config_media_type
            ))
            .into());
        }
        let state = State::load(store, &entry.config)?;
        let listed: Vec<&Digest> = state.layers.iter().map(|l| &l.digest).collect();
        let manifest: Vec<&Digest> = entry.layers.iter().map(|(d, _)| d).collect();
        if listed != manifest {
            return Err(Error::Internal(format!(
                "{er}: the entry's state lists other layers than its manifest"
            ))
            .into());
        }
        if let Err(why) = check_entry(expect, &state) {
            return Err(LookupError::Refused(format!(
                "cache entry {er} ({}) disagrees with the step: {why}; building the step",
                entry.config
            )));
        }
        let mut layers = self.layers.lock().expect("layers lock");
        for l in &state.layers {
            let pair = (l.digest.clone(), l.diff_id.clone());
            if !layers.bad.contains(&pair) || layers.verified.contains(&pair) {
                continue;
            }
            // This build may have made the layer itself since (a step built again gives
            // the same bytes): then the pair is checked here, on the local blob.
            if store.has_blob(&l.digest) && decompresses_to(store, &l.digest, &l.diff_id)? {
                layers.verified.insert(pair);
                continue;
            }
            return Err(LookupError::Refused(format!(
                "cache entry {er} lists layer {} that failed its check; building the step",
                l.digest
            )));
        }
        // Every layer this build does not have in the parent is the entry's claim: the
        // one the step added, and below it any another machine's run of an earlier step
        // gave (see `check_entry`).
        for (i, l) in state.layers.iter().enumerate() {
            if expect.parent.layers.get(i) != Some(l) {
                layers
                    .claimed
                    .entry(l.digest.clone())
                    .or_insert_with(|| (l.diff_id.clone(), er.clone()));
            }
        }
        drop(layers);
        let mut sources = self.sources.lock().expect("sources lock");
        for l in &state.layers {
            registry::remember_location(store, &l.digest, &r.registry, &r.repository);
            sources
                .entry(l.digest.clone())
                .or_insert_with(|| er.clone());
        }
        Ok(Some(entry.config))
    }
}

/// Why a lookup did not give a hit.
enum LookupError {
    /// The cache could not be read: not asked again in this build.
    Failed(Error),
    /// This entry is not used; the cache still is.
    Refused(String),
}

impl<E: Into<Error>> From<E> for LookupError {
    fn from(e: E) -> Self {
        LookupError::Failed(e.into())
    }
}

/// Whether `got`, a remote entry's state, is what the step `expect` describes can give:
/// as many layers as the parent plus at most the one the step may add, diffIDs that are
/// its layers', the parent's history with the step's entry on top, and the config the
/// instruction gives — everything but the times, which differ between machines. `Err`
/// says what differs.
///
/// The layers below the step's own are not required to be this build's: an earlier step
/// that is not reproducible (it writes a random or a time) gives other bytes on each
/// machine, and an entry built on another machine's run of it is still a whole, consistent
/// image, taken whole (its layers are checked against their diffIDs when fetched).
pub fn check_entry(expect: &Expect<'_>, got: &State) -> std::result::Result<(), String> {
    let parent = expect.parent;
    let p = parent.layers.len();
    if got.layers.len() < p {
        return Err(format!(
            "it has {} layers, fewer than the parent step's {p}",
            got.layers.len()
        ));
    }
    let added = got.layers.len() - p;
    if added > usize::from(expect.may_add_layer) {
        return Err(format!("it adds {added} layers"));
    }
    let diff_ids: Vec<&Digest> = got.layers.iter().map(|l| &l.diff_id).collect();
    if got.config.rootfs.diff_ids.iter().collect::<Vec<_>>() != diff_ids {
        return Err("its config's diff_ids are not its layers'".into());
    }
    let want = &expect.config_only.config;
    if got.config.history.len() != want.history.len() {
        return Err(format!(
            "its history has {} entries, the step gives {}",
            got.config.history.len(),
            want.history.len()
        ));
    }
    let mut a = got.config.clone();
    let mut b = want.clone();
    if let (Some(last), Some(_)) = (a.history.last(), b.history.last()) {
        if last.empty_layer.unwrap_or(false) != (added == 0) {
            return Err("its history disagrees with its layers".into());
        }
    }
    // Times differ between machines (SOURCE_DATE_EPOCH or the clock); the step's own
    // history entry says whether it made a layer, checked above.
    for c in [&mut a, &mut b] {
        c.created = None;
        c.rootfs = Default::default();
        for h in &mut c.history {
            h.created = None;
        }
        if let Some(last) = c.history.last_mut() {
            last.empty_layer = None;
        }
    }
    if a == b {
        return Ok(());
    }
    let (ja, jb) = (
        serde_json::to_value(&a).unwrap_or_default(),
        serde_json::to_value(&b).unwrap_or_default(),
    );
    let mut differ = Vec::new();
    for (k, va) in ja.as_object().into_iter().flatten() {
        if k == "config" {
            for (ck, cv) in va.as_object().into_iter().flatten() {
                if jb.pointer(&format!("/config/{ck}")) != Some(cv) {
                    differ.push(ck.clone());
                }
            }
            for ck in jb["config"].as_object().into_iter().flatten().map(|x| x.0) {
                if va.get(ck).is_none() {
                    differ.push(ck.clone());
                }
            }
        } else if jb.get(k) != Some(va) {
            differ.push(k.clone());
        }
    }
    for k in jb.as_object().into_iter().flatten().map(|x| x.0) {
        if ja.get(k).is_none() {
            differ.push(k.clone());
        }
    }
    differ.sort();
    differ.dedup();
    Err(format!(
        "its config differs in {}",
        if differ.is_empty() {
            "its details".to_string()
        } else {
            differ.join(", ")
        }
    ))
}

/// Whether blob `d` (in the store) decompresses to `diff_id`.
fn decompresses_to(store: &Store, d: &Digest, diff_id: &Digest) -> Result<bool> {
    let path = store.blob_path(d);
    let io = |e| crate::store::Error::Io {
        path: path.clone(),
        source: e,
    };
    let file = store.open_blob(d)?;
    let mut reader = crate::codec::decompressed(file).map_err(io)?;
    let mut hashing = crate::digest::HashingWriter::new(std::io::sink());
    std::io::copy(&mut reader, &mut hashing).map_err(io)?;
    Ok(&hashing.finish().1 == diff_id)
}

impl RemoteCache for RegistryCache {
    fn lookup(
        &self,
        store: &Store,
        key: &CacheKey,
        expect: &Expect<'_>,
    ) -> std::result::Result<Option<(Digest, String)>, String> {
        let mut warning = None;
        for (i, r) in self.from.iter().enumerate() {
            if self.failed.lock().map(|f| f.contains(&i)).unwrap_or(true) {
                continue;
            }
            match self.lookup_in(store, r, key, expect) {
                Ok(Some(state)) => {
                    if let Ok(mut h) = self.hits.lock() {
                        h.insert(key.clone(), state.clone());
                    }
                    return Ok(Some((state, format!("registry cache {}", r.name()))));
                }
                Ok(None) => {}
                Err(LookupError::Refused(w)) => {
                    if let Ok(mut h) = self.hits.lock() {
                        h.remove(key);
                    }
                    warning = Some(w);
                }
                Err(LookupError::Failed(e)) => {
                    if let Ok(mut f) = self.failed.lock() {
                        f.insert(i);
                    }
                    warning = Some(format!(
                        "cache import from {} failed ({e}); not asking it again in this build",
                        r.name()
                    ));
                }
            }
        }
        match warning {
            Some(w) => Err(w),
            None => Ok(None),
        }
    }

    fn materialize(&self, store: &Store, layers: &[LayerDesc]) -> Result<()> {
        let mut by_source: BTreeMap<String, (Reference, Vec<(Digest, u64)>)> = BTreeMap::new();
        let sources = self.sources.lock().expect("sources lock").clone();
        for l in layers.iter().filter(|l| !store.has_blob(&l.digest)) {
            let Some(r) = sources.get(&l.digest) else {
                continue;
            };
            let e = by_source
                .entry(r.to_string())
                .or_insert_with(|| (r.clone(), Vec::new()));
            if !e.1.iter().any(|(d, _)| d == &l.digest) {
                e.1.push((l.digest.clone(), l.size));
            }
        }
        // Every failure is collected, so one more run of the build refuses every entry
        // that listed a bad layer.
        let mut failures: Vec<(Digest, String)> = Vec::new();
        for (r, blobs) in by_source.into_values() {
            for (d, got) in registry::remote::fetch_blobs(store, &r, &blobs, &self.fetch_opts)? {
                match got {
                    Ok(()) => {}
                    // The store failing (disk full) is not the cache's fault.
                    Err(registry::Error::Store(e)) => return Err(e.into()),
                    Err(e) => failures.push((d, format!("cache entry {r}: {e}"))),
                }
            }
        }
        // A layer an entry added must decompress to the diffID it claims.
        let claims: Vec<(LayerDesc, Option<Reference>)> = {
            let l = self.layers.lock().expect("layers lock");
            layers
                .iter()
                .filter(|x| !l.verified.contains(&(x.digest.clone(), x.diff_id.clone())))
                .filter_map(|x| {
                    let (claimed, er) = l.claimed.get(&x.digest)?;
                    Some((x.clone(), (claimed == &x.diff_id).then(|| er.clone())))
                })
                .collect()
        };
        for (l, er) in claims {
            if failures.iter().any(|(d, _)| d == &l.digest) || !store.has_blob(&l.digest) {
                continue;
            }
            let Some(er) = er else { continue };
            if decompresses_to(store, &l.digest, &l.diff_id)? {
                let mut x = self.layers.lock().expect("layers lock");
                x.verified.insert((l.digest.clone(), l.diff_id.clone()));
            } else {
                failures.push((
                    l.digest.clone(),
                    format!(
                        "cache entry {er}: layer {} does not decompress to the diffID {} its config names",
                        l.digest, l.diff_id
                    ),
                ));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let mut x = self.layers.lock().expect("layers lock");
        for (d, _) in &failures {
            for l in layers.iter().filter(|l| &l.digest == d) {
                x.bad.insert((l.digest.clone(), l.diff_id.clone()));
            }
        }
        let text: Vec<String> = failures.into_iter().map(|(_, m)| m).collect();
        Err(Error::Internal(format!(
            "the registry cache's layers failed their checks: {}",
            text.join("; ")
        )))
    }

    fn miss_note(&self) -> String {
        let names: Vec<String> = self.from.iter().map(|r| r.name()).collect();
        format!(
            "not in the registry cache ({}) either: no machine has built this key yet",
            names.join(", ")
        )
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Entries written now.
    pub written: usize,
    /// Entries the cache already had (never replaced).
    pub existing: usize,
}

/// Writes the entries of `result`'s steps (all of them with `mode=max`, the final stage's
/// with `mode=min`) that `to` lacks. Layers a remote hit left unfetched are fetched first
/// when an entry needs them.
pub fn export(
    store: &Store,
    to: &CacheTo,
    result: &BuildResult,
    imported: Option<&RegistryCache>,
    opts: &RegistryOptions,
) -> Result<Exported> {
    let opts = RegistryOptions {
        quiet: true,
        ..opts.clone()
    };
    let last_stage = result.steps.last().map(|s| s.stage);
    let mut seen = BTreeSet::new();
    let mut out = Exported::default();
    for step in &result.steps {
        if to.mode == ExportMode::Min && Some(step.stage) != last_stage {
            continue;
        }
        if !seen.insert(step.key.clone()) {
            continue;
        }
        let state_digest = match store.cache_get(&step.key)? {
            Some(e) => e.state,
            None => match imported.and_then(|c| c.hit(&step.key)) {
                Some(d) => d,
                None => continue,
            },
        };
        let er = entry_ref(&to.reference, &step.key);
        if registry::remote::manifest_exists(&er, &opts)? {
            out.existing += 1;
            continue;
        }
        let state = State::load(store, &state_digest)?;
        if let Some(c) = imported {
            if state.layers.iter().any(|l| !store.has_blob(&l.digest)) {
                c.materialize(store, &state.layers)?;
            }
        }
        let manifest =
            store.put_bytes(&entry_manifest(store, &step.key, &state_digest, &state)?)?;
        registry::push(store, &manifest, &er, &opts)?;
        out.written += 1;
    }
    Ok(out)
}

/// The OCI manifest of one entry: the state blob as config, its layers as layers.
fn entry_manifest(
    store: &Store,
    key: &CacheKey,
    state_digest: &Digest,
    state: &State,
) -> Result<Vec<u8>> {
    let size = std::fs::metadata(store.blob_path(state_digest))
        .map_err(|e| crate::store::Error::Io {
            path: store.blob_path(state_digest),
            source: e,
        })?
        .len();
    let layers: Vec<serde_json::Value> = state
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": crate::image::oci_layer_media_type(&l.media_type),
                "digest": l.digest,
                "size": l.size,
            })
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::image::MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": STATE_MEDIA_TYPE, "digest": state_digest, "size": size},
        "layers": layers,
        "annotations": {
            KEY_ANNOTATION: key.to_string(),
            CREATED_ANNOTATION: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        },
    });
    Ok(crate::image::to_canonical_json(&m))
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub kept: usize,
}

/// Deletes the entries of cache repository `r` written longer than `keep` ago (all of them
/// with `None`). Other tags of the repository are left alone; the registry frees the blobs
/// at its next garbage collection.
pub fn prune(
    r: &Reference,
    keep: Option<std::time::Duration>,
    opts: &RegistryOptions,
) -> Result<Pruned> {
    let now = std::time::SystemTime::now();
    let mut out = Pruned::default();
    for tag in registry::remote::list_tags(r, opts)? {
        if tag.len() != 64 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let er = Reference {
            tag: Some(tag),
            digest: None,
            ..r.clone()
        };
        let Some((bytes, digest)) = registry::remote::get_manifest(&er, opts)? else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if m.pointer("/config/mediaType").and_then(|v| v.as_str()) != Some(STATE_MEDIA_TYPE) {
            continue;
        }
        let created = m
            .pointer(&format!(
                "/annotations/{}",
                CREATED_ANNOTATION.replace('/', "~1")
            ))
            .and_then(|v| v.as_str())
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        let old = match (keep, created) {
            (None, _) => true,
            (Some(k), Some(c)) => now.duration_since(c).is_ok_and(|age| age > k),
            // Written by a cairn that recorded no time: age unknown, kept.
            (Some(_), None) => false,
        };
        if old {
            registry::remote::delete_manifest(&er, &digest, opts)?;
            out.removed += 1;
        } else {
            out.kept += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_cache_specs() {
        let to = parse_cache_to("type=registry,ref=reg:5000/team/cache,mode=max").unwrap();
        assert_eq!(to.reference.name(), "reg:5000/team/cache");
        assert_eq!(to.mode, ExportMode::Max);
        assert!(to.ignore_error);
        let to = parse_cache_to("type=registry,ref=reg:5000/c:t,ignore-error=false").unwrap();
        assert_eq!((to.mode, to.ignore_error), (ExportMode::Min, false));
        assert!(parse_cache_to("type=local,dest=/tmp/c").is_err());
        assert!(parse_cache_to("type=registry").is_err());
        assert!(parse_cache_to("type=registry,ref=r:5000/c,mode=most").is_err());
        assert!(parse_cache_to("type=registry,ref=r:5000/c,bogus=1").is_err());
        assert!(parse_cache_to("ref=r:5000/c").is_err());
        let from = parse_cache_from("type=registry,ref=reg:5000/team/cache").unwrap();
        assert_eq!(from.name(), "reg:5000/team/cache");
        assert!(parse_cache_from("type=registry,ref=reg:5000/c@sha256:0000000000000000000000000000000000000000000000000000000000000000").is_err());
    }

    fn layer(n: u8) -> LayerDesc {
        LayerDesc {
            digest: Digest::of_bytes(&[n]),
            size: 1,
            media_type: crate::codec::MEDIA_TYPE_TAR_GZIP.into(),
            diff_id: Digest::of_bytes(&[n, n]),
        }
    }

    /// A parent state with one layer, the config-only result of `ENV A=1` or of a RUN on
    /// it, and the result a machine building it would save (another time, maybe a layer).
    fn states(run: bool) -> (State, State, State) {
        let mut parent = State {
            config: crate::image::ImageConfig::default(),
            layers: vec![layer(1)],
        };
        parent.config.rootfs.diff_ids = vec![layer(1).diff_id];
        parent.config.history.push(crate::image::History {
            created: Some("2020-01-01T00:00:00Z".into()),
            created_by: Some("base".into()),
            ..Default::default()
        });
        let hist = |t: &str| crate::image::History {
            created: Some(t.into()),
            created_by: Some(if run { "RUN x" } else { "ENV A=1" }.into()),
            comment: Some("cairn".into()),
            ..Default::default()
        };
        let mut config_only = parent.clone();
        if !run {
            config_only.config.config.env.push("A=1".into());
        }
        config_only
            .config
            .push_step(hist("1970-01-01T00:00:00Z"), None);
        let mut built = parent.clone();
        built.config.history[0].created = Some("2021-05-05T00:00:00Z".into());
        if run {
            built
                .config
                .push_step(hist("2024-01-01T00:00:00Z"), Some(layer(2).diff_id));
            built.layers.push(layer(2));
        } else {
            built.config.config.env.push("A=1".into());
            built.config.push_step(hist("2024-01-01T00:00:00Z"), None);
        }
        (parent, config_only, built)
    }

    #[test]
    fn an_entry_must_be_what_the_step_gives() {
        for run in [false, true] {
            let (parent, config_only, built) = states(run);
            let expect = Expect {
                parent: &parent,
                config_only: &config_only,
                may_add_layer: run,
            };
            assert_eq!(check_entry(&expect, &built), Ok(()), "run: {run}");
            let refused = |edit: &dyn Fn(&mut State), why: &str| {
                let mut bad = built.clone();
                edit(&mut bad);
                let got = check_entry(&expect, &bad).expect_err(why);
                assert!(got.contains(why), "run {run}: {got:?} should say {why:?}");
            };
            refused(&|s| s.config.config.env.push("POISON=1".into()), "Env");
            refused(
                &|s| s.config.config.working_dir = Some("/x".into()),
                "WorkingDir",
            );
            refused(&|s| s.config.config.cmd = Some(vec!["sh".into()]), "Cmd");
            refused(
                &|s| s.config.history.last_mut().unwrap().created_by = Some("RUN y".into()),
                "history",
            );
            refused(
                &|s| s.config.history.pop().map(|_| ()).unwrap(),
                "history has",
            );
            refused(
                &|s| s.config.rootfs.diff_ids.push(layer(9).diff_id),
                "diff_ids",
            );
            refused(
                &|s| {
                    s.layers.push(layer(3));
                    s.config
                        .push_step(Default::default(), Some(layer(3).diff_id));
                },
                "adds",
            );
            refused(&|s| s.layers.clear(), "layers");
        }
        // A metadata step that claims a layer.
        let (parent, config_only, mut built) = states(false);
        built.layers.push(layer(2));
        built.config.rootfs.diff_ids.push(layer(2).diff_id);
        let expect = Expect {
            parent: &parent,
            config_only: &config_only,
            may_add_layer: false,
        };
        assert!(check_entry(&expect, &built)
            .unwrap_err()
            .contains("adds 1 layers"));
    }

    #[test]
    fn one_entry_per_key_tagged_with_its_hex() {
        let r = Reference::parse("reg:5000/team/cache:ignored").unwrap();
        let key = CacheKey(Digest::of_bytes(b"step"));
        let e = entry_ref(&r, &key);
        assert_eq!(e.tag.as_deref(), Some(key.hex()));
        assert_eq!(e.name(), "reg:5000/team/cache");
    }
}
