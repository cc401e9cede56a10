//! [`pull`] and [`resolve`]: base images from a registry into the [`Store`](crate::store::Store), so a build
//! needs the network only to learn what a tag means today.
//!
//! A [`Reference`] is normalised as Docker does; its tag is resolved to a manifest digest
//! (Docker schema 2 or OCI, through a manifest list or index for the requested
//! [`Platform`](crate::Platform)); every blob is streamed to disk while hashed and published only when its
//! size and digest match. [`PullPolicy`] decides when the network is asked: `Never` opens
//! no connection, `Missing` falls back to the stored digest when the registry is
//! unreachable, `Always` fails instead. [`push`] sends a stored image the other way
//! ([`prepare_push`] first gives its layers the compression registries expect). The API is
//! blocking; tokio runs inside.

mod auth;
mod client;
mod fetch;
mod manifest;
mod progress;
mod pull;
mod push;
mod reference;
pub mod remote;

pub use auth::{config_dir as docker_config_dir, Challenge, Credentials};
pub use fetch::download;
pub use manifest::{
    parse as parse_manifest, select as select_platform, IndexEntry, Manifest, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
pub use progress::human;
pub use pull::{pull, resolve};
pub(crate) use push::remember as remember_location;
pub use push::{
    locations as blob_locations, needs_conversion, prepare as prepare_push, push, Pushed,
};
pub use reference::{Reference, DOCKER_HUB};

use crate::digest::Digest;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of this module. Each names the registry, the reference and, for HTTP failures,
/// the status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("registry {registry}: {what} for {reference}: HTTP {status} {reason}")]
    Http {
        registry: String,
        reference: String,
        what: String,
        status: u16,
        reason: String,
    },
    #[error("registry {registry} is unreachable for {reference}: {msg}")]
    Unreachable {
        registry: String,
        reference: String,
        msg: String,
    },
    #[error("registry {registry}: authentication failed for {reference}: {msg}")]
    Auth {
        registry: String,
        reference: String,
        msg: String,
    },
    #[error("registry {registry}: blob {digest} of {reference}: {msg}")]
    Blob {
        registry: String,
        reference: String,
        digest: Digest,
        msg: String,
    },
    #[error("{0}: schema 1 manifests are not supported (re-push the image with a current docker or skopeo)")]
    Schema1(String),
    #[error("{reference}: no image for platform {platform} (the index offers: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: bad manifest: {msg}")]
    BadManifest { reference: String, msg: String },
    #[error("{reference}: {what} is not in the store and {why}")]
    NotInStore {
        reference: String,
        what: String,
        why: String,
    },
    #[error("docker config: {0}")]
    Config(String),
    /// A plain download ([`download`]) got an HTTP error status.
    #[error("download {url}: HTTP {status} {reason}")]
    DownloadHttp {
        url: String,
        status: u16,
        reason: String,
    },
    /// A plain download could not reach its server, or the body was cut short, after the
    /// retries.
    #[error("download {url}: {msg}")]
    DownloadFailed { url: String, msg: String },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// Whether the registry could not be reached (or was failing): the case in which
    /// `--pull=missing` falls back to a stored digest.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// When the registry is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always re-resolve tags; fail when the registry is unreachable.
    Always,
    /// Re-resolve tags when the registry is reachable, else use the stored digest (with a
    /// warning); fetch only blobs the store lacks.
    #[default]
    Missing,
    /// Use only the store; never open a network connection.
    Never,
}

/// How to talk to registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Where `config.json` lives (default: `$DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// Connect timeout, and the longest wait for any read.
    pub timeout: Duration,
    /// Retries after a 5xx, 429, reset or timeout (and resumptions of one blob).
    pub retries: u32,
    /// Blobs downloaded at once.
    pub parallel: usize,
    /// No progress output.
    pub quiet: bool,
    /// Where pull progress and warnings go (a build passes its own sink; `None`: a sink
    /// of the pull's own, chosen as `--progress=auto` would).
    pub events: Option<crate::events::Reporter>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            docker_config_dir: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            parallel: 4,
            quiet: false,
            events: None,
        }
    }
}

/// A pulled image: everything named here is in the store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: Reference,
    /// The platform manifest (not the index).
    pub manifest_digest: Digest,
    /// The digest the reference resolved to: the index for a multi-platform image, else
    /// the same as `manifest_digest`.
    pub top_digest: Digest,
    pub config_digest: Digest,
    /// The raw config JSON.
    pub config: Vec<u8>,
    /// As in the manifest, media types kept.
    pub layers: Vec<oci_spec::image::Descriptor>,
    /// The registry was unreachable and the stored digest of the tag was used.
    pub offline_fallback: bool,
}
