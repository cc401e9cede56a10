//! Small registry operations for a build cache kept in a registry
//! ([`crate::remote_cache`]): read one manifest and its config blob by tag without its
//! layers ([`fetch_entry`]), fetch chosen blobs later ([`fetch_blobs`]), ask whether a
//! tag exists ([`manifest_exists`]); and for pruning, list tags ([`list_tags`]), read a
//! manifest ([`get_manifest`]) and delete one ([`delete_manifest`]). Everything fetched is
//! verified and stored like a pull.

use super::client::Client;
use super::manifest::{self, Manifest, MAX_CONFIG};
use super::progress::Progress;
use super::pull::block_on;
use super::{Error, Reference, RegistryOptions};
use crate::digest::Digest;
use crate::store::Store;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{Method, StatusCode};

/// An image manifest read by tag: its digest, its config and its layers (digest, size).
/// The manifest and config blobs are in the store; the layers are not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manifest: Digest,
    pub config: Digest,
    pub config_media_type: String,
    pub layers: Vec<(Digest, u64)>,
}

/// The manifest `r` names (by tag or digest) and its config blob, or `None` when the
/// registry has no such manifest.
pub fn fetch_entry(
    store: &Store,
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Option<Entry>, Error> {
    let client = Client::new(r, opts)?;
    let name = name_of(r);
    block_on(async {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            manifest::ACCEPT.parse().expect("static header value"),
        );
        let resp = client
            .send(Method::GET, &format!("manifests/{name}"), "manifest", h)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(client.http_error("manifest", resp.status()));
        }
        let bytes = super::client::read_limited(resp, manifest::MAX_MANIFEST)
            .await
            .map_err(|msg| Error::BadManifest {
                reference: r.to_string(),
                msg,
            })?;
        let digest = Digest::of_bytes(&bytes);
        if r.digest.as_ref().is_some_and(|d| d != &digest) {
            return Err(Error::BadManifest {
                reference: r.to_string(),
                msg: format!("content hashes to {digest}"),
            });
        }
        let Manifest::Image { config, layers } = manifest::parse(&r.to_string(), &bytes, None)?
        else {
            return Err(Error::BadManifest {
                reference: r.to_string(),
                msg: "is an index, not an image manifest".into(),
            });
        };
        let reference = r.to_string();
        let config_digest = manifest::digest_of(&reference, &config)?;
        if config.size() > MAX_CONFIG {
            return Err(Error::BadManifest {
                reference,
                msg: format!("config of {} bytes is too large", config.size()),
            });
        }
        if !store.has_blob(&config_digest) {
            let quiet = RegistryOptions {
                quiet: true,
                ..opts.clone()
            };
            let bar = Progress::new(&quiet).blob(&config_digest, config.size());
            client
                .fetch_blob(store, &config_digest, config.size(), &bar)
                .await?;
        }
        store.put_bytes(&bytes)?;
        let layers = layers
            .iter()
            .map(|l| Ok((manifest::digest_of(&reference, l)?, l.size())))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Some(Entry {
            manifest: digest,
            config: config_digest,
            config_media_type: config.media_type().to_string(),
            layers,
        }))
    })
}

/// One blob [`fetch_blobs`] was asked for, and whether it came.
pub type Fetched = (Digest, Result<(), Error>);

/// Fetches the `blobs` the store lacks from `r`'s repository, several at once, and says
/// for each whether it came: a registry cache keeps going past a bad blob to learn every
/// entry it must refuse in one pass. An error that is not about the blob itself (the
/// client cannot be made) is returned as a whole.
pub fn fetch_blobs(
    store: &Store,
    r: &Reference,
    blobs: &[(Digest, u64)],
    opts: &RegistryOptions,
) -> Result<Vec<Fetched>, Error> {
    let missing: Vec<&(Digest, u64)> = blobs.iter().filter(|(d, _)| !store.has_blob(d)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let client = Client::new(r, opts)?;
    let progress = Progress::new(opts);
    let mut jobs = Vec::new();
    for (d, size) in missing {
        jobs.push(async {
            let got = fetch_one(&client, store, d, *size, &progress).await;
            (d.clone(), got)
        });
    }
    let results = block_on(async {
        futures_util::stream::iter(jobs)
            .buffer_unordered(opts.parallel.max(1))
            .collect::<Vec<_>>()
            .await
    });
    for (d, got) in &results {
        if got.is_ok() {
            super::push::remember(store, d, &r.registry, &r.repository);
        }
    }
    Ok(results)
}

async fn fetch_one(
    client: &Client,
    store: &Store,
    d: &Digest,
    size: u64,
    progress: &Progress,
) -> Result<(), Error> {
    let bar = progress.blob(d, size);
    client.fetch_blob(store, d, size, &bar).await?;
    bar.finish();
    Ok(())
}

/// Whether the registry has a manifest under `r`'s tag (or digest).
pub fn manifest_exists(r: &Reference, opts: &RegistryOptions) -> Result<bool, Error> {
    let client = Client::new(r, opts)?;
    let name = name_of(r);
    block_on(async {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            manifest::ACCEPT.parse().expect("static header value"),
        );
        let resp = client
            .send(
                Method::HEAD,
                &format!("manifests/{name}"),
                "manifest HEAD",
                h,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(client.http_error("manifest HEAD", s)),
        }
    })
}

fn name_of(r: &Reference) -> String {
    r.digest
        .as_ref()
        .map(|d| d.to_string())
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into())
}

/// Every tag of `r`'s repository, following the registry's pagination (`Link` headers).
pub fn list_tags(r: &Reference, opts: &RegistryOptions) -> Result<Vec<String>, Error> {
    let client = Client::new(r, opts)?;
    block_on(async {
        let mut out = Vec::new();
        let mut path = "tags/list?n=1000".to_string();
        loop {
            let resp = client
                .send(Method::GET, &path, "tag list", HeaderMap::new())
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            if !resp.status().is_success() {
                return Err(client.http_error("tag list", resp.status()));
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| {
                    l.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                });
            let body = super::client::read_limited(resp, 16 << 20)
                .await
                .map_err(|msg| Error::Message(format!("{r}: tag list: {msg}")))?;
            #[derive(serde::Deserialize)]
            struct Tags {
                tags: Option<Vec<String>>,
            }
            let tags: Tags = serde_json::from_slice(&body)
                .map_err(|e| Error::Message(format!("{r}: tag list is not JSON: {e}")))?;
            out.extend(tags.tags.unwrap_or_default());
            // The link is `/v2/<repo>/tags/list?…`; keep what follows the repository.
            match next.and_then(|n| n.split("/tags/list").nth(1).map(String::from)) {
                Some(q) => path = format!("tags/list{q}"),
                None => return Ok(out),
            }
        }
    })
}

/// The manifest `r` names (bytes and digest), or `None` when there is none.
pub fn get_manifest(
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Option<(Vec<u8>, Digest)>, Error> {
    let client = Client::new(r, opts)?;
    block_on(async {
        match client.get_manifest(&name_of(r)).await {
            Ok((bytes, _, _)) => {
                let d = Digest::of_bytes(&bytes);
                Ok(Some((bytes, d)))
            }
            Err(Error::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// Deletes the manifest `digest` from `r`'s repository (the registry must allow deletes).
pub fn delete_manifest(
    r: &Reference,
    digest: &Digest,
    opts: &RegistryOptions,
) -> Result<(), Error> {
    let client = Client::new(r, opts)?;
    block_on(async {
        let resp = client
            .send(
                Method::DELETE,
                &format!("manifests/{digest}"),
                "manifest DELETE",
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(client.http_error("manifest DELETE", s)),
        }
    })
}
