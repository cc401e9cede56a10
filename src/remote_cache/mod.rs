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
//! export that fails is a warning unless `ignore-error=false`. Entries carry their creation
//! time ([`CREATED_ANNOTATION`]), which [`prune`] reads to delete old ones.

use crate::cache::CacheKey;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{BuildResult, RemoteCache, State};
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
        }
    }

    /// The state blob a remote lookup found for `key` in this build, if any.
    pub fn hit(&self, key: &CacheKey) -> Option<Digest> {
        self.hits.lock().ok()?.get(key).cloned()
    }

    /// The entry for `key` in cache `r`: its state blob, checked against the manifest.
    fn lookup_in(&self, store: &Store, r: &Reference, key: &CacheKey) -> Result<Option<Digest>> {
        let er = entry_ref(r, key);
        let Some(entry) = registry::remote::fetch_entry(store, &er, &self.opts)? else {
            return Ok(None);
        };
        if entry.config_media_type != STATE_MEDIA_TYPE {
            return Err(Error::Internal(format!(
                "{er} is not a cairn cache entry (config {})",
                entry.config_media_type
            )));
        }
        let state = State::load(store, &entry.config)?;
        let listed: Vec<&Digest> = state.layers.iter().map(|l| &l.digest).collect();
        let manifest: Vec<&Digest> = entry.layers.iter().map(|(d, _)| d).collect();
        if listed != manifest {
            return Err(Error::Internal(format!(
                "{er}: the entry's state lists other layers than its manifest"
            )));
        }
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

impl RemoteCache for RegistryCache {
    fn lookup(
        &self,
        store: &Store,
        key: &CacheKey,
    ) -> std::result::Result<Option<(Digest, String)>, String> {
        let mut warning = None;
        for (i, r) in self.from.iter().enumerate() {
            if self.failed.lock().map(|f| f.contains(&i)).unwrap_or(true) {
                continue;
            }
            match self.lookup_in(store, r, key) {
                Ok(Some(state)) => {
                    if let Ok(mut h) = self.hits.lock() {
                        h.insert(key.clone(), state.clone());
                    }
                    return Ok(Some((state, format!("registry cache {}", r.name()))));
                }
                Ok(None) => {}
                Err(e) => {
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
        for (r, blobs) in by_source.into_values() {
            registry::remote::fetch_blobs(store, &r, &blobs, &self.fetch_opts)?;
        }
        Ok(())
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

    #[test]
    fn one_entry_per_key_tagged_with_its_hex() {
        let r = Reference::parse("reg:5000/team/cache:ignored").unwrap();
        let key = CacheKey(Digest::of_bytes(b"step"));
        let e = entry_ref(&r, &key);
        assert_eq!(e.tag.as_deref(), Some(key.hex()));
        assert_eq!(e.name(), "reg:5000/team/cache");
    }
}
