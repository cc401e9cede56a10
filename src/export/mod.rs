//! [`BuiltImage`]: a finished image whose blobs are all in the store, and the ways out of
//! cairn — a docker-archive tar, an OCI layout directory, and a load into a Docker Engine
//! or Podman.
//!
//! The docker-archive is what `docker save` writes since Docker 25: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) plus Docker's `manifest.json` and
//! `repositories` in one tar, so old engines (which read only `manifest.json`) and new ones
//! load it alike. Engines before 23.0 cannot decompress zstd layers (Docker 20.10's
//! `docker load` fails with "archive/tar: invalid tar header"), so an archive carries zstd
//! layers as plain tar by default, under a manifest of its own ([`docker_compatible`]); the
//! image ID (the config digest) does not change. Each output may ask for its own layer
//! compression ([`OutputCompression`]). Loads speak the Engine API themselves, to the
//! engine the docker CLI would use ([`LoadVia::detect`]), and ask the engine which image
//! store it runs.

mod archive;
mod compat;
mod convert;
mod docker;
mod engine;
mod progress;
mod tags;

pub use archive::{
    write_docker_archive, write_docker_archive_file, write_oci_layout, write_oci_layout_with,
    Written,
};
pub use compat::docker_compatible;
pub use convert::{recompressed, OutputCompression};
pub use docker::{
    docker_load, docker_load_reporting, docker_load_via, engine_report, BasePreload, EngineReport,
    LoadVia, Preloaded, TlsFiles,
};
pub use tags::{full_name, normalize_tag};

use crate::digest::Digest;
use crate::image::LayerDesc;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

/// A built image: manifest, config and layers, every blob already in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltImage {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<LayerDesc>,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the Docker daemon: {0}\nis it running? (`docker info`; check DOCKER_HOST and `docker context ls`)"
    )]
    DockerUnreachable(String),
    #[error(
        "permission denied talking to the Docker daemon: {0}\nadd your user to the docker group \
         (`sudo usermod -aG docker $USER`, then log in again) or run cairn with sudo"
    )]
    DockerPermission(String),
    #[error("docker {action} failed: {detail}")]
    Docker { action: String, detail: String },
    #[error("invalid image tag {0:?}: expected name[:tag], e.g. myapp:1.0")]
    InvalidTag(String),
    #[error("export: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("export: writing the image: {0}")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    #[error("{0}")]
    Message(String),
}

impl Error {
    fn io(path: &std::path::Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the failure is Docker's (unreachable, refused, or failing the load) rather
    /// than cairn's own (store, layer, file system): `crate::error` can map only the former
    /// to the "Docker" exit code.
    pub fn is_docker(&self) -> bool {
        matches!(
            self,
            Error::DockerUnreachable(_) | Error::DockerPermission(_) | Error::Docker { .. }
        )
    }

    /// Classifies what the docker CLI or the Engine said when something failed.
    fn from_docker(action: &str, detail: &str) -> Error {
        let d = detail.trim().to_string();
        let lower = d.to_ascii_lowercase();
        if lower.contains("permission denied")
            && (lower.contains("docker") || lower.contains(".sock"))
        {
            Error::DockerPermission(d)
        } else if lower.contains("cannot connect to the docker daemon")
            || lower.contains("is the docker daemon running")
            || lower.contains("connection refused")
            || lower.contains("no such file or directory") && lower.contains(".sock")
            || lower.contains("error during connect")
        {
            Error::DockerUnreachable(d)
        } else {
            Error::Docker {
                action: action.to_string(),
                detail: d,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_docker_messages() {
        let denied = "permission denied while trying to connect to the Docker daemon socket at \
                      unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/info\": \
                      dial unix /var/run/docker.sock: connect: permission denied";
        assert!(matches!(
            Error::from_docker("load", denied),
            Error::DockerPermission(_)
        ));
        let down = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. \
                    Is the docker daemon running?";
        assert!(matches!(
            Error::from_docker("load", down),
            Error::DockerUnreachable(_)
        ));
        let tcp = "error during connect: Get \"http://10.0.0.1:2375/v1.24/info\": dial tcp: \
                   connection refused";
        assert!(matches!(
            Error::from_docker("load", tcp),
            Error::DockerUnreachable(_)
        ));
        let other = Error::from_docker("load", "invalid diffID for layer 0");
        assert!(matches!(other, Error::Docker { .. }) && other.is_docker());
        assert!(!Error::Message("disk full".into()).is_docker());
    }
}
