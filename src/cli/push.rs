//! `cairn push` and the push half of `cairn build --push` / `-o type=registry`: find the
//! image in the store (a tag a build wrote, a pulled tag, or a manifest digest), give its
//! layers the compression asked for, and push it. The pushed `REF@DIGEST` goes to stdout
//! (or into the `--format json` object); progress to stderr.

use super::{Cli, OutputFormat, PushArgs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::layer::Compression;
use crate::platform::Platform;
use crate::registry::{self, Manifest, Pushed, Reference, RegistryOptions};
use crate::store::Store;
use std::collections::BTreeMap;

/// The store record naming the manifest a build tagged `r` produced last.
fn built_record(r: &Reference) -> String {
    format!("built-image {r}")
}

/// Remembers the manifest a build produced under each of its `-t` tags, so `cairn push TAG`
/// finds it later. (Kept apart from the pull tag index, which `FROM` resolution reads.)
pub(super) fn remember_built(store: &Store, tags: &[String], manifest: &Digest) -> Result<()> {
    for t in tags {
        if let Ok(r) = Reference::parse(t) {
            store.record_put_if_changed(&built_record(&r), manifest.as_str().as_bytes())?;
        }
    }
    Ok(())
}

/// The image manifest `source` names in the store: a manifest digest, the last build
/// tagged so, or a pulled tag (an index resolved for `platform`).
fn find_image(store: &Store, source: &str, platform: &Platform) -> Result<Digest> {
    let digest = match Digest::parse(source) {
        Ok(d) => d,
        Err(_) => {
            let r = Reference::parse(source).map_err(|e| Error::Usage(e.to_string()))?;
            let built = store
                .record_get(&built_record(&r))?
                .and_then(|b| Digest::parse(String::from_utf8_lossy(&b).trim()).ok());
            let pulled = || -> Result<Option<Digest>> {
                if let Some(d) = &r.digest {
                    return Ok(Some(d.clone()));
                }
                let key = r.tag_key().unwrap_or_default();
                Ok(store.tag_get(&key)?.map(|t| t.digest))
            };
            match built.filter(|d| store.has_blob(d)) {
                Some(d) => d,
                None => pulled()?.ok_or_else(|| {
                    Error::Usage(format!(
                        "{r}: no such image in the store (build it with -t {source}, or pull it)"
                    ))
                })?,
            }
        }
    };
    if !store.has_blob(&digest) {
        return Err(Error::Usage(format!(
            "{source}: manifest {digest} is not in the store"
        )));
    }
    let bytes = store.read_blob(&digest)?;
    match registry::parse_manifest(digest.as_str(), &bytes, None)? {
        Manifest::Image { .. } => Ok(digest),
        Manifest::Index(entries) => Ok(registry::select_platform(source, &entries, platform)?
            .digest
            .clone()),
    }
}

/// Pushes the stored image `manifest` to each of `targets` in `compression`.
pub(super) fn push_image(
    cli: &Cli,
    store: &Store,
    manifest: &Digest,
    targets: &[Reference],
    compression: Compression,
    quiet: bool,
    rep: Option<&Reporter>,
) -> Result<Vec<Pushed>> {
    let manifest = registry::prepare_push(store, manifest, compression)?;
    let opts = RegistryOptions {
        quiet,
        events: rep.cloned(),
        ..super::pull::registry_options(cli)
    };
    let say = |msg: String| match rep {
        Some(r) => r.info(&msg),
        None if !quiet => eprintln!("{msg}"),
        None => {}
    };
    let mut out = Vec::new();
    for t in targets {
        say(format!("pushing {t}"));
        let p = registry::push(store, &manifest, t, &opts)?;
        say(format!(
            "{t}: digest {} ({} uploaded, {} mounted, {} already there; {} sent)",
            p.digest,
            p.uploaded,
            p.mounted,
            p.present,
            registry::human(p.uploaded_bytes)
        ));
        if let Some(r) = rep {
            r.exported(&format!("{}@{}", t.name(), p.digest));
        }
        out.push(p);
    }
    Ok(out)
}

/// `name@digest` for each push, comma-separated (for the flat JSON result).
pub(super) fn pushed_refs(pushed: &[Pushed]) -> String {
    pushed
        .iter()
        .map(|p| format!("{}@{}", p.reference.name(), p.digest))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn push(cli: &Cli, args: &PushArgs) -> Result<()> {
    let store = Store::open(&cli.store_root())?;
    let platform = match &args.platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| Error::Usage(e.to_string()))?,
        None => Platform::host(),
    };
    let dest = args.destination.as_deref().unwrap_or(&args.image);
    if Digest::parse(dest).is_ok() {
        return Err(Error::Usage(format!(
            "{dest}: a digest names no registry; give a destination REGISTRY/NAME[:TAG]"
        )));
    }
    let target = Reference::parse(dest).map_err(|e| Error::Usage(e.to_string()))?;
    let manifest = find_image(&store, &args.image, &platform)?;
    let compression = args
        .compression
        .parse::<Compression>()
        .map_err(|e| Error::Usage(format!("--compression: {e}")))?;
    let pushed = push_image(
        cli,
        &store,
        &manifest,
        &[target],
        compression,
        args.quiet,
        None,
    )?;
    let p = &pushed[0];
    match args.format {
        OutputFormat::Text => println!("{}@{}", p.reference.name(), p.digest),
        OutputFormat::Json => {
            let mut m = BTreeMap::new();
            m.insert("reference", p.reference.to_string());
            m.insert("digest", p.digest.to_string());
            m.insert("pushed", pushed_refs(&pushed));
            m.insert("uploaded_blobs", p.uploaded.to_string());
            m.insert("mounted_blobs", p.mounted.to_string());
            m.insert("existing_blobs", p.present.to_string());
            m.insert("uploaded_bytes", p.uploaded_bytes.to_string());
            println!("{}", serde_json::to_string(&m).unwrap_or_default());
        }
    }
    Ok(())
}
