//! Outputs of a small hand-made image (Debian's static busybox, built with cairn's own
//! layer and image code): docker-archive loaded by the machine's Docker and read by skopeo,
//! OCI layout unpacked by umoci, `docker load` through the CLI and through the Engine API.

mod common;

use cairn::export::{self, BuiltImage, LoadVia};
use cairn::image::{manifest_json, History, ImageConfig, LayerDesc};
use cairn::layer::{self, Compression, LayerOptions};
use cairn::store::Store;
use cairn::Platform;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// A store holding a one-layer busybox image compressed as `c`. `test` goes into a label
/// so that tests running at once never share an image ID (one's `docker rmi` would pull
/// the image from under another).
fn busybox_image(root: &Path, c: Compression, test: &str) -> (Store, BuiltImage) {
    let store = Store::open(&root.join("store")).unwrap();
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    symlink("busybox", tree.join("bin/sh")).unwrap();
    let opts = LayerOptions {
        compression: c,
        source_date_epoch: Some(1_700_000_000),
        ..LayerOptions::default()
    };
    let l = layer::from_upper(&store, &tree, &opts).unwrap().unwrap();
    assert_eq!(l.media_type, c.media_type());
    let mut config = ImageConfig::new_scratch(&Platform::host());
    config.created = Some(cairn::image::rfc3339(1_700_000_000));
    config.config.cmd = Some(vec!["/bin/busybox".into(), "echo".into(), "ok".into()]);
    config
        .config
        .labels
        .insert("org.cairn.test".into(), test.into());
    let h = History {
        created_by: Some("COPY busybox /bin/".into()),
        ..History::default()
    };
    config.push_step(h, Some(l.diff_id.clone()));
    let json = config.to_canonical_json();
    let config_digest = store.put_bytes(&json).unwrap();
    let layers = vec![LayerDesc::from(&l)];
    let manifest = store
        .put_bytes(&manifest_json(&config_digest, json.len() as u64, &layers))
        .unwrap();
    let img = BuiltImage {
        manifest,
        config: config_digest,
        layers,
    };
    (store, img)
}

/// `img` with one more layer on top (a file `/hello` holding `text`), in the same store.
fn add_layer(store: &Store, img: &BuiltImage, root: &Path, text: &str) -> BuiltImage {
    let tree = root.join("top");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hello"), text).unwrap();
    let opts = LayerOptions {
        source_date_epoch: Some(1_700_000_000),
        ..LayerOptions::default()
    };
    let l = layer::from_upper(store, &tree, &opts).unwrap().unwrap();
    let mut config = ImageConfig::from_json(&store.read_blob(&img.config).unwrap()).unwrap();
    let h = History {
        created_by: Some("COPY hello /".into()),
        ..History::default()
    };
    config.push_step(h, Some(l.diff_id.clone()));
    let json = config.to_canonical_json();
    let config_digest = store.put_bytes(&json).unwrap();
    let mut layers = img.layers.clone();
    layers.push(LayerDesc::from(&l));
    let manifest = store
        .put_bytes(&manifest_json(&config_digest, json.len() as u64, &layers))
        .unwrap();
    BuiltImage {
        manifest,
        config: config_digest,
        layers,
    }
}

/// A tag no other test (or run) uses.
fn unique_tag(what: &str) -> String {
    format!(
        "cairn-test-{what}-{}:t{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    )
}

/// Removes an image when dropped, whatever the test's outcome.
struct Rmi(Vec<String>);

impl Drop for Rmi {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", r]).output();
        }
    }
}

fn docker_run_ok(image: &str) {
    let out = common::run_ok(Command::new("docker").args([
        "run",
        "--rm",
        image,
        "/bin/busybox",
        "echo",
        "ok",
    ]));
    assert_eq!(out.trim(), "ok");
}

#[test]
fn docker_archive_loads_in_docker_and_skopeo_reads_it() {
    common::require_docker();
    let t = common::tempdir();
    let (store, img) = busybox_image(t.path(), Compression::Zstd, "archive");
    let tag = unique_tag("archive");
    let _rmi = Rmi(vec![tag.clone(), img.config.to_string()]);
    let path = t.path().join("image.tar");
    export::write_docker_archive(
        &store,
        &img,
        std::slice::from_ref(&tag),
        fs::File::create(&path).unwrap(),
    )
    .unwrap();

    // Deterministic: the same image gives the same archive bytes.
    let mut again = Vec::new();
    export::write_docker_archive(&store, &img, std::slice::from_ref(&tag), &mut again).unwrap();
    assert_eq!(fs::read(&path).unwrap(), again);

    // Docker 20.10 reads no zstd: the archive lists the layer as plain tar (digest = diffID)
    // under its own manifest, streamed from the zstd blob and never stored.
    let mut ar = tar::Archive::new(&again[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.ends_with(&[
        "index.json".into(),
        "manifest.json".into(),
        "oci-layout".into(),
        "repositories".into()
    ]));
    let compat = export::docker_compatible(&store, &img).unwrap();
    assert_ne!(compat.manifest, img.manifest);
    assert_eq!(compat.config, img.config);
    assert_eq!(compat.layers[0].diff_id, img.layers[0].diff_id);
    assert_eq!(compat.layers[0].media_type, Compression::None.media_type());
    assert_eq!(compat.layers[0].digest, img.layers[0].diff_id);
    assert!(
        !store.has_blob(&compat.layers[0].digest),
        "the plain tar is not stored"
    );
    assert!(names.contains(&format!("blobs/sha256/{}", img.layers[0].diff_id.hex())));

    let out = common::run_ok(Command::new("docker").arg("load").arg("-i").arg(&path));
    assert!(out.contains(&tag), "{out}");
    docker_run_ok(&tag);
    let id = common::run_ok(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &tag]),
    );
    assert_eq!(
        id.trim(),
        img.config.as_str(),
        "Docker 20.10's image ID is the config digest"
    );

    let arch = format!("docker-archive:{}", path.display());
    let v: serde_json::Value = serde_json::from_str(&common::run_ok(
        Command::new("skopeo").args(["inspect", &arch]),
    ))
    .unwrap();
    assert_eq!(v["Labels"]["org.cairn.test"], "archive");
    // skopeo presents docker-archive layers uncompressed, by diffID.
    assert_eq!(v["Layers"][0], compat.layers[0].diff_id.as_str());
    let oci = format!("oci-archive:{}", path.display());
    let raw = common::run_ok(Command::new("skopeo").args(["inspect", "--raw", &oci]));
    assert_eq!(cairn::Digest::of_bytes(raw.as_bytes()), compat.manifest);
    // skopeo copy re-hashes every blob of the OCI side, the streamed tar included.
    let copy = format!("dir:{}", t.path().join("copy").display());
    common::run_ok(Command::new("skopeo").args(["copy", &oci, &copy]));
}

#[test]
fn oci_layout_unpacks_with_umoci_and_reads_with_skopeo() {
    let t = common::tempdir();
    for c in [Compression::Gzip, Compression::Zstd] {
        let dir = t.path().join(format!("{c}"));
        let (store, img) = busybox_image(
            &dir,
            c,
            "oci_layout_unpacks_with_umoci_and_reads_with_skopeo",
        );
        let layout = dir.join("layout");
        export::write_oci_layout(&store, &img, &["cairn/busybox:1".to_string()], &layout).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], img.manifest.as_str());
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "1"
        );
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "docker.io/cairn/busybox:1"
        );

        let raw = common::run_ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:1", layout.display()),
        ]));
        assert_eq!(cairn::Digest::of_bytes(raw.as_bytes()), img.manifest, "{c}");

        // skopeo copies (and so verifies) every blob.
        let copy = format!("dir:{}", dir.join("copy").display());
        let src = format!("oci:{}:1", layout.display());
        common::run_ok(Command::new("skopeo").args(["copy", &src, &copy]));
        if c == Compression::Zstd {
            // umoci 0.4.7 (Debian 12) knows no zstd layers.
            continue;
        }
        let bundle = dir.join("bundle");
        common::run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &format!("{}:1", layout.display())])
                .arg(&bundle),
        );
        assert_eq!(
            fs::read(bundle.join("rootfs/bin/busybox")).unwrap(),
            fs::read("/bin/busybox").unwrap(),
            "{c}"
        );
        assert_eq!(
            fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
            Path::new("busybox")
        );
    }
}

#[test]
fn docker_load_via_cli_then_skips_when_present() {
    common::require_docker();
    let t = common::tempdir();
    let (store, img) = busybox_image(
        t.path(),
        Compression::Gzip,
        "docker_load_via_cli_then_skips_when_present",
    );
    let tag = unique_tag("cli");
    let tag2 = unique_tag("cli2");
    let _rmi = Rmi(vec![tag.clone(), tag2.clone(), img.config.to_string()]);
    let cli = LoadVia::Cli(common::which("docker"));
    let id = export::docker_load_via(&cli, &store, &img, std::slice::from_ref(&tag)).unwrap();
    assert_eq!(id, img.config.as_str());
    docker_run_ok(&tag);

    // Present already: no load happens (the layer blob is gone, so a load could not be
    // written), but the new tag is applied.
    fs::remove_file(store.blob_path(&img.layers[0].digest)).unwrap();
    let id2 = export::docker_load_via(&cli, &store, &img, std::slice::from_ref(&tag2)).unwrap();
    assert_eq!(id2, id);
    docker_run_ok(&tag2);
}

#[test]
fn docker_load_via_engine_api() {
    common::require_docker();
    let t = common::tempdir();
    let (store, img) = busybox_image(t.path(), Compression::Zstd, "docker_load_via_engine_api");
    let tag = unique_tag("api");
    let _rmi = Rmi(vec![tag.clone(), img.config.to_string()]);
    let sock = LoadVia::Socket("/var/run/docker.sock".into());
    // What a build on this machine picks: nothing points the CLI elsewhere.
    assert_eq!(LoadVia::detect().unwrap(), sock);
    let id = export::docker_load_via(&sock, &store, &img, std::slice::from_ref(&tag)).unwrap();
    assert_eq!(id, img.config.as_str());
    docker_run_ok(&tag);

    // Present already: no load (the layer blob is gone), the new tag is applied.
    let tag2 = unique_tag("api2");
    let _rmi2 = Rmi(vec![tag2.clone()]);
    fs::remove_file(store.blob_path(&img.layers[0].digest)).unwrap();
    let id2 = export::docker_load_via(&sock, &store, &img, std::slice::from_ref(&tag2)).unwrap();
    assert_eq!(id2, id);
    docker_run_ok(&tag2);
    // Both tags already name it (the no-op build's case): the same ID, nothing loaded.
    let both = [tag.clone(), tag2.clone()];
    assert_eq!(
        export::docker_load_via(&sock, &store, &img, &both).unwrap(),
        id
    );

    // A tag that names another image is moved back to this one (no load: the blob is gone).
    let (ostore, oimg) = busybox_image(&t.path().join("other"), Compression::Gzip, "other");
    let _rmi3 = Rmi(vec![oimg.config.to_string()]);
    assert_ne!(oimg.config, img.config);
    let oid = export::docker_load_via(&sock, &ostore, &oimg, std::slice::from_ref(&tag2)).unwrap();
    assert_eq!(oid, oimg.config.as_str());
    assert_eq!(
        export::docker_load_via(&sock, &store, &img, &both).unwrap(),
        id
    );
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag2])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
}

/// After a change late in a Dockerfile the engine already has the bottom layers (they are
/// the image the tag names): a load sends only the others. The classic image store (this
/// machine's) never opens the ones left out; the containerd image store (Engine 26) has
/// their blobs in its content store, kept by the image the tag names until the new image
/// is in.
#[test]
fn load_sends_only_the_layers_the_engine_lacks() {
    for e in [common::engines::system(), common::engines::engine26()] {
        thin_load(&e);
    }
}

fn thin_load(e: &common::engines::Engine) {
    let t = common::tempdir();
    let test = format!("load_sends_only_the_layers_the_engine_lacks-{}", e.name);
    let (store, one) = busybox_image(t.path(), Compression::Zstd, &test);
    let two = add_layer(&store, &one, t.path(), "hello from the top layer");
    let tag = unique_tag("thin");
    let via = LoadVia::Socket(e.host.strip_prefix("unix://").unwrap().into());
    let id_one = export::docker_load_via(&via, &store, &one, std::slice::from_ref(&tag)).unwrap();
    // Without the bottom layer's blob, only an archive that leaves it out can be written.
    fs::remove_file(store.blob_path(&one.layers[0].digest)).unwrap();
    let id = export::docker_load_via(&via, &store, &two, std::slice::from_ref(&tag)).unwrap();
    let want = if e.containerd_store {
        &two.manifest
    } else {
        &two.config
    };
    assert_eq!(id, want.as_str(), "{}", e.name);
    // The old image gone, the new one still runs (its bottom layer is the engine's).
    e.rmi(&[id_one]);
    let out = common::run_ok(e.docker().args([
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/busybox",
        &tag,
        "cat",
        "/hello",
    ]));
    assert_eq!(out.trim(), "hello from the top layer", "{}", e.name);

    // A tag naming an unrelated image shares nothing: the whole image is sent, and with
    // the bottom blob gone that fails on cairn's side, naming the blob.
    let other = unique_tag("thin-other");
    let err = export::docker_load_via(
        &via,
        &store,
        &add_layer(&store, &one, &t.path().join("3"), "third"),
        std::slice::from_ref(&other),
    )
    .unwrap_err();
    assert!(!err.is_docker(), "{}: {err}", e.name);
    e.rmi(&[tag, other, id]);
}

#[test]
fn unreachable_docker_is_a_clear_error() {
    let t = common::tempdir();
    let (store, img) = busybox_image(
        t.path(),
        Compression::Gzip,
        "unreachable_docker_is_a_clear_error",
    );
    let via = LoadVia::Socket(t.path().join("no-docker.sock"));
    let err = export::docker_load_via(&via, &store, &img, &["x:1".into()]).unwrap_err();
    assert!(matches!(err, export::Error::DockerUnreachable(_)), "{err}");
    assert_eq!(cairn::Error::from(err).exit_code(), cairn::ExitCode::Docker);

    // The docker CLI pointed at a socket with nothing behind it says so too.
    let fake = t.path().join("docker");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = export::docker_load_via(&LoadVia::Cli(fake.clone()), &store, &img, &[]).unwrap_err();
    assert!(matches!(err, export::Error::DockerUnreachable(_)), "{err}");

    fs::write(
        &fake,
        "#!/bin/sh\necho 'permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    let err = export::docker_load_via(&LoadVia::Cli(fake), &store, &img, &[]).unwrap_err();
    assert!(matches!(err, export::Error::DockerPermission(_)), "{err}");
    assert!(err.to_string().contains("docker group"), "{err}");
}

#[test]
fn bad_tags_are_refused_before_anything_is_written() {
    let t = common::tempdir();
    let (store, img) = busybox_image(
        t.path(),
        Compression::Gzip,
        "bad_tags_are_refused_before_anything_is_written",
    );
    let err =
        export::write_docker_archive(&store, &img, &["Bad Tag".into()], Vec::new()).unwrap_err();
    assert!(matches!(err, export::Error::InvalidTag(_)), "{err}");
}

#[test]
fn engine_errors_during_load_are_reported() {
    common::require_docker();
    let t = common::tempdir();
    let (store, good) = busybox_image(
        t.path(),
        Compression::Gzip,
        "engine_errors_during_load_are_reported",
    );
    // A config whose diffID does not match the layer: the engine refuses it mid-load.
    let mut config = ImageConfig::from_json(&store.read_blob(&good.config).unwrap()).unwrap();
    config.rootfs.diff_ids = vec![cairn::Digest::of_bytes(b"not the layer")];
    let json = config.to_canonical_json();
    let config_digest = store.put_bytes(&json).unwrap();
    let manifest = store
        .put_bytes(&manifest_json(
            &config_digest,
            json.len() as u64,
            &good.layers,
        ))
        .unwrap();
    let bad = BuiltImage {
        manifest,
        config: config_digest,
        layers: good.layers.clone(),
    };
    let tag = unique_tag("broken");
    let _rmi = Rmi(vec![tag.clone(), bad.config.to_string()]);
    let vias = [
        LoadVia::detect().unwrap(),
        LoadVia::Socket("/var/run/docker.sock".into()),
    ];
    for via in vias {
        let err =
            export::docker_load_via(&via, &store, &bad, std::slice::from_ref(&tag)).unwrap_err();
        assert!(
            matches!(err, export::Error::Docker { .. }),
            "{via:?}: {err}"
        );
        assert!(err.to_string().contains("diff"), "{via:?}: {err}");
    }
}

#[test]
fn oci_layout_keeps_other_images_and_retags() {
    let t = common::tempdir();
    let layout = t.path().join("layout");
    let (s1, one) = busybox_image(&t.path().join("1"), Compression::Gzip, "one");
    let (s2, two) = busybox_image(&t.path().join("2"), Compression::Gzip, "two");
    let refs = |dir: &Path| -> Vec<(String, String)> {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str();
                (
                    name.unwrap_or("").to_string(),
                    m["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    export::write_oci_layout(&s1, &one, &["app:1".into(), "app:stable".into()], &layout).unwrap();
    export::write_oci_layout(&s2, &two, &["app:2".into()], &layout).unwrap();
    let (m1, m2) = (one.manifest.to_string(), two.manifest.to_string());
    assert_eq!(
        refs(&layout),
        [
            ("1".into(), m1.clone()),
            ("stable".into(), m1.clone()),
            ("2".into(), m2.clone())
        ]
    );
    // Moving a tag replaces only that entry.
    export::write_oci_layout(&s2, &two, &["app:stable".into()], &layout).unwrap();
    assert_eq!(
        refs(&layout),
        [
            ("1".into(), m1),
            ("2".into(), m2.clone()),
            ("stable".into(), m2)
        ]
    );
    for tag in ["1", "2", "stable"] {
        let src = format!("oci:{}:{tag}", layout.display());
        common::run_ok(Command::new("skopeo").args(["inspect", "--raw", &src]));
    }
}
