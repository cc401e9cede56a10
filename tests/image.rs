//! Image config, manifest and index JSON: real configs parse, unknown fields survive, and
//! the output is canonical (so the image ID is stable).

use cairn::image::{
    index_json, manifest_json, rfc3339, Descriptor, History, ImageConfig, LayerDesc,
    MEDIA_TYPE_MANIFEST,
};
use cairn::{Digest, Platform};

/// A config as Docker 20.10's classic builder writes it (trimmed from `debian:12`), with
/// the nulls, empty strings and build-container fields real ones have.
const DOCKER_CONFIG: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"Tty":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"],"Image":"sha256:0b6a3c4f5e7c1d8a9b0f1e2d3c4b5a6978877665544332211ffeeddccbbaa998","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null,"ExposedPorts":{"80/tcp":{},"443/tcp":{}},"Healthcheck":{"Test":["CMD-SHELL","curl -f localhost"],"Interval":30000000000,"Retries":3}},"container":"4d5c","container_config":{"Hostname":"4d5c","Cmd":["/bin/sh","-c","#(nop) ","CMD [\"bash\"]"]},"created":"2024-06-13T00:00:00.000000000Z","docker_version":"20.10.23","history":[{"created":"2024-06-13T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "},{"created":"2024-06-13T00:00:01Z","created_by":"/bin/sh -c #(nop)  CMD [\"bash\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:8d853c8add5d1e7b0aafc4b68a3d9fb8e7a0da27970c2acf831fe63be4a0cd2c"]}}"##;

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

#[test]
fn docker_config_parses_and_keeps_unknown_fields() {
    let c = ImageConfig::from_json(DOCKER_CONFIG.as_bytes()).unwrap();
    assert_eq!(c.config.cmd.as_deref(), Some(&["bash".to_string()][..]));
    assert_eq!(c.config.user, None, "\"\" is Docker's unset");
    assert_eq!(c.config.working_dir, None);
    assert!(c.config.labels.is_empty() && c.config.on_build.is_empty());
    assert_eq!(c.config.entrypoint, None);
    assert_eq!(
        c.config.exposed_ports.keys().collect::<Vec<_>>(),
        ["443/tcp", "80/tcp"]
    );
    assert_eq!(c.config.healthcheck.as_ref().unwrap().retries, Some(3));
    assert_eq!(c.history[1].empty_layer, Some(true));
    assert_eq!(c.rootfs.diff_ids.len(), 1);
    assert_eq!(c.extra["docker_version"], "20.10.23");
    assert_eq!(c.config.extra["Hostname"], "");
    assert_eq!(c.platform(), Platform::new("linux", "amd64", None));

    // Round trip through canonical JSON loses nothing cairn models or keeps.
    let again = ImageConfig::from_json(&c.to_canonical_json()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn canonical_json_is_sorted_compact_and_stable() {
    let c = ImageConfig::from_json(DOCKER_CONFIG.as_bytes()).unwrap();
    let json = c.to_canonical_json();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(!text.contains(": ") && !text.contains('\n'));
    assert!(text.starts_with(
        r#"{"architecture":"amd64","config":{"AttachStdin":false,"Cmd":["bash"],"Domainname":"""#
    ));
    // Labels inserted in any order serialise the same.
    let mut a = c.clone();
    let mut b = c.clone();
    for (k, v) in [("z", "1"), ("a", "2"), ("m", "3")] {
        a.config.labels.insert(k.into(), v.into());
    }
    for (k, v) in [("m", "3"), ("z", "1"), ("a", "2")] {
        b.config.labels.insert(k.into(), v.into());
    }
    assert_eq!(a.to_canonical_json(), b.to_canonical_json());
    assert!(String::from_utf8(a.to_canonical_json())
        .unwrap()
        .contains(r#""Labels":{"a":"2","m":"3","z":"1"}"#));
    assert_eq!(c.digest(), Digest::of_bytes(&json));
}

#[test]
fn child_config_drops_base_build_fields_and_records_steps() {
    let base = ImageConfig::from_json(DOCKER_CONFIG.as_bytes()).unwrap();
    let mut c = base.for_child();
    assert!(c.created.is_none() && !c.extra.contains_key("container_config"));
    assert!(!c.config.extra.contains_key("Image"));
    c.created = Some(rfc3339(1_700_000_000));
    assert_eq!(c.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    c.push_step(
        History {
            created_by: Some("RUN true".into()),
            ..Default::default()
        },
        None,
    );
    c.push_step(
        History {
            created_by: Some("COPY . /".into()),
            ..Default::default()
        },
        Some(digest('a')),
    );
    assert_eq!(c.history.len(), 4);
    assert_eq!(c.history[2].empty_layer, Some(true));
    assert_eq!(c.history[3].empty_layer, None);
    assert_eq!(c.rootfs.diff_ids.last(), Some(&digest('a')));
    let json = String::from_utf8(c.to_canonical_json()).unwrap();
    assert!(
        json.contains(r#"{"created_by":"RUN true","empty_layer":true}"#),
        "{json}"
    );
}

#[test]
fn scratch_config() {
    let c = ImageConfig::new_scratch(&"linux/arm64".parse().unwrap());
    assert_eq!(
        String::from_utf8(c.to_canonical_json()).unwrap(),
        r#"{"architecture":"arm64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"},"variant":"v8"}"#
    );
}

#[test]
fn manifest_is_canonical_and_valid_oci() {
    let layers = [
        LayerDesc {
            digest: digest('b'),
            size: 10,
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            diff_id: digest('c'),
        },
        LayerDesc {
            digest: digest('d'),
            size: 20,
            media_type: cairn::layer::MEDIA_TYPE_TAR_ZSTD.into(),
            diff_id: digest('e'),
        },
    ];
    let json = manifest_json(&digest('a'), 5, &layers);
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"config":{"digest":"sha256:aaaa"#),
        "{text}"
    );
    let m = oci_spec::image::ImageManifest::from_reader(&json[..]).unwrap();
    assert_eq!(m.schema_version(), 2);
    assert_eq!(m.layers().len(), 2);
    assert_eq!(
        m.layers()[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "Docker media types are written as their OCI names"
    );
    assert_eq!(
        m.layers()[1].media_type().to_string(),
        cairn::layer::MEDIA_TYPE_TAR_ZSTD
    );
    assert_eq!(m.config().size(), 5);

    let mut d = Descriptor::new(
        MEDIA_TYPE_MANIFEST,
        &Digest::of_bytes(&json),
        json.len() as u64,
    );
    d.annotations
        .insert("org.opencontainers.image.ref.name".into(), "1.0".into());
    let idx = index_json(&[d]);
    let i = oci_spec::image::ImageIndex::from_reader(&idx[..]).unwrap();
    assert_eq!(i.manifests().len(), 1);
    assert!(String::from_utf8(idx)
        .unwrap()
        .contains(r#""annotations":{"org.opencontainers.image.ref.name":"1.0"}"#));
}
