//! The pull itself: [`pull`] and [`resolve`] apply the [`PullPolicy`], resolve the tag,
//! pick the platform, and fetch what the store lacks — layers in parallel, each blob under
//! a store lock so concurrent cairn processes download it once. The tag index is updated
//! only after everything it leads to is stored.

use super::client::Client;
use super::manifest::{self, Manifest, MAX_CONFIG};
use super::progress::{BlobProgress, Progress};
use super::{Error, PullPolicy, PulledImage, Reference, RegistryOptions};
use crate::digest::Digest;
use crate::platform::Platform;
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt};
use std::future::Future;
use std::sync::{Arc, OnceLock};

/// Pulls `r` for `platform` into `store` under `policy`; every blob of the image is in the
/// store afterwards.
pub fn pull(
    store: &Store,
    r: &Reference,
    platform: &Platform,
    policy: PullPolicy,
    opts: &RegistryOptions,
) -> Result<PulledImage, Error> {
    block_on(Puller::new(store, r, platform, policy, opts).pull())
}

/// Resolves `r` to its platform manifest digest (what a cache key names), fetching only
/// manifests.
pub fn resolve(
    store: &Store,
    r: &Reference,
    platform: &Platform,
    policy: PullPolicy,
    opts: &RegistryOptions,
) -> Result<Digest, Error> {
    block_on(Puller::new(store, r, platform, policy, opts).resolve())
}

/// Checks a config before anything records the image under its tag: an image config
/// (Docker or OCI) whose `rootfs.diff_ids` are as many as the manifest's layers.
fn check_config(
    reference: &str,
    digest: &Digest,
    bytes: &[u8],
    layers: usize,
) -> Result<(), Error> {
    let bad = |msg: String| Error::BadManifest {
        reference: reference.to_string(),
        msg,
    };
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes).is_err() {
        return Err(bad(format!("config {digest} is not a JSON object")));
    }
    let config = crate::image::ImageConfig::from_json(bytes)
        .map_err(|e| bad(format!("config {digest} is not an image config: {e}")))?;
    if config.rootfs.diff_ids.len() != layers {
        return Err(bad(format!(
            "config {digest} lists {} layers but the manifest {layers}",
            config.rootfs.diff_ids.len()
        )));
    }
    Ok(())
}

/// Runs a future to completion on a private runtime (on a fresh thread
/// when the caller is itself inside a runtime, where `block_on` would panic).
pub(crate) fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    let run = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f)
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join().expect("pull thread panicked"))
    } else {
        run()
    }
}

struct Puller<'a> {
    store: &'a Store,
    r: &'a Reference,
    platform: &'a Platform,
    policy: PullPolicy,
    opts: &'a RegistryOptions,
    client: OnceLock<Arc<Client>>,
    /// Set when the registry was unreachable and a stored tag was used: no more network.
    offline: bool,
    progress: Progress,
}

impl<'a> Puller<'a> {
    fn new(
        store: &'a Store,
        r: &'a Reference,
        platform: &'a Platform,
        policy: PullPolicy,
        opts: &'a RegistryOptions,
    ) -> Puller<'a> {
        Puller {
            store,
            r,
            platform,
            policy,
            opts,
            client: OnceLock::new(),
            offline: false,
            progress: Progress::new(opts),
        }
    }

    fn reference(&self) -> String {
        self.r.to_string()
    }

    /// The network client, refused when the policy or a fallback forbids the network.
    fn client(&self, what: &str) -> Result<&Arc<Client>, Error> {
        let why = match (self.policy, self.offline) {
            (PullPolicy::Never, _) => Some("--pull=never forbids the network"),
            (_, true) => Some("the registry is unreachable"),
            _ => None,
        };
        if let Some(why) = why {
            return Err(Error::NotInStore {
                reference: self.reference(),
                what: what.to_string(),
                why: why.to_string(),
            });
        }
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let _ = self.client.set(Arc::new(Client::new(self.r, self.opts)?));
        Ok(self.client.get().expect("just set"))
    }

    async fn pull(mut self) -> Result<PulledImage, Error> {
        let top = self.resolve_top().await?;
        let (manifest_digest, config, layers) = match self.ensure_manifest(&top).await? {
            Manifest::Index(entries) => {
                let entry = manifest::select(&self.reference(), &entries, self.platform)?;
                let d = entry.digest.clone();
                match self.ensure_manifest(&d).await? {
                    Manifest::Image { config, layers } => (d, config, layers),
                    Manifest::Index(_) => {
                        return Err(Error::BadManifest {
                            reference: self.reference(),
                            msg: format!("index entry {d} is itself an index"),
                        })
                    }
                }
            }
            Manifest::Image { config, layers } => (top.clone(), config, layers),
        };
        let reference = self.reference();
        let config_digest = manifest::digest_of(&reference, &config)?;
        if config.size() > MAX_CONFIG {
            return Err(Error::BadManifest {
                reference,
                msg: format!(
                    "config of {} bytes exceeds the {MAX_CONFIG}-byte limit",
                    config.size()
                ),
            });
        }
        self.ensure_blob(&config_digest, config.size(), "config")
            .await?;
        let config_bytes = self.store.read_blob(&config_digest)?;
        check_config(&reference, &config_digest, &config_bytes, layers.len())?;
        let jobs = layers
            .iter()
            .map(|l| Ok((manifest::digest_of(&reference, l)?, l.size())))
            .collect::<Result<Vec<(Digest, u64)>, Error>>()?;
        let jobs_done = jobs.clone();
        let this = &self;
        futures_util::stream::iter(
            jobs.into_iter()
                .map(|(d, size)| async move { this.ensure_blob(&d, size, "layer").await }),
        )
        .buffer_unordered(self.opts.parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        if !self.offline && self.policy != PullPolicy::Never {
            for (d, _) in &jobs_done {
                super::push::remember(self.store, d, &self.r.registry, &self.r.repository);
            }
        }
        self.record_tag(&top)?;
        Ok(PulledImage {
            reference: self.r.clone(),
            manifest_digest,
            top_digest: top,
            config_digest,
            config: config_bytes,
            layers,
            offline_fallback: self.offline,
        })
    }

    /// Resolution only: the tag index is left to a pull, which validates the config first.
    async fn resolve(mut self) -> Result<Digest, Error> {
        let top = self.resolve_top().await?;
        let d = match self.ensure_manifest(&top).await? {
            Manifest::Index(entries) => {
                manifest::select(&self.reference(), &entries, self.platform)?
                    .digest
                    .clone()
            }
            Manifest::Image { .. } => top.clone(),
        };
        Ok(d)
    }

    /// After a successful network resolution, the tag index learns the new digest.
    fn record_tag(&self, top: &Digest) -> Result<(), Error> {
        if self.offline || self.policy == PullPolicy::Never || self.r.digest.is_some() {
            return Ok(());
        }
        if let Some(key) = self.r.tag_key() {
            self.store.tag_set(&key, top)?;
        }
        Ok(())
    }

    /// The digest the reference names now: its own digest, the registry's answer for its
    /// tag, or (policy permitting) the stored answer.
    async fn resolve_top(&mut self) -> Result<Digest, Error> {
        if let Some(d) = &self.r.digest {
            return Ok(d.clone());
        }
        let key = self
            .r
            .tag_key()
            .expect("a reference without digest has a tag");
        let stored = self.store.tag_get(&key)?;
        if self.policy == PullPolicy::Never {
            return stored.map(|t| t.digest).ok_or_else(|| Error::NotInStore {
                reference: self.reference(),
                what: "the tag".into(),
                why: "--pull=never forbids the network".into(),
            });
        }
        match self.remote_tag().await {
            Ok(d) => Ok(d),
            Err(e) if self.policy == PullPolicy::Missing && e.is_unreachable() => {
                let Some(t) = stored else { return Err(e) };
                self.progress.warn(&format!(
                    "{e}; using the stored digest {} (resolved {})",
                    t.digest, t.resolved_at
                ));
                self.offline = true;
                Ok(t.digest)
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the registry what the tag means: a `HEAD` when it reports a digest we already
    /// hold, else a `GET` whose bytes are stored.
    async fn remote_tag(&self) -> Result<Digest, Error> {
        let tag = self.r.tag.as_deref().expect("tag");
        let client = self.client("the tag")?;
        if let Some(d) = client.head_manifest(tag).await? {
            if self.store.has_blob(&d) {
                return Ok(d);
            }
        }
        let (bytes, ct, reported) = client.get_manifest(tag).await?;
        let d = Digest::of_bytes(&bytes);
        if reported.as_ref().is_some_and(|r| r != &d) {
            return Err(Error::BadManifest {
                reference: self.reference(),
                msg: format!(
                    "the registry says its digest is {} but its content hashes to {d}",
                    reported.expect("checked")
                ),
            });
        }
        manifest::parse(&self.reference(), &bytes, ct.as_deref())?;
        self.store.put_bytes(&bytes)?;
        Ok(d)
    }

    /// The manifest `d`, from the store or fetched (and verified) by digest.
    async fn ensure_manifest(&self, d: &Digest) -> Result<Manifest, Error> {
        if self.store.has_blob(d) {
            let bytes = self.store.read_blob(d)?;
            return manifest::parse(&self.reference(), &bytes, None);
        }
        let client = self.client(&format!("manifest {d}"))?;
        let (bytes, ct, _) = client.get_manifest(d.as_str()).await?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(Error::BadManifest {
                reference: self.reference(),
                msg: format!("manifest {d} from the registry hashes to {actual}"),
            });
        }
        let m = manifest::parse(&self.reference(), &bytes, ct.as_deref())?;
        self.store.put_bytes(&bytes)?;
        Ok(m)
    }

    /// Blob `d` in the store, downloading it when missing. The download runs as its own
    /// task, so several layers hash and write on several threads.
    async fn ensure_blob(&self, d: &Digest, size: u64, what: &str) -> Result<(), Error> {
        if self.store.has_blob(d) {
            return Ok(());
        }
        let client = self.client(&format!("{what} {d}"))?.clone();
        let store = self.store.clone();
        let bar = self.progress.blob(d, size);
        let d = d.clone();
        tokio::spawn(download(client, store, d, size, bar))
            .await
            .map_err(|e| Error::Message(format!("download task failed: {e}")))?
    }
}

/// Downloads one blob, once across processes: the download holds the store lock
/// `blob-<first 3 hex digits>`, and a waiter finds the blob there when it gets the lock.
/// (Sharded so the lock files stay bounded, 4096 at most; `cache prune` removes idle ones.)
async fn download(
    client: Arc<Client>,
    store: Store,
    d: Digest,
    size: u64,
    bar: BlobProgress,
) -> Result<(), Error> {
    let name = format!("blob-{}", &d.hex()[..3]);
    let locker = store.clone();
    let _lock = tokio::task::spawn_blocking(move || locker.lock(&name))
        .await
        .map_err(|e| Error::Message(format!("lock task failed: {e}")))??;
    if !store.has_blob(&d) {
        client.fetch_blob(&store, &d, size, &bar).await?;
    }
    bar.finish();
    Ok(())
}
