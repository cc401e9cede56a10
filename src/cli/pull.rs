//! `cairn pull`, `cairn inspect` and `cairn cache`: the store's commands. Results go to
//! stdout (a digest, JSON, tables), progress and warnings to stderr.

use super::{CacheArgs, CacheCommand, Cli, InspectArgs, PullArgs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::registry::{self, human, Manifest, PullPolicy, Reference, RegistryOptions};
use crate::store::maintain::{self, PruneOptions};
use crate::store::Store;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// A reference from the command line; a malformed one is a usage error.
fn reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| Error::Usage(e.to_string()))
}

/// Registry options from the global flags.
pub fn registry_options(cli: &Cli) -> RegistryOptions {
    RegistryOptions {
        insecure: cli.insecure_registries.clone(),
        ..RegistryOptions::default()
    }
}

pub fn pull(cli: &Cli, args: &PullArgs) -> Result<()> {
    let store = Store::open(&cli.store_root())?.leased();
    let r = &args.reference;
    let platform = cli.platform(args.platform.as_ref());
    let opts = RegistryOptions {
        quiet: args.quiet,
        ..registry_options(cli)
    };
    let img = registry::pull(&store, r, &platform, cli.pull_policy(args.pull), &opts)?;
    if !args.quiet {
        let size: u64 = img.layers.iter().map(|l| l.size()).sum();
        eprintln!(
            "{r} ({platform}): manifest {}, {} layers, {}",
            img.manifest_digest,
            img.layers.len(),
            human(size)
        );
    }
    println!("{}", img.manifest_digest);
    Ok(())
}

pub fn inspect(cli: &Cli, args: &InspectArgs) -> Result<()> {
    let store = Store::open(&cli.store_root())?;
    let platform = cli.platform(args.platform.as_ref());
    let out = match Digest::parse(&args.reference) {
        Ok(d) => inspect_digest(&store, &d, &platform)?,
        Err(_) => {
            let r = reference(&args.reference)?;
            let opts = RegistryOptions {
                quiet: true,
                ..registry_options(cli)
            };
            let img = registry::pull(&store, &r, &platform, PullPolicy::Never, &opts)?;
            let manifest = store.read_blob(&img.manifest_digest)?;
            json!({
                "reference": r.to_string(),
                "digest": img.top_digest,
                "platform": platform.to_string(),
                "manifest_digest": img.manifest_digest,
                "manifest": parse_json(&manifest)?,
                "config_digest": img.config_digest,
                "config": parse_json(&img.config)?,
            })
        }
    };
    let text = serde_json::to_string_pretty(&out).expect("JSON value serializes");
    emit(&(text + "\n"))
}

/// A manifest (or index, resolved for `platform`) already in the store, by digest.
fn inspect_digest(store: &Store, d: &Digest, platform: &Platform) -> Result<Value> {
    let bytes = store.read_blob(d)?;
    let mut manifest_digest = d.clone();
    let mut m = registry::parse_manifest(d.as_str(), &bytes, None)?;
    let mut manifest_bytes = bytes;
    if let Manifest::Index(entries) = &m {
        manifest_digest = registry::select_platform(d.as_str(), entries, platform)?
            .digest
            .clone();
        manifest_bytes = store.read_blob(&manifest_digest)?;
        m = registry::parse_manifest(d.as_str(), &manifest_bytes, None)?;
    }
    let Manifest::Image { config, .. } = m else {
        return Err(Error::Internal(format!(
            "{manifest_digest} is a nested index"
        )));
    };
    let config_digest =
        Digest::parse(config.digest().as_ref()).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(json!({
        "digest": d,
        "platform": platform.to_string(),
        "manifest_digest": manifest_digest,
        "manifest": parse_json(&manifest_bytes)?,
        "config_digest": config_digest,
        "config": parse_json(&store.read_blob(&config_digest)?)?,
    }))
}

/// Writes a command's result to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Internal(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("stored JSON: {e}")))
}

pub fn cache(cli: &Cli, args: &CacheArgs) -> Result<()> {
    let store = Store::open(&cli.store_root())?;
    match &args.command {
        CacheCommand::Ls => ls(&store),
        CacheCommand::Du => {
            let u = maintain::usage(&store)?;
            let rows = [
                ("blobs", u.blobs),
                ("layers", u.layers),
                ("temp", u.temp),
                ("index", u.index),
            ];
            for (name, (n, bytes)) in rows {
                println!("{name:<8} {n:>8} {:>12}", human(bytes));
            }
            let mounts = crate::mounts::cache_mounts(&store);
            let mounts_bytes: u64 = mounts.iter().map(|m| m.bytes).sum();
            println!(
                "{:<8} {:>8} {:>12}",
                "mounts",
                mounts.len(),
                human(mounts_bytes)
            );
            let total = u.blobs.1 + u.layers.1 + u.temp.1 + u.index.1 + mounts_bytes;
            println!("{:<8} {:>8} {:>12}", "total", "", human(total));
            Ok(())
        }
        CacheCommand::Prune { mounts: true, .. } => {
            let privilege = crate::userns::Privilege::detect();
            let (n, bytes) = crate::mounts::remove_cache_mounts(&store, &privilege)?;
            println!("removed {n} cache mounts; freed {}", human(bytes));
            Ok(())
        }
        CacheCommand::Prune {
            keep_duration,
            max_size,
            all,
            registry,
            ..
        } => {
            let keep_duration = keep_duration
                .as_deref()
                .map(|s| {
                    humantime::parse_duration(s)
                        .map_err(|e| Error::Usage(format!("invalid --keep-duration {s:?}: {e}")))
                })
                .transpose()?;
            if let Some(r) = registry {
                return prune_registry(cli, r, keep_duration, *all);
            }
            let max_size = max_size
                .as_deref()
                .map(|s| {
                    maintain::parse_size(s).map_err(|e| Error::Usage(format!("--max-size: {e}")))
                })
                .transpose()?;
            let opts = PruneOptions {
                keep_duration,
                all: *all,
                max_size,
            };
            let r = maintain::prune(&store, &opts)?;
            if *all {
                let privilege = crate::userns::Privilege::detect();
                let (n, bytes) = crate::mounts::remove_cache_mounts(&store, &privilege)?;
                println!("removed {n} cache mounts; freed {}", human(bytes));
            }
            println!("{}", prune_summary(&r));
            if r.over_cap {
                eprintln!(
                    "cairn: warning: tags and running builds alone hold {}, more than --max-size",
                    human(r.kept_bytes)
                );
            }
            Ok(())
        }
        CacheCommand::Verify { repair } => verify(&store, *repair),
    }
}

/// `cairn cache prune --registry REF`: old entries of a registry cache.
fn prune_registry(cli: &Cli, r: &str, keep: Option<std::time::Duration>, all: bool) -> Result<()> {
    let r = reference(r)?;
    if keep.is_none() && !all {
        return Err(Error::Usage(
            "cache prune --registry: give --keep-duration (e.g. 7d) or --all".into(),
        ));
    }
    let p = crate::remote_cache::prune(&r, if all { None } else { keep }, &registry_options(cli))?;
    println!(
        "{}: removed {} cache entries, kept {}",
        r.name(),
        p.removed,
        p.kept
    );
    Ok(())
}

/// One line saying what a prune removed and what is left.
pub(crate) fn prune_summary(r: &maintain::PruneReport) -> String {
    format!(
        "removed {} blobs, {} layer dirs, {} cache entries, {} tags, {} temp leftovers, {} idle locks; freed {}, {} left",
        r.blobs,
        r.layers,
        r.entries,
        r.tags,
        r.temps,
        r.locks,
        human(r.bytes),
        human(r.kept_bytes)
    )
}

fn ls(store: &Store) -> Result<()> {
    let mut out = String::new();
    let blobs = maintain::blobs(store)?;
    let tags = store.tag_list()?;
    let _ = writeln!(
        out,
        "{:<56} {:<19} {:>10}  RESOLVED",
        "IMAGE", "DIGEST", "SIZE"
    );
    for (reference, tag) in &tags {
        let size: u64 = maintain::reachable(store, [tag.digest.clone()])
            .iter()
            .filter_map(|d| blobs.get(d))
            .sum();
        let _ = writeln!(
            out,
            "{reference:<56} {:<19} {:>10}  {}",
            format!("sha256:{}", tag.digest.short()),
            human(size),
            tag.resolved_at
        );
    }
    out.push('\n');
    let _ = writeln!(out, "{:<71} {:>10}", "BLOB", "SIZE");
    for (d, size) in &blobs {
        let _ = writeln!(out, "{d:<71} {:>10}", human(*size));
    }
    let mounts = crate::mounts::cache_mounts(store);
    if !mounts.is_empty() {
        let _ = writeln!(out, "\n{:<56} {:>8} {:>10}", "CACHE MOUNT", "FILES", "SIZE");
        for m in &mounts {
            let _ = writeln!(out, "{:<56} {:>8} {:>10}", m.id, m.files, human(m.bytes));
        }
    }
    let total: u64 = blobs.values().sum();
    let _ = writeln!(
        out,
        "\n{} images, {} blobs ({}), {} cache entries",
        tags.len(),
        blobs.len(),
        human(total),
        maintain::cache_entry_count(store)?
    );
    emit(&out)
}

fn verify(store: &Store, repair: bool) -> Result<()> {
    let r = maintain::verify(store, repair)?;
    for (d, actual) in &r.corrupt {
        println!("corrupt blob {d}: content is {actual}");
    }
    for e in &r.broken_entries {
        println!("cache entry {e} references a missing blob");
    }
    for t in &r.broken_tags {
        println!("tag {t} points to a missing manifest");
    }
    for (d, problem) in &r.broken_layers {
        println!("unpacked layer {d}: {problem}");
    }
    let verb = if r.repaired { "removed" } else { "found" };
    println!(
        "checked {} blobs and {} unpacked layers: {}",
        r.checked,
        r.layers_checked,
        if r.is_clean() {
            "all good".to_string()
        } else {
            format!(
                "{verb} {} corrupt blobs, {} broken cache entries, {} broken tags, {} broken unpacked layers",
                r.corrupt.len(),
                r.broken_entries.len(),
                r.broken_tags.len(),
                r.broken_layers.len()
            )
        }
    );
    if r.unchecked_files > 0 {
        eprintln!(
            "cairn: note: {} files in unpacked layers are not readable by this user and were not checked",
            r.unchecked_files
        );
    }
    if r.is_clean() || r.repaired {
        Ok(())
    } else {
        Err(crate::store::Error::Message(
            "the store has problems; run `cairn cache verify --repair`".into(),
        )
        .into())
    }
}
