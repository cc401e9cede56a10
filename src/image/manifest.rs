//! [`LayerDesc`], [`Descriptor`], and the canonical OCI manifest and index JSON that point
//! at a config and its layers.

use super::canonical::to_canonical_json;
use crate::digest::Digest;
use crate::layer::{self, Layer};
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation OCI layouts use for a tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for a full image name in an OCI layout.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// A layer as an image lists it: the blob (digest, size, media type) and its diffID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

impl From<&Layer> for LayerDesc {
    fn from(l: &Layer) -> Self {
        LayerDesc {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id: l.diff_id.clone(),
        }
    }
}

impl From<&LayerDesc> for Layer {
    fn from(l: &LayerDesc) -> Self {
        Layer {
            diff_id: l.diff_id.clone(),
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        }
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: &'a [Descriptor],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [Descriptor],
}

/// The OCI media type for a layer blob of any media type a registry serves: Docker's
/// schema 2 names become the OCI names for the same bytes, so an OCI manifest is valid.
pub fn oci_layer_media_type(media_type: &str) -> String {
    let foreign = media_type.contains("foreign") || media_type.contains("nondistributable");
    match (layer::Compression::from_media_type(media_type), foreign) {
        (Some(c), false) => c.media_type().to_string(),
        (Some(c), true) => c
            .media_type()
            .replace("layer.v1", "layer.nondistributable.v1"),
        (None, _) => media_type.to_string(),
    }
}

/// The canonical OCI image manifest for `config` and `layers` (bottom first).
pub fn manifest_json(config: &Digest, config_size: u64, layers: &[LayerDesc]) -> Vec<u8> {
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor::new(&oci_layer_media_type(&l.media_type), &l.digest, l.size))
        .collect();
    to_canonical_json(&Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Descriptor::new(MEDIA_TYPE_CONFIG, config, config_size),
        layers: &layers,
    })
}

/// The canonical OCI image index listing `manifests`.
pub fn index_json(manifests: &[Descriptor]) -> Vec<u8> {
    to_canonical_json(&Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests,
    })
}
