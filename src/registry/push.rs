//! [`push`]: an image from the store to a registry, so a build made here can run anywhere.
//!
//! A tag that already names the manifest ends the push at once. Otherwise each blob
//! (config and layers) is asked for first (`HEAD`): what the registry has is not sent again. A blob it lacks is mounted from another repository of the same registry
//! where the store remembers having seen it ([`remember`]: pulls and pushes record
//! where each blob lives), and uploaded only when that fails — a `202` to a mount request is
//! the registry declining, and its upload session is used. Uploads stream the blob file
//! (a monolithic `PUT` after the `POST` that opens the session), several at once up to
//! [`RegistryOptions::parallel`], each restarted from a fresh session with backoff when it
//! breaks off. The manifest goes last, so a reader never sees a manifest whose blobs are
//! missing. [`prepare`] first re-compresses layers the store holds in another compression
//! (zstd by default) into the one the registry's readers expect (gzip by default).

use super::client::{read_limited, Client, MakeBody};
use super::manifest::{self, Manifest, OCI_MANIFEST};
use super::progress::Progress;
use super::pull::block_on;
use super::{Error, Reference, RegistryOptions};
use crate::digest::Digest;
use crate::image::{manifest_json, LayerDesc};
use crate::layer::{self, Compression, Layer};
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many mount sources are tried for one blob before it is uploaded.
const MAX_MOUNT_SOURCES: usize = 3;
/// The smallest chunk sent to a registry that asks for chunked uploads.
const MIN_CHUNK: u64 = 1 << 20;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference pushed to (with its tag, if it had one).
    pub reference: Reference,
    /// The manifest's digest: `reference` pinned to it names exactly what was pushed.
    pub digest: Digest,
    /// Blobs the registry already had in the repository.
    pub present: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Blobs uploaded, and their bytes.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
}

/// How a blob got into the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Present,
    Mounted,
    Uploaded,
}

/// The image under `manifest` with every layer in `compression`: the same manifest when
/// all layers already are, else a new manifest (stored) over re-compressed layers (stored
/// too, and remembered, so a second push does not compress again). The config, and so the
/// image ID, is unchanged.
pub fn prepare(
    store: &Store,
    manifest: &Digest,
    compression: Compression,
) -> crate::Result<Digest> {
    let bytes = store.read_blob(manifest)?;
    let (config, layers) = image_parts(manifest, &bytes)?;
    let diff_ids = diff_ids(store, &config.0)?;
    if diff_ids.len() != layers.len() {
        return Err(Error::BadManifest {
            reference: manifest.to_string(),
            msg: format!(
                "{} layers but {} diff_ids in the config",
                layers.len(),
                diff_ids.len()
            ),
        }
        .into());
    }
    let mut changed = false;
    let mut out = Vec::with_capacity(layers.len());
    for ((digest, size, media_type), diff_id) in layers.into_iter().zip(diff_ids) {
        let desc = LayerDesc {
            digest,
            size,
            media_type,
            diff_id,
        };
        if !needs_conversion(Compression::from_media_type(&desc.media_type), compression) {
            out.push(desc);
            continue;
        }
        let done = layer::recompress(store, &Layer::from(&desc), compression)?;
        changed |= done.digest != desc.digest;
        out.push(LayerDesc::from(&done));
    }
    if !changed {
        return Ok(manifest.clone());
    }
    Ok(store.put_bytes(&manifest_json(&config.0, config.1, &out))?)
}

/// Whether a layer stored as `stored` is re-compressed for a push in `target`: gzip
/// readers may not read zstd, so gzip converts everything; a zstd push keeps gzip layers
/// (every zstd reader reads gzip; as BuildKit keeps base layers without force-compression).
pub fn needs_conversion(stored: Option<Compression>, target: Compression) -> bool {
    match (stored, target) {
        (Some(s), t) if s == t => false,
        (Some(Compression::Gzip), Compression::Zstd) => false,
        _ => true,
    }
}

/// The config (digest, size) and layers (digest, size, media type) of an image manifest.
type Parts = ((Digest, u64), Vec<(Digest, u64, String)>);

fn image_parts(manifest: &Digest, bytes: &[u8]) -> Result<Parts, Error> {
    let reference = manifest.to_string();
    match manifest::parse(&reference, bytes, None)? {
        Manifest::Index(_) => Err(Error::BadManifest {
            reference,
            msg: "is an index; push one platform's image manifest".into(),
        }),
        Manifest::Image { config, layers } => {
            let c = (manifest::digest_of(&reference, &config)?, config.size());
            let ls = layers
                .iter()
                .map(|l| {
                    Ok((
                        manifest::digest_of(&reference, l)?,
                        l.size(),
                        l.media_type().to_string(),
                    ))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            Ok((c, ls))
        }
    }
}

fn diff_ids(store: &Store, config: &Digest) -> Result<Vec<Digest>, Error> {
    let bytes = store.read_blob(config)?;
    let bad = |msg: String| Error::BadManifest {
        reference: config.to_string(),
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("config: {e}")))?;
    v.pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or_else(|| bad("config has no rootfs.diff_ids".into()))?
        .iter()
        .map(|d| {
            d.as_str()
                .and_then(|s| Digest::parse(s).ok())
                .ok_or_else(|| bad(format!("bad diff_id {d}")))
        })
        .collect()
}

/// Pushes the image manifest `manifest` (with its config and layers, all in the store) to
/// `target`: blobs first, the manifest last, under `target`'s tag (or its digest).
pub fn push(
    store: &Store,
    manifest: &Digest,
    target: &Reference,
    opts: &RegistryOptions,
) -> Result<Pushed, Error> {
    let bytes = store.read_blob(manifest)?;
    let (config, layers) = image_parts(manifest, &bytes)?;
    let media_type = media_type_of(&bytes);
    let mut blobs = vec![config];
    blobs.extend(layers.into_iter().map(|(d, s, _)| (d, s)));
    let mut seen = BTreeSet::new();
    blobs.retain(|(d, _)| seen.insert(d.clone()));
    let sources = mount_sources(store, target, &blobs);
    let all: Vec<String> = sources.iter().flatten().cloned().collect();
    let client = Client::for_push(target, opts, &all)?;
    let counts = Counts::default();
    let progress = Progress::new(opts);
    // The tag already names this very manifest: the registry accepted it with every blob,
    // so there is nothing to send (a no-change re-push is this one request).
    if let Some(tag) = &target.tag {
        if block_on(client.head_manifest(tag)).ok().flatten().as_ref() == Some(manifest) {
            return Ok(Pushed {
                reference: target.clone(),
                digest: manifest.clone(),
                present: blobs.len(),
                mounted: 0,
                uploaded: 0,
                uploaded_bytes: 0,
            });
        }
    }
    let mut jobs = Vec::with_capacity(blobs.len());
    for ((d, size), from) in blobs.iter().zip(&sources) {
        jobs.push(blob_job(
            &client, store, d, *size, from, opts, &counts, &progress,
        ));
    }
    block_on(async {
        futures_util::stream::iter(jobs)
            .buffer_unordered(opts.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        put_manifest(&client, target, manifest, &bytes, &media_type).await
    })?;
    for (d, _) in &blobs {
        remember(store, d, &target.registry, &target.repository);
    }
    Ok(Pushed {
        reference: target.clone(),
        digest: manifest.clone(),
        present: counts.present.load(Ordering::Relaxed),
        mounted: counts.mounted.load(Ordering::Relaxed),
        uploaded: counts.uploaded.load(Ordering::Relaxed),
        uploaded_bytes: counts.bytes.load(Ordering::Relaxed),
    })
}

/// One blob of a push, counted and reported.
#[allow(clippy::too_many_arguments)]
async fn blob_job(
    client: &Client,
    store: &Store,
    d: &Digest,
    size: u64,
    from: &[String],
    opts: &RegistryOptions,
    counts: &Counts,
    progress: &Progress,
) -> Result<(), Error> {
    let outcome = ensure_blob(client, store, d, size, from, opts, progress).await?;
    counts.add(outcome, size);
    match outcome {
        Outcome::Present => progress.note(&format!("{} exists", d.short())),
        Outcome::Mounted => progress.note(&format!("{} mounted", d.short())),
        Outcome::Uploaded => {}
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    present: AtomicUsize,
    mounted: AtomicUsize,
    uploaded: AtomicUsize,
    bytes: AtomicU64,
}

impl Counts {
    fn add(&self, o: Outcome, size: u64) {
        match o {
            Outcome::Present => self.present.fetch_add(1, Ordering::Relaxed),
            Outcome::Mounted => self.mounted.fetch_add(1, Ordering::Relaxed),
            Outcome::Uploaded => {
                self.bytes.fetch_add(size, Ordering::Relaxed);
                self.uploaded.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The manifest's own media type (OCI when it does not say).
fn media_type_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(String::from))
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

/// For each blob, the other repositories of `target`'s registry known to hold it.
fn mount_sources(store: &Store, target: &Reference, blobs: &[(Digest, u64)]) -> Vec<Vec<String>> {
    blobs
        .iter()
        .map(|(d, _)| {
            locations(store, d)
                .into_iter()
                .filter_map(|loc| {
                    let (reg, repo) = loc.split_once('/')?;
                    (reg == target.registry && repo != target.repository).then(|| repo.to_string())
                })
                .take(MAX_MOUNT_SOURCES)
                .collect()
        })
        .collect()
}

fn location_record(d: &Digest) -> String {
    format!("blob-repos-{}", d.hex())
}

/// The `registry/repository` places blob `d` was pulled from or pushed to (newest first).
pub fn locations(store: &Store, d: &Digest) -> Vec<String> {
    store
        .record_get(&location_record(d))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Remembers that `registry/repository` holds blob `d` (a hint for mounts; best effort,
/// a lost update only costs an upload).
pub(crate) fn remember(store: &Store, d: &Digest, registry: &str, repository: &str) {
    let loc = format!("{registry}/{repository}");
    let mut locs = locations(store, d);
    if locs.first() == Some(&loc) {
        return;
    }
    locs.retain(|l| *l != loc);
    locs.insert(0, loc);
    locs.truncate(8);
    if let Ok(bytes) = serde_json::to_vec(&locs) {
        let _ = store.record_put(&location_record(d), &bytes);
    }
}

/// Blob `d` in the target repository: already there, mounted, or uploaded (restarted from
/// a fresh session, with backoff, when an upload breaks off).
async fn ensure_blob(
    client: &Client,
    store: &Store,
    d: &Digest,
    size: u64,
    from: &[String],
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<Outcome, Error> {
    let what = format!("blob {d}");
    let resp = client
        .send(Method::HEAD, &format!("blobs/{d}"), &what, HeaderMap::new())
        .await?;
    match resp.status() {
        s if s.is_success() => return Ok(Outcome::Present),
        StatusCode::NOT_FOUND => {}
        s => return Err(client.http_error(&format!("{what} HEAD"), s)),
    }
    let mut attempt = 0;
    loop {
        let mut session = None;
        if attempt == 0 {
            for repo in from {
                match start_upload(client, d, Some(repo)).await? {
                    Start::Mounted => return Ok(Outcome::Mounted),
                    Start::Session(url, chunk) => {
                        session = Some((url, chunk));
                        break;
                    }
                    Start::Refused => {}
                }
            }
        }
        let (url, chunk) = match session {
            Some(s) => s,
            None => match start_upload(client, d, None).await? {
                Start::Session(u, c) => (u, c),
                _ => {
                    return Err(client.blob_error(d, "the registry opened no upload session".into()))
                }
            },
        };
        let bar = progress.push_blob(d, size);
        let done = match chunk {
            Some(c) => upload_chunked(client, store, d, size, url, c).await,
            None => upload(client, store, d, size, &url).await,
        };
        match done {
            Ok(()) => {
                bar.finish_at(size);
                return Ok(Outcome::Uploaded);
            }
            Err(e) if attempt < opts.retries && e.is_unreachable() => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt.min(4))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

enum Start {
    Mounted,
    /// An upload session, and the chunk size the registry asks for (`OCI-Chunk-Min-Length`),
    /// if it asks for chunked uploads.
    Session(reqwest::Url, Option<u64>),
    /// The mount request was refused outright (not with a session).
    Refused,
}

/// `POST /blobs/uploads/`, with `?mount=&from=` for a cross-repository mount.
async fn start_upload(client: &Client, d: &Digest, from: Option<&str>) -> Result<Start, Error> {
    let mut url = reqwest::Url::parse(&format!(
        "{}/v2/{}/blobs/uploads/",
        client.base(),
        client.repository()
    ))
    .map_err(|e| Error::Message(format!("bad registry URL: {e}")))?;
    if let Some(repo) = from {
        url.query_pairs_mut()
            .append_pair("mount", d.as_str())
            .append_pair("from", repo);
    }
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    let what = match from {
        Some(repo) => format!("mount of {d} from {repo}"),
        None => format!("upload of {d}"),
    };
    let resp = client
        .send_url(Method::POST, url.as_str(), &what, h, None, true)
        .await?;
    let status = resp.status();
    if status == StatusCode::CREATED && from.is_some() {
        return Ok(Start::Mounted);
    }
    if status == StatusCode::ACCEPTED {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| client.blob_error(d, "upload session without a Location".into()))?;
        let url = url
            .join(loc)
            .map_err(|e| client.blob_error(d, format!("bad upload Location {loc:?}: {e}")))?;
        let chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(|n| n.max(MIN_CHUNK));
        return Ok(Start::Session(url, chunk));
    }
    if from.is_some() && status.is_client_error() {
        return Ok(Start::Refused);
    }
    Err(client.http_error(&what, status))
}

/// The blob file streamed into the upload session in one `PUT`.
async fn upload(
    client: &Client,
    store: &Store,
    d: &Digest,
    size: u64,
    session: &reqwest::Url,
) -> Result<(), Error> {
    let mut url = session.clone();
    url.query_pairs_mut().append_pair("digest", d.as_str());
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(size));
    let path = store.blob_path(d);
    let body = move || -> Result<reqwest::Body, Error> {
        let f = std::fs::File::open(&path).map_err(|e| crate::store::Error::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(reqwest::Body::wrap_stream(file_stream(
            tokio::fs::File::from_std(f),
            size,
        )))
    };
    let make: MakeBody<'_> = &body;
    let what = format!("upload of {d}");
    let resp = client
        .send_url(Method::PUT, url.as_str(), &what, h, Some(make), false)
        .await?;
    let status = resp.status();
    if status == StatusCode::CREATED || status.is_success() {
        return Ok(());
    }
    let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
    Err(Error::Blob {
        registry: client.registry().to_string(),
        reference: format!("{}/{}", client.registry(), client.repository()),
        digest: d.clone(),
        msg: format!(
            "upload answered HTTP {} {}: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            String::from_utf8_lossy(&body).trim()
        ),
    })
}

/// The blob sent as `PATCH`es of `chunk` bytes (each with its `Content-Range`, each to the
/// `Location` the previous one returned), closed by a `PUT` with the digest: for registries
/// that advertise a minimum chunk length and so want chunked uploads.
async fn upload_chunked(
    client: &Client,
    store: &Store,
    d: &Digest,
    size: u64,
    mut session: reqwest::Url,
    chunk: u64,
) -> Result<(), Error> {
    let path = store.blob_path(d);
    let what = format!("upload of {d}");
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        let range = format!("{offset}-{}", offset + len - 1);
        h.insert(
            "content-range",
            HeaderValue::from_str(&range).expect("digits and a dash"),
        );
        let path = path.clone();
        let body = move || -> Result<reqwest::Body, Error> {
            use std::io::{Seek, SeekFrom};
            let mut f = std::fs::File::open(&path).map_err(|e| crate::store::Error::Io {
                path: path.clone(),
                source: e,
            })?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| crate::store::Error::Io {
                    path: path.clone(),
                    source: e,
                })?;
            let part = tokio::fs::File::from_std(f);
            let stream = file_stream(part, len);
            Ok(reqwest::Body::wrap_stream(stream))
        };
        let resp = client
            .send_url(
                Method::PATCH,
                session.as_str(),
                &what,
                h,
                Some(&body),
                false,
            )
            .await?;
        let status = resp.status();
        if status != StatusCode::ACCEPTED && !status.is_success() {
            return Err(client.http_error(&format!("{what} (chunk {range})"), status));
        }
        if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
            session = session
                .join(loc)
                .map_err(|e| client.blob_error(d, format!("bad upload Location {loc:?}: {e}")))?;
        }
        offset += len;
    }
    let mut url = session;
    url.query_pairs_mut().append_pair("digest", d.as_str());
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    let resp = client
        .send_url(Method::PUT, url.as_str(), &what, h, None, false)
        .await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(client.http_error(&format!("{what} (closing PUT)"), resp.status()))
    }
}

/// `len` bytes of `file` from its current position, as a stream of chunks.
fn file_stream(
    file: tokio::fs::File,
    len: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::try_unfold(file.take(len), |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((buf, f)))
    })
}

/// The `errors[].code` (with `detail` when it is a string) of an OCI distribution error
/// body, `; `-joined; empty when the body is not one.
fn registry_error_codes(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let Some(errors) = v["errors"].as_array() else {
        return String::new();
    };
    let errors = errors
        .iter()
        .filter_map(|e| {
            let code = e["code"].as_str()?;
            Some(match e["detail"].as_str() {
                Some(d) => format!("{code}: {d}"),
                None => code.to_string(),
            })
        })
        .collect::<Vec<_>>();
    match errors.len() {
        0..=3 => errors.join("; "),
        n => format!("{}; and {} more", errors[..3].join("; "), n - 3),
    }
}

/// `PUT /manifests/<tag or digest>`; the registry's digest must be ours.
async fn put_manifest(
    client: &Client,
    target: &Reference,
    digest: &Digest,
    bytes: &[u8],
    media_type: &str,
) -> Result<(), Error> {
    let name = target
        .tag
        .clone()
        .unwrap_or_else(|| digest.as_str().to_string());
    if let Some(want) = &target.digest {
        if want != digest {
            return Err(Error::BadManifest {
                reference: target.to_string(),
                msg: format!(
                    "the image's manifest is {digest}, not the digest the reference names"
                ),
            });
        }
    }
    let url = format!(
        "{}/v2/{}/manifests/{name}",
        client.base(),
        client.repository()
    );
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(media_type)
            .map_err(|e| Error::Message(format!("bad media type {media_type:?}: {e}")))?,
    );
    let body = bytes.to_vec();
    let make = move || -> Result<reqwest::Body, Error> { Ok(reqwest::Body::from(body.clone())) };
    let resp = client
        .send_url(Method::PUT, &url, "manifest PUT", h, Some(&make), true)
        .await?;
    let status = resp.status();
    if !status.is_success() {
        // The registry's own error codes say why (MANIFEST_BLOB_UNKNOWN: a blob it claimed
        // to have, or lost, is missing), so the message carries them.
        let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
        let codes = registry_error_codes(&body);
        let what = if codes.is_empty() {
            "manifest PUT".to_string()
        } else {
            format!("manifest PUT (the registry says {codes})")
        };
        return Err(client.http_error(&what, status));
    }
    let reported = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok());
    if let Some(r) = reported.filter(|r| r != digest) {
        return Err(Error::BadManifest {
            reference: target.to_string(),
            msg: format!("the registry stored the manifest as {r}, not {digest}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_codes_name_why_a_manifest_was_refused() {
        let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"},{"code":"DENIED","detail":{"x":1}}]}"#;
        assert_eq!(
            registry_error_codes(body),
            "MANIFEST_BLOB_UNKNOWN: sha256:ab; DENIED"
        );
        assert_eq!(registry_error_codes(b"<html>oops</html>"), "");
    }

    #[test]
    fn which_layers_are_recompressed() {
        use Compression::*;
        assert!(!needs_conversion(Some(Gzip), Gzip));
        assert!(needs_conversion(Some(Zstd), Gzip));
        assert!(needs_conversion(Some(None), Gzip));
        assert!(!needs_conversion(Some(Gzip), Zstd));
        assert!(needs_conversion(Some(None), Zstd));
        assert!(needs_conversion(Some(Zstd), None));
    }

    #[test]
    fn locations_are_remembered_newest_first_per_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"layer");
        assert!(locations(&store, &d).is_empty());
        remember(&store, &d, "reg:5000", "a/base");
        remember(&store, &d, "reg:5000", "b/app");
        remember(&store, &d, "reg:5000", "a/base");
        assert_eq!(locations(&store, &d), ["reg:5000/a/base", "reg:5000/b/app"]);
        let target = Reference::parse("reg:5000/b/app:1").unwrap();
        let other = Reference::parse("other:5000/b/app:1").unwrap();
        let blobs = [(d.clone(), 1)];
        assert_eq!(
            mount_sources(&store, &target, &blobs),
            [vec!["a/base".to_string()]]
        );
        assert!(mount_sources(&store, &other, &blobs)[0].is_empty());
    }
}
