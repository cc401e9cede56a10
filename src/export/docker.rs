//! [`docker_load`]: hands a [`BuiltImage`] to a Docker Engine (or Podman's compatible API)
//! — nothing sent when the engine already has it — then tags it and returns the ID as that
//! engine shows it: the config digest in the classic image store and Podman, the manifest
//! digest in the containerd image store (Docker 24+ with the containerd snapshotter, the
//! default from Engine 29).
//!
//! The engine is found as the docker CLI finds it: `DOCKER_HOST` (`unix://`, `tcp://` with
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`, `ssh://`), else `DOCKER_CONTEXT` or the
//! config's `currentContext`, else `/var/run/docker.sock`; no docker CLI is needed.
//!
//! A load sends an archive without names and tags it afterwards, so the tags keep naming
//! the old image until the new one is complete: the containerd store's load can otherwise
//! lose a parent snapshot of an image that loses its last tag mid-load ("parent snapshot …
//! does not exist"); should that still happen, the load is retried once.

use super::archive::write_archive;
use super::compat::{self, Compat};
use super::engine::{tls_config, Engine, Transport};
use super::tags::normalize_tag;
use super::{BuiltImage, Error};
use crate::layer::Compression;
use crate::store::Store;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadVia {
    /// The docker CLI at this path (with whatever `DOCKER_HOST` or context it has).
    Cli(PathBuf),
    /// The Engine API on this unix socket.
    Socket(PathBuf),
    /// The Engine API at `host:port`, over TLS when `tls` is given.
    Tcp { addr: String, tls: Option<TlsFiles> },
    /// The Engine API of the host an `ssh://[user@]host[:port]` URL names, through `ssh …
    /// docker system dial-stdio` as the docker CLI reaches it.
    Ssh(String),
}

/// The docker CLI's TLS files for an engine: the CA that signed its certificate and the
/// client certificate and key, when there are both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// `ca.pem`, and `cert.pem` with `key.pem` when both exist, in `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        TlsFiles {
            ca: dir.join("ca.pem"),
            client: (cert.is_file() && key.is_file()).then_some((cert, key)),
        }
    }
}

/// The socket the docker CLI talks to when nothing says otherwise.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl LoadVia {
    /// The engine the docker CLI would use, reached without it: `DOCKER_HOST` (with
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for `tcp://`), else the docker context
    /// named by `DOCKER_CONTEXT` or the config's `currentContext`, else the default socket.
    pub fn detect() -> Result<LoadVia, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config_dir = crate::registry::docker_config_dir(None);
        let config_context = || {
            let dir = config_dir.as_ref()?;
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
            v["currentContext"].as_str().map(str::to_string)
        };
        detect_from(&DetectInput {
            docker_host: env("DOCKER_HOST"),
            docker_context: env("DOCKER_CONTEXT").or_else(config_context),
            tls_verify: env("DOCKER_TLS_VERIFY").is_some(),
            tls: env("DOCKER_TLS").is_some(),
            cert_path: env("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .or_else(|| config_dir.clone()),
            config_dir,
        })
    }

    /// The way to the engine a docker endpoint URL names (`unix://`, `tcp://`, `ssh://`),
    /// with TLS files for `tcp://` when it speaks TLS.
    pub fn from_host(host: &str, tls: Option<TlsFiles>) -> Result<LoadVia, Error> {
        let bad = |why: &str| Error::DockerUnreachable(format!("docker host {host:?}: {why}"));
        if let Some(p) = host.strip_prefix("unix://") {
            return Ok(LoadVia::Socket(PathBuf::from(p)));
        }
        if let Some(rest) = host.strip_prefix("tcp://") {
            let hostport = rest.split('/').next().unwrap_or("");
            if hostport.is_empty() {
                return Err(bad("no host"));
            }
            let has_port = hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
            let addr = if has_port {
                hostport.to_string()
            } else {
                format!("{hostport}:{}", if tls.is_some() { 2376 } else { 2375 })
            };
            return Ok(LoadVia::Tcp { addr, tls });
        }
        if host.starts_with("ssh://") {
            ssh_args(host)?;
            return Ok(LoadVia::Ssh(host.to_string()));
        }
        Err(bad(
            "cairn reaches engines at unix://, tcp:// and ssh:// addresses",
        ))
    }

    fn transport(&self) -> Result<Transport, Error> {
        Ok(match self {
            LoadVia::Cli(_) => unreachable!("the CLI is no transport"),
            LoadVia::Socket(p) => Transport::Unix(p.clone()),
            LoadVia::Tcp { addr, tls } => Transport::Tcp {
                addr: addr.clone(),
                tls: match tls {
                    Some(t) => Some(tls_config(
                        &t.ca,
                        t.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                    )?),
                    None => None,
                },
            },
            LoadVia::Ssh(url) => Transport::Ssh(ssh_args(url)?),
        })
    }
}

/// `ssh`'s arguments for an `ssh://[user@]host[:port]` URL, as the docker CLI runs it.
fn ssh_args(url: &str) -> Result<Vec<String>, Error> {
    let bad = |why: &str| Error::DockerUnreachable(format!("docker host {url:?}: {why}"));
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| bad("not ssh://"))?;
    if rest.contains('/') && !rest.ends_with('/') || rest.contains('?') {
        return Err(bad("an ssh:// host takes no path or query"));
    }
    let rest = rest.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?))
        }
        _ => (hostport, None),
    };
    if host.is_empty() || host.starts_with('-') {
        return Err(bad("no host"));
    }
    let mut args = vec![
        "-o".to_string(),
        "ConnectTimeout=30".to_string(),
        "-T".into(),
    ];
    if let Some(u) = user {
        args.extend(["-l".to_string(), u.to_string()]);
    }
    if let Some(p) = port {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    args.extend(["--", host, "docker", "system", "dial-stdio"].map(str::to_string));
    Ok(args)
}

/// What [`LoadVia::detect`] decides from.
struct DetectInput {
    docker_host: Option<String>,
    /// `DOCKER_CONTEXT`, else `currentContext` from the docker config.
    docker_context: Option<String>,
    /// `DOCKER_TLS_VERIFY` is set: TLS, verifying the engine's certificate.
    tls_verify: bool,
    /// `DOCKER_TLS` is set: TLS without verifying it (refused).
    tls: bool,
    /// `DOCKER_CERT_PATH`, else the docker config directory.
    cert_path: Option<PathBuf>,
    config_dir: Option<PathBuf>,
}

fn detect_from(i: &DetectInput) -> Result<LoadVia, Error> {
    // As the docker CLI: DOCKER_HOST wins over any context.
    if let Some(h) = &i.docker_host {
        let tls = if h.starts_with("tcp://") {
            if i.tls && !i.tls_verify {
                return Err(Error::DockerUnreachable(format!(
                    "DOCKER_HOST={h} with DOCKER_TLS but no DOCKER_TLS_VERIFY: cairn does not \
                     talk to an engine whose certificate it cannot verify; set DOCKER_TLS_VERIFY=1"
                )));
            }
            match (&i.cert_path, i.tls_verify) {
                (Some(dir), true) => Some(TlsFiles::in_dir(dir)),
                (None, true) => {
                    return Err(Error::DockerUnreachable(
                        "DOCKER_TLS_VERIFY is set but there is no DOCKER_CERT_PATH".into(),
                    ))
                }
                (_, false) => None,
            }
        } else {
            None
        };
        return LoadVia::from_host(h, tls);
    }
    match i.docker_context.as_deref() {
        Some(name) if name != "default" => from_context(i.config_dir.as_deref(), name),
        _ => Ok(LoadVia::Socket(PathBuf::from(DEFAULT_SOCKET))),
    }
}

/// The endpoint of docker context `name`, read from the CLI's context store
/// (`contexts/meta/<sha256 of name>/meta.json`, TLS files in `contexts/tls/…/docker/`).
fn from_context(config_dir: Option<&Path>, name: &str) -> Result<LoadVia, Error> {
    let unknown = |why: String| Error::DockerUnreachable(format!("docker context {name:?}: {why}"));
    let dir = config_dir.ok_or_else(|| unknown("no docker config directory".into()))?;
    let id = crate::digest::Digest::of_bytes(name.as_bytes());
    let meta_path = dir.join("contexts/meta").join(id.hex()).join("meta.json");
    let bytes =
        std::fs::read(&meta_path).map_err(|e| unknown(format!("{}: {e}", meta_path.display())))?;
    let meta: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| unknown(format!("{}: {e}", meta_path.display())))?;
    let ep = &meta["Endpoints"]["docker"];
    let host = ep["Host"]
        .as_str()
        .ok_or_else(|| unknown(format!("{}: no docker endpoint", meta_path.display())))?;
    let tls_dir = dir.join("contexts/tls").join(id.hex()).join("docker");
    let tls = if host.starts_with("tcp://") && tls_dir.join("ca.pem").is_file() {
        if ep["SkipTLSVerify"].as_bool() == Some(true) {
            return Err(unknown(
                "SkipTLSVerify is set: cairn does not talk to an engine whose certificate it \
                 cannot verify"
                    .into(),
            ));
        }
        Some(TlsFiles::in_dir(&tls_dir))
    } else {
        None
    };
    LoadVia::from_host(host, tls)
}

/// Loads `img` into Docker (unless it is already there), tags it with `tags`, and returns
/// the image ID Docker reports.
pub fn docker_load(store: &Store, img: &BuiltImage, tags: &[String]) -> Result<String, Error> {
    docker_load_via(&LoadVia::detect()?, store, img, tags)
}

/// [`docker_load`] through a given way to the engine.
pub fn docker_load_via(
    via: &LoadVia,
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
) -> Result<String, Error> {
    let tags: Vec<String> = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<Result<_, _>>()?;
    with_engine(via, |e| load_with(e, store, img, &tags, None))
}

/// Runs `f` on the way to the engine `via` names: the docker CLI or the Engine API.
fn with_engine<R>(
    via: &LoadVia,
    f: impl FnOnce(&dyn EngineOps) -> Result<R, Error>,
) -> Result<R, Error> {
    match via {
        LoadVia::Cli(cli) => f(&Cli(cli)),
        other => f(&Engine::new(other.transport()?)),
    }
}

/// [`docker_load`] that reports the bytes it streams to the engine through `rep`, and
/// leaves out the layers a [`BasePreload`] already put in the engine (then removes the
/// preloaded image, which the new one's layers keep).
pub fn docker_load_reporting(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    rep: &crate::events::Reporter,
    preload: Option<BasePreload>,
) -> Result<String, Error> {
    let tags: Vec<String> = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<Result<_, _>>()?;
    let name = tags
        .first()
        .cloned()
        .unwrap_or_else(|| img.config.to_string());
    with_engine(&LoadVia::detect()?, |inner| {
        let reporting = super::progress::Reporting {
            inner,
            rep,
            name: &name,
        };
        let preloaded = preload.and_then(|p| p.wait(&mut |w| rep.warn(w)));
        let loaded = load_with(&reporting, store, img, &tags, preloaded.as_ref());
        // Unless the build's image is the preloaded one itself, it goes again.
        if let Some(p) = preloaded.filter(|p| p.ours) {
            if !loaded.as_ref().is_ok_and(|id| *id == p.id) {
                if let Err(e) = inner.remove(&p.id) {
                    rep.warn(&format!(
                        "cannot remove the preloaded base image {}: {e}",
                        p.id
                    ));
                }
            }
        }
        loaded
    })
}

/// The final stage's base image, loaded into the engine on a thread of its own while the
/// build runs ([`BasePreload::start`]), so that the final load sends only the layers the
/// build made: a cold build's load is otherwise mostly the base, and it waited for every
/// step. Only the classic image store (its load never opens the tar of a layer whose chain
/// it has) and only when the engine lacks the image; the preloaded image is untagged, and
/// removed again once the build's image holds its layers, so nothing of it stays.
pub struct BasePreload {
    thread: std::thread::JoinHandle<Result<Option<Preloaded>, Error>>,
}

/// What [`BasePreload`] put in (or found in) the engine.
#[derive(Debug, Clone)]
pub struct Preloaded {
    /// The image ID the engine gives it.
    pub id: String,
    /// Its diffIDs, bottom first: a chain the engine has.
    pub layers: Vec<String>,
    /// Whether the preload loaded it (and so removes it again), rather than found it.
    pub ours: bool,
}

impl BasePreload {
    /// Starts loading `base` (whose blobs are in `store`) into the engine a load would reach,
    /// unless an image `tags` name there (the previous build) already has its layers.
    /// `loading` is called once a load is decided on, right before it starts.
    pub fn start(
        store: &Store,
        base: &BuiltImage,
        tags: &[String],
        loading: Box<dyn FnOnce() + Send>,
    ) -> BasePreload {
        let (store, base) = (store.clone(), base.clone());
        let tags: Vec<String> = tags.iter().filter_map(|t| normalize_tag(t).ok()).collect();
        BasePreload {
            thread: std::thread::spawn(move || {
                with_engine(&LoadVia::detect()?, |e| {
                    preload_with(e, &store, &base, &tags, loading)
                })
            }),
        }
    }

    /// Waits for the preload; a failure is a warning (the final load then sends every
    /// layer).
    pub fn wait(self, warn: &mut dyn FnMut(&str)) -> Option<Preloaded> {
        match self.thread.join() {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                warn(&format!(
                    "the base image was not loaded ahead of the build: {e}"
                ));
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for the preload and removes what it loaded: for a build that ends without a
    /// load (it failed).
    pub fn abandon(self) {
        if let Some(p) = self.wait(&mut |_| {}).filter(|p| p.ours) {
            let _ = LoadVia::detect().and_then(|via| with_engine(&via, |e| e.remove(&p.id)));
        }
    }
}

fn preload_with(
    e: &dyn EngineOps,
    store: &Store,
    base: &BuiltImage,
    tags: &[String],
    loading: Box<dyn FnOnce() + Send>,
) -> Result<Option<Preloaded>, Error> {
    let info = e.info()?;
    let zstd = base
        .layers
        .iter()
        .any(|l| Compression::from_media_type(&l.media_type) == Some(Compression::Zstd));
    if !info.classic_store || base.layers.is_empty() || (zstd && !info.reads_zstd) {
        return Ok(None);
    }
    let layers: Vec<String> = base.layers.iter().map(|l| l.diff_id.to_string()).collect();
    // The previous build under these tags usually starts with this base: nothing to load.
    for t in tags {
        if let Some(i) = e.inspect(t)? {
            if i.layers.as_ref().is_some_and(|l| l.starts_with(&layers)) {
                return Ok(Some(Preloaded {
                    id: i.id,
                    layers,
                    ours: false,
                }));
            }
        }
    }
    let config = base.config.to_string();
    if let Some(id) = e.image_id(&config)? {
        return Ok(Some(Preloaded {
            id,
            layers,
            ours: false,
        }));
    }
    let sent = Compat::as_is(base);
    loading();
    e.load(&mut |w| write_archive(store, &sent, &[], 0, w))?;
    let id = e.image_id(&config)?.ok_or_else(|| Error::Docker {
        action: "load".into(),
        detail: format!("the engine does not show image {config} after loading it"),
    })?;
    Ok(Some(Preloaded {
        id,
        layers,
        ours: true,
    }))
}

/// The engine a load would reach, as `cairn doctor` reports it: asked over the same Engine
/// API path ([`LoadVia::detect`]) a load takes, never through a docker CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// `unix:///var/run/docker.sock`, `tcp://host:port`, `ssh …`.
    pub endpoint: String,
    /// `Docker 20.10.24`, `Podman 4.3.1`.
    pub version: String,
    /// The storage driver `GET /info` names (`overlay2`, `overlayfs`, …).
    pub driver: String,
    /// `classic`, `containerd` or `podman`: which image store a load writes into.
    pub image_store: &'static str,
}

impl EngineReport {
    fn from_info(endpoint: String, v: &serde_json::Value) -> EngineReport {
        let info = Info::from_json(v);
        let version = v["ServerVersion"].as_str().unwrap_or("unknown");
        // As `Info::from_json` tells them: Docker's versions are 17.03 and later.
        let (product, image_store) = match (info.containerd_store, info.classic_store) {
            (true, _) => ("Docker", "containerd"),
            (_, true) => ("Docker", "classic"),
            _ if version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                >= Some(17) =>
            {
                ("Docker", "unknown")
            }
            _ => ("Podman", "podman"),
        };
        EngineReport {
            endpoint,
            version: format!("{product} {version}"),
            driver: v["Driver"].as_str().unwrap_or("").to_string(),
            image_store,
        }
    }
}

/// Asks the engine [`LoadVia::detect`] finds (`DOCKER_HOST`, the docker context, or the
/// default socket) what it is.
pub fn engine_report() -> Result<EngineReport, Error> {
    let engine = Engine::new(LoadVia::detect()?.transport()?);
    let info = engine.info_json()?;
    Ok(EngineReport::from_info(engine.describe(), &info))
}

/// Writes the docker-archive into the writer it is given (run on a second thread).
pub(crate) type WriteArchive<'a> = dyn FnMut(&mut dyn Write) -> Result<(), Error> + Send + 'a;

/// What a load needs from the engine, by CLI or by API.
pub(crate) trait EngineOps {
    /// `reference` as the engine has it, or `None` when it has no such image.
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error>;
    /// The ID of `reference`, or `None` when the engine has no such image.
    fn image_id(&self, reference: &str) -> Result<Option<String>, Error> {
        Ok(self.inspect(reference)?.map(|i| i.id))
    }
    /// Loads the docker-archive `write` produces; returns what the engine printed.
    fn load(&self, write: &mut WriteArchive) -> Result<String, Error>;
    /// Tags image `id` as the normalised `tag`.
    fn tag(&self, id: &str, tag: &str) -> Result<(), Error>;
    /// What kind of engine this is (`GET /info`).
    fn info(&self) -> Result<Info, Error>;
    /// Removes the untagged image `id` (its layers stay while another image uses them).
    fn remove(&self, id: &str) -> Result<(), Error>;
}

/// What a load needs to know of the engine, read from `GET /info`, not guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Info {
    /// The containerd image store: image IDs are manifest digests. Else the classic one or
    /// Podman's: IDs are config digests.
    pub containerd_store: bool,
    /// The classic (graph driver) image store of Docker.
    pub classic_store: bool,
    /// The engine loads zstd layers (Docker 23 and later).
    pub reads_zstd: bool,
}

impl Info {
    pub(crate) fn from_json(v: &serde_json::Value) -> Info {
        let version = v["ServerVersion"].as_str().unwrap_or("");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // Docker's versions are 17.03 and later; Podman's compatible API gives its own (4.x).
        let podman = major < 17;
        let classic = super::engine::classic_image_store(v);
        let containerd = !classic && v["Driver"].as_str().is_some_and(|d| !d.is_empty());
        Info {
            containerd_store: containerd && !podman,
            classic_store: classic && !podman,
            reads_zstd: !podman && major >= 23,
        }
    }
}

/// An image as the engine shows it.
pub(crate) struct Inspected {
    pub id: String,
    /// Its layers' diffIDs, bottom first, where the way to the engine tells them cheaply.
    pub layers: Option<Vec<String>>,
}

/// How many of `img`'s bottom layers the engine already has as a chain: the longest prefix
/// `img` shares with an image its tags name now (`tagged`, usually the previous build).
fn present_layers(img: &BuiltImage, tagged: &[Option<Inspected>], known: &[&[String]]) -> usize {
    let mut best = 0;
    let tagged = tagged.iter().flatten().filter_map(|i| i.layers.as_deref());
    for theirs in tagged.chain(known.iter().copied()) {
        let shared = img
            .layers
            .iter()
            .zip(theirs)
            .take_while(|(l, d)| l.diff_id.as_str() == d.as_str())
            .count();
        best = best.max(shared);
    }
    best
}

/// Whether a load failed on the containerd store's race with an image losing its last
/// tag ("failed to unpack loaded image: … parent snapshot … does not exist: not found").
fn is_snapshot_race(e: &Error) -> bool {
    matches!(e, Error::Docker { detail, .. }
        if detail.contains("snapshot") && (detail.contains("does not exist") || detail.contains("not found")))
}

fn load_with(
    e: &dyn EngineOps,
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    preloaded: Option<&Preloaded>,
) -> Result<String, Error> {
    // The usual no-op: every tag already names this image — by its config digest (classic
    // store, Podman) or its manifest digest (containerd store). One inspect per tag and
    // nothing written (the classic engine saves its whole tag store on every tag).
    let tagged: Vec<Option<Inspected>> = tags
        .iter()
        .map(|t| e.inspect(t))
        .collect::<Result<_, _>>()?;
    let ours = |id: &str| id == img.config.as_str() || id == img.manifest.as_str();
    if let Some(Some(first)) = tagged.first() {
        if ours(&first.id)
            && tagged
                .iter()
                .all(|i| i.as_ref().is_some_and(|i| i.id == first.id))
        {
            return Ok(first.id.clone());
        }
    }
    let info = e.info()?;
    // Layers as stored when the engine reads them; zstd ones as plain tar for engines
    // before 23 (the config, so the classic image ID, stays the same).
    let has_zstd = img
        .layers
        .iter()
        .any(|l| Compression::from_media_type(&l.media_type) == Some(Compression::Zstd));
    let sent = if has_zstd && !info.reads_zstd {
        compat::prepare(store, img)?
    } else {
        Compat::as_is(img)
    };
    let id_ref = if info.containerd_store {
        sent.image.manifest.to_string()
    } else {
        sent.image.config.to_string()
    };
    let id = match e.image_id(&id_ref)? {
        Some(id) => id,
        None => {
            // After a change late in the Dockerfile the engine already has most layers:
            // send only the others. The classic store never opens the tar of a layer whose
            // chain it has; the containerd store has their blobs in its content store, kept
            // by the image the tag still names (the archive carries no names: tags follow
            // once it is in). Podman wants every blob. Should the engine want them after
            // all, send them all.
            let known: Vec<&[String]> = preloaded.iter().map(|p| &p.layers[..]).collect();
            let present = if info.classic_store || info.containerd_store {
                present_layers(img, &tagged, &known)
            } else {
                0
            };
            let full = |e: &dyn EngineOps| -> Result<String, Error> {
                match e.load(&mut |w| write_archive(store, &sent, &[], 0, w)) {
                    Err(err) if is_snapshot_race(&err) => {
                        e.load(&mut |w| write_archive(store, &sent, &[], 0, w))
                    }
                    other => other,
                }
            };
            let printed = if present > 0 {
                match e.load(&mut |w| write_archive(store, &sent, &[], present, w)) {
                    Err(Error::Docker { .. }) => full(e)?,
                    other => other?,
                }
            } else {
                full(e)?
            };
            let id = match e.image_id(&id_ref)? {
                Some(id) => Some(id),
                None => match loaded_id(&printed) {
                    Some(r) => e.image_id(r)?,
                    None => None,
                },
            };
            id.ok_or_else(|| Error::Docker {
                action: "load".into(),
                detail: format!("the engine does not show image {id_ref} after loading it"),
            })?
        }
    };
    for (t, now) in tags.iter().zip(&tagged) {
        if now.as_ref().is_some_and(|i| i.id == id) {
            continue;
        }
        e.tag(&id, t)?;
    }
    Ok(id)
}

/// The ID in `docker load`'s "Loaded image ID: sha256:…" line, when it printed one.
fn loaded_id(printed: &str) -> Option<&str> {
    printed
        .split("Loaded image ID: ")
        .nth(1)?
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .next()
}

struct Cli<'a>(&'a Path);

impl Cli<'_> {
    /// Runs `docker <action> args…`; stdout on success, a classified error otherwise.
    fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        &self,
        action: &str,
        args: I,
    ) -> Result<String, Error> {
        let out = Command::new(self.0)
            .arg(action)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(self.0))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(Error::from_docker(
                action,
                &String::from_utf8_lossy(&out.stderr),
            ))
        }
    }
}

impl EngineOps for Cli<'_> {
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error> {
        match self.run("image", ["inspect", "--format", "{{.Id}}", reference]) {
            Ok(id) => Ok(Some(Inspected { id, layers: None })),
            Err(Error::Docker { detail, .. })
                if detail.to_ascii_lowercase().contains("no such image") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Streams the docker-archive into `docker load` on stdin.
    fn load(&self, write: &mut WriteArchive) -> Result<String, Error> {
        let mut child = Command::new(self.0)
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(self.0))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Write from a second thread while this one drains stdout/stderr, so neither side
        // can block the other on a full pipe.
        let (written, out) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let r = write(&mut stdin);
                drop(stdin);
                r
            });
            let out = child.wait_with_output();
            (writer.join().expect("archive writer thread"), out)
        });
        let out = out.map_err(Error::io(self.0))?;
        // Our own failure comes first: a truncated archive makes docker say odd things.
        // A broken pipe only means docker stopped reading; its own message says why.
        match written {
            Err(Error::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if !out.status.success() {
            let mut detail = String::from_utf8_lossy(&out.stderr).into_owned();
            detail.push_str(&String::from_utf8_lossy(&out.stdout));
            return Err(Error::from_docker("load", &detail));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn tag(&self, id: &str, tag: &str) -> Result<(), Error> {
        self.run("tag", [id, tag]).map(drop)
    }

    fn remove(&self, id: &str) -> Result<(), Error> {
        self.run("rmi", [id]).map(drop)
    }

    fn info(&self) -> Result<Info, Error> {
        let out = self.run("info", ["--format", "{{json .}}"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::Message(format!("docker info: bad answer: {e}")))?;
        Ok(Info::from_json(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(host: Option<&str>, ctx: Option<&str>) -> DetectInput {
        DetectInput {
            docker_host: host.map(str::to_string),
            docker_context: ctx.map(str::to_string),
            tls_verify: false,
            tls: false,
            cert_path: Some(PathBuf::from("/certs")),
            config_dir: None,
        }
    }

    #[test]
    fn engine_reports_name_the_version_driver_and_image_store() {
        let r = |v: serde_json::Value| EngineReport::from_info("unix:///s".into(), &v);
        let classic = r(
            serde_json::json!({"ServerVersion": "20.10.24", "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]]}),
        );
        assert_eq!(
            (
                classic.version.as_str(),
                classic.driver.as_str(),
                classic.image_store
            ),
            ("Docker 20.10.24", "overlay2", "classic")
        );
        let containerd = r(
            serde_json::json!({"ServerVersion": "26.1.5", "Driver": "overlayfs",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}),
        );
        assert_eq!(
            (containerd.version.as_str(), containerd.image_store),
            ("Docker 26.1.5", "containerd")
        );
        let podman = r(serde_json::json!({"ServerVersion": "4.3.1", "Driver": "overlay"}));
        assert_eq!(
            (podman.version.as_str(), podman.image_store),
            ("Podman 4.3.1", "podman")
        );
    }

    #[test]
    fn detect_finds_the_engine_as_the_cli_does() {
        let socket = |p: &str| LoadVia::Socket(PathBuf::from(p));
        // Nothing set: the default socket.
        assert_eq!(
            detect_from(&input(None, None)).unwrap(),
            socket(DEFAULT_SOCKET)
        );
        assert_eq!(
            detect_from(&input(None, Some("default"))).unwrap(),
            socket(DEFAULT_SOCKET)
        );
        assert_eq!(
            detect_from(&input(Some("unix:///run/user/1000/docker.sock"), Some("x"))).unwrap(),
            socket("/run/user/1000/docker.sock")
        );
        // tcp:// without TLS, with the default port; with DOCKER_TLS_VERIFY, TLS on 2376.
        assert_eq!(
            detect_from(&input(Some("tcp://10.0.0.1"), None)).unwrap(),
            LoadVia::Tcp {
                addr: "10.0.0.1:2375".into(),
                tls: None
            }
        );
        let mut i = input(Some("tcp://h.example:1234"), None);
        i.tls_verify = true;
        assert_eq!(
            detect_from(&i).unwrap(),
            LoadVia::Tcp {
                addr: "h.example:1234".into(),
                tls: Some(TlsFiles {
                    ca: "/certs/ca.pem".into(),
                    client: None
                })
            }
        );
        i.docker_host = Some("tcp://h.example".into());
        assert!(
            matches!(detect_from(&i).unwrap(), LoadVia::Tcp { addr, .. } if addr == "h.example:2376")
        );
        // TLS without verification is refused, clearly.
        let mut i = input(Some("tcp://h:2376"), None);
        i.tls = true;
        let err = detect_from(&i).unwrap_err().to_string();
        assert!(err.contains("DOCKER_TLS_VERIFY"), "{err}");
        assert_eq!(
            detect_from(&input(Some("ssh://me@h:2222"), None)).unwrap(),
            LoadVia::Ssh("ssh://me@h:2222".into())
        );
        let err = detect_from(&input(Some("npipe:////./pipe/docker"), None)).unwrap_err();
        assert!(err.to_string().contains("npipe"), "{err}");
        // A context that is not there is named.
        let err = detect_from(&input(None, Some("remote"))).unwrap_err();
        assert!(err.to_string().contains("\"remote\""), "{err}");
    }

    #[test]
    fn reads_docker_contexts() {
        let dir = tempfile::tempdir().unwrap();
        let id = crate::digest::Digest::of_bytes(b"remote");
        let meta = dir.path().join("contexts/meta").join(id.hex());
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.1.2.3:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        let tls = dir
            .path()
            .join("contexts/tls")
            .join(id.hex())
            .join("docker");
        std::fs::create_dir_all(&tls).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(tls.join(f), "x").unwrap();
        }
        let mut i = input(None, Some("remote"));
        i.config_dir = Some(dir.path().to_path_buf());
        assert_eq!(
            detect_from(&i).unwrap(),
            LoadVia::Tcp {
                addr: "10.1.2.3:2376".into(),
                tls: Some(TlsFiles {
                    ca: tls.join("ca.pem"),
                    client: Some((tls.join("cert.pem"), tls.join("key.pem")))
                })
            }
        );
    }

    #[test]
    fn ssh_as_the_docker_cli_runs_it() {
        assert_eq!(
            ssh_args("ssh://me@build.example:2222").unwrap(),
            [
                "-o",
                "ConnectTimeout=30",
                "-T",
                "-l",
                "me",
                "-p",
                "2222",
                "--",
                "build.example",
                "docker",
                "system",
                "dial-stdio"
            ]
        );
        assert_eq!(
            ssh_args("ssh://h").unwrap()[3..],
            ["--", "h", "docker", "system", "dial-stdio"]
        );
        assert!(ssh_args("ssh://-oProxyCommand=x").is_err());
        assert!(ssh_args("ssh://h/path").is_err());
    }

    #[test]
    fn tells_engines_apart() {
        let classic = serde_json::json!({"ServerVersion": "20.10.24+dfsg1", "Driver": "fuse-overlayfs",
            "DriverStatus": [["Backing Filesystem", "extfs"]]});
        let containerd = serde_json::json!({"ServerVersion": "26.1.5+dfsg1", "Driver": "overlayfs",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]});
        let podman = serde_json::json!({"ServerVersion": "4.3.1", "Driver": "overlay",
            "DriverStatus": [["Backing Filesystem", "extfs"]]});
        let i = Info::from_json(&classic);
        assert!(i.classic_store && !i.containerd_store && !i.reads_zstd);
        let i = Info::from_json(&containerd);
        assert!(!i.classic_store && i.containerd_store && i.reads_zstd);
        let i = Info::from_json(&podman);
        assert!(!i.classic_store && !i.containerd_store && !i.reads_zstd);
    }

    #[test]
    fn reads_the_loaded_id() {
        let id = "sha256:0123";
        assert_eq!(loaded_id(&format!("Loaded image ID: {id}\n")), Some(id));
        assert_eq!(
            loaded_id(&format!("{{\"stream\":\"Loaded image ID: {id}\\n\"}}")),
            Some(id)
        );
        assert_eq!(loaded_id("Loaded image: x:1\n"), None);
    }
}
