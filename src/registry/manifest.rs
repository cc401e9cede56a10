//! [`Manifest`]: a registry manifest classified as an index (Docker manifest list, OCI
//! index) or an image manifest (Docker schema 2, OCI), with the platform choice Docker
//! makes from an index. Schema 1 is rejected; sizes and counts are bounded so a lying
//! registry cannot make us allocate without limit.

use super::Error;
use crate::digest::Digest;
use crate::platform::Platform;
use oci_spec::image::Descriptor;
use serde::Deserialize;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What we ask registries for (schema 1 included, only so we can reject it by name).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json;q=0.9, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1";

/// Largest manifest or index we accept (Docker's limit is 4 MiB too).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config we accept.
pub const MAX_CONFIG: u64 = 8 << 20;
/// Most layers an image may have, and most entries an index may list.
pub const MAX_ENTRIES: usize = 1000;

/// One platform entry of an index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub digest: Digest,
    pub media_type: String,
    pub platform: Option<Platform>,
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub enum Manifest {
    Index(Vec<IndexEntry>),
    Image {
        config: Box<Descriptor>,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<Vec<serde_json::Value>>,
    config: Option<serde_json::Value>,
    layers: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

fn bad(reference: &str, msg: impl Into<String>) -> Error {
    Error::BadManifest {
        reference: reference.to_string(),
        msg: msg.into(),
    }
}

/// Parses manifest bytes; `content_type` is the response's `Content-Type`, if any.
pub fn parse(reference: &str, bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, Error> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    if matches!(ct, Some(SCHEMA1 | SCHEMA1_SIGNED)) {
        return Err(Error::Schema1(reference.to_string()));
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| bad(reference, format!("manifest is not valid JSON: {e}")))?;
    if raw.schema_version == Some(1)
        || matches!(raw.media_type.as_deref(), Some(SCHEMA1 | SCHEMA1_SIGNED))
    {
        return Err(Error::Schema1(reference.to_string()));
    }
    if raw.schema_version != Some(2) {
        return Err(bad(reference, "manifest has no schemaVersion 2"));
    }
    if let Some(entries) = raw.manifests {
        if entries.len() > MAX_ENTRIES {
            return Err(bad(
                reference,
                format!(
                    "index lists {} manifests (limit {MAX_ENTRIES})",
                    entries.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(entries.len());
        for v in entries {
            let e: RawEntry = serde_json::from_value(v)
                .map_err(|e| bad(reference, format!("index entry: {e}")))?;
            let digest = Digest::parse(&e.digest)
                .map_err(|e| bad(reference, format!("index entry: {e}")))?;
            out.push(IndexEntry {
                digest,
                media_type: e.media_type,
                platform: e
                    .platform
                    .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref())),
            });
        }
        return Ok(Manifest::Index(out));
    }
    let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
        return Err(bad(
            reference,
            "manifest has neither manifests nor config and layers",
        ));
    };
    if layers.len() > MAX_ENTRIES {
        return Err(bad(
            reference,
            format!("image has {} layers (limit {MAX_ENTRIES})", layers.len()),
        ));
    }
    let config = descriptor(reference, config)?;
    let layers = layers
        .into_iter()
        .map(|l| descriptor(reference, l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest::Image {
        config: Box::new(config),
        layers,
    })
}

fn descriptor(reference: &str, v: serde_json::Value) -> Result<Descriptor, Error> {
    let d: Descriptor =
        serde_json::from_value(v).map_err(|e| bad(reference, format!("descriptor: {e}")))?;
    digest_of(reference, &d)?;
    Ok(d)
}

/// The sha256 digest a descriptor names (anything else is refused).
pub fn digest_of(reference: &str, d: &Descriptor) -> Result<Digest, Error> {
    Digest::parse(d.digest().as_ref()).map_err(|e| bad(reference, format!("descriptor: {e}")))
}

/// Docker's choice from an index: entries whose platform matches, an exact variant match
/// preferred over an entry that names no variant. Attestations (`unknown/unknown`) never match.
pub fn select<'a>(
    reference: &str,
    entries: &'a [IndexEntry],
    want: &Platform,
) -> Result<&'a IndexEntry, Error> {
    let matching: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| e.platform.as_ref().is_some_and(|p| want.matches(p)))
        .collect();
    let exact = matching.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.variant == want.variant)
    });
    exact.or(matching.first()).copied().ok_or_else(|| {
        let available: Vec<String> = entries
            .iter()
            .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
            .collect();
        Error::NoPlatform {
            reference: reference.to_string(),
            platform: want.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn index() -> Vec<IndexEntry> {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D3}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        match parse("r", json.as_bytes(), Some(DOCKER_LIST)).unwrap() {
            Manifest::Index(e) => e,
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn selects_platform_with_variant() {
        let e = index();
        let pick = |p: &str| select("r", &e, &p.parse().unwrap()).map(|e| e.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), D3);
        assert_eq!(pick("linux/arm/v7").unwrap(), D2);
        assert_eq!(pick("linux/arm/v6").unwrap(), D1);
        let err = pick("linux/arm64").unwrap_err().to_string();
        assert!(
            err.contains("linux/arm64/v8") && err.contains("linux/arm/v7"),
            "{err}"
        );
    }

    #[test]
    fn parses_image_manifests_and_rejects_schema1() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":7}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":9}}]}}"#
        );
        let Manifest::Image { config, layers } = parse("r", m.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(config.size(), 7);
        assert_eq!(
            layers[0].media_type().to_string(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(parse("r", s1, None)
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(parse("r", b"{}", Some(SCHEMA1_SIGNED))
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(parse("r", b"not json", None)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        let many = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","digest":"{D1}","size":1}},"layers":[{}]}}"#,
            vec![format!(r#"{{"mediaType":"a/b","digest":"{D2}","size":1}}"#); 1001].join(",")
        );
        assert!(parse("r", many.as_bytes(), None)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let md5 = r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"md5:abc","size":1},"layers":[]}"#;
        assert!(parse("r", md5.as_bytes(), None).is_err());
    }
}
