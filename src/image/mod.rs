//! [`ImageConfig`]: cairn's own image config, with the history, manifest and index JSON
//! around it.
//!
//! The config blob's sha256 is the image ID Docker shows, so it must come out byte-for-byte
//! the same for the same build. oci-spec's config type cannot promise that (its maps are
//! `HashMap`s, and it lacks Docker's `Healthcheck`, `OnBuild` and `Shell`; DESIGN.md, known
//! traps), so this module has its own serde structs with `BTreeMap`s, written as canonical
//! JSON (sorted keys, no insignificant whitespace) by [`to_canonical_json`]. Manifests and
//! indexes are written the same way, with OCI media types.

mod canonical;
mod config;
mod manifest;

pub use canonical::to_canonical_json;
pub use config::{
    now_rfc3339, rfc3339, ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs,
    DEFAULT_PATH_ENV,
};
pub use manifest::{
    index_json, manifest_json, oci_layer_media_type, Descriptor, LayerDesc, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image config does not parse: {0}")]
    Config(String),
    #[error("{0}")]
    Message(String),
}
