//! Pinned cache-key vectors: for every `testdata/keys/<case>/`, each step's key of its
//! `Dockerfile` must equal the line in its `keys` file. Keys are a promise to every user's
//! cache, so any change to any byte that reaches a key fails here.
//!
//! Keys are computed with [`cairn::executor::step_keys`], which runs no step. Everything
//! that reaches a key is fixed by the test, never by the machine: the platform is
//! linux/amd64, the base image is a hand-written image seeded into a fresh store (its
//! manifest digest is [`BASE_DIGEST`]) and resolved with `--pull=never`, and the context is
//! copied into a temporary directory with modes normalised to 0644/0755 (what git checks
//! out depends on the umask).
//!
//! A case may have an `options` file, one setting per line: `build-arg K=V`, `target NAME`,
//! `network none|host|default`, `context DIR` (a directory of the repository used as the context
//! instead of the case's `context/`; its `Dockerfile` is used when the case has none).
//!
//! An intended key change (never a side effect) is regenerated with `UPDATE_GOLDEN=1 cargo
//! test --test keys`, reviewed, and named in the README's changelog.

use cairn::executor::{self, BuildOptions, Mode, Reporter};
use cairn::layer::Compression;
use cairn::registry::{PullPolicy, Reference, RegistryOptions};
use cairn::sandbox::Network;
use cairn::store::Store;
use cairn::{Digest, Platform};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The manifest digest of the seeded base image, as the Dockerfiles name it.
const BASE_DIGEST: &str = "sha256:65394d8bb7cd20b33fa37383b3204177a6e542560037bf2cd85fae1e52a7fce7";

/// Tags that resolve to the seeded base under `--pull=never`.
const BASE_TAGS: &[&str] = &["localhost:5000/keys/base:1.0", "debian:bookworm"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Writes the base image into `store` (an empty layer, a config with `PATH` and `CMD`,
/// OCI media types; every byte written here) and tags it; returns its manifest digest.
fn seed_base(store: &Store) -> Digest {
    let layer = vec![0u8; 1024]; // an empty tar archive
    let layer_digest = store.put_bytes(&layer).unwrap();
    let config = format!(
        concat!(
            r#"{{"architecture":"amd64","os":"linux","#,
            r#""config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}},"#,
            r#""rootfs":{{"type":"layers","diff_ids":["{}"]}},"#,
            r#""history":[{{"created_by":"cairn key vectors"}}]}}"#
        ),
        layer_digest
    );
    let config_digest = store.put_bytes(config.as_bytes()).unwrap();
    let manifest = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"#,
            r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#
        ),
        config_digest,
        config.len(),
        layer_digest,
        layer.len()
    );
    let digest = store.put_bytes(manifest.as_bytes()).unwrap();
    for tag in BASE_TAGS {
        let key = Reference::parse(tag).unwrap().tag_key().unwrap();
        store.tag_set(&key, &digest).unwrap();
    }
    digest
}

/// Copies `from` into `to` with modes normalised: directories 0755, files 0755 when any
/// execute bit is set and 0644 otherwise; symlinks as they are.
fn copy_normalised(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    let mut entries: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_normalised(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
            let exec = fs::metadata(&src).unwrap().permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o755 } else { 0o644 };
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

struct Case {
    dockerfile: String,
    context: PathBuf,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    network: Network,
}

fn read_case(dir: &Path) -> Case {
    let mut case = Case {
        dockerfile: String::new(),
        context: dir.join("context"),
        build_args: BTreeMap::new(),
        target: None,
        network: Network::Default,
    };
    if let Ok(text) = fs::read_to_string(dir.join("options")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (what, value) = line.split_once(' ').expect("option VALUE");
            match what {
                "build-arg" => {
                    let (k, v) = value.split_once('=').expect("build-arg K=V");
                    case.build_args.insert(k.into(), v.into());
                }
                "target" => case.target = Some(value.into()),
                "network" => {
                    case.network = match value {
                        "none" => Network::None,
                        "host" => Network::Host,
                        "default" => Network::Default,
                        other => panic!("network {other}?"),
                    }
                }
                "context" => case.context = repo().join(value),
                other => panic!("{}: unknown option {other}", dir.display()),
            }
        }
    }
    let own = dir.join("Dockerfile");
    let file = if own.is_file() {
        own
    } else {
        case.context.join("Dockerfile")
    };
    case.dockerfile = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    case
}

/// `N KEY TEXT` per step, in build order.
fn keys_of(dir: &Path) -> Result<String, String> {
    let case = read_case(dir);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let base = seed_base(&store);
    assert_eq!(
        base.to_string(),
        BASE_DIGEST,
        "the seeded base image changed"
    );
    let context = tmp.path().join("context");
    if case.context.is_dir() {
        copy_normalised(&case.context, &context);
    } else {
        fs::create_dir_all(&context).unwrap();
    }
    let opts = BuildOptions {
        context: Some(context),
        dockerfile_path: PathBuf::from("Dockerfile"),
        dockerfile_text: case.dockerfile,
        ignore_file: None,
        build_args: case.build_args,
        target: case.target,
        platform: Platform::new("linux", "amd64", None),
        labels: BTreeMap::new(),
        no_cache: false,
        pull: PullPolicy::Never,
        network: case.network,
        limits: Default::default(),
        compression: Compression::Gzip,
        source_date_epoch: None,
        registry: RegistryOptions {
            quiet: true,
            ..RegistryOptions::default()
        },
        mirrors: BTreeMap::new(),
        remote_cache: None,
        // Keys never depend on who builds: no step runs here.
        privilege: cairn::userns::Privilege::Root,
        // Entitlements gate steps, they never reach a key: allow what the cases use.
        mounts: cairn::mounts::MountOptions {
            allow_network_host: true,
            ..Default::default()
        },
        jobs: 0,
        final_base: None,
    };
    let steps = executor::step_keys(&store, &opts, &Reporter::new(Mode::Quiet, false))
        .map_err(|e| format!("cannot key: {e}"))?;
    Ok(steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {} {}\n", i + 1, s.key, s.text))
        .collect())
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(repo().join("testdata/keys"))
        .expect("testdata/keys exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_step_key_is_pinned() {
    let cases = cases();
    assert!(cases.len() >= 10, "the key vectors are missing");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let got = match keys_of(dir) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let file = dir.join("keys");
        if update() {
            fs::write(&file, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&file).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "{name}: keys changed (a key change needs a README changelog line)\n--- want\n{want}--- got\n{got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn keys_do_not_depend_on_the_store_or_a_second_run() {
    // The same Dockerfile keyed twice, in two stores, gives the same keys.
    let dir = repo().join("testdata/keys/workspace");
    assert_eq!(keys_of(&dir), keys_of(&dir));
}

#[test]
fn base_keys_are_pinned() {
    // The parent of every stage's first step; a stage with no instruction has only this.
    let amd64 = Platform::new("linux", "amd64", None);
    let arm64 = Platform::new("linux", "arm64", None);
    let base = Digest::parse(BASE_DIGEST).unwrap();
    let got = [
        cairn::cache::base_key(&base, &amd64).to_string(),
        cairn::cache::scratch_key(&amd64).to_string(),
        cairn::cache::scratch_key(&arm64).to_string(),
    ];
    assert_eq!(
        got,
        [
            "sha256:f2d830cc65b3019c9c762a45e5305b2180003c35a86dc95c780d4e00ede55ead",
            "sha256:7a55e3d19c157036df5ce83683e48706d90c8d2323139be20d61bffa5d3707e2",
            "sha256:fc6a6d43558d1e8d97a88f4d4794d319c5f8e4046e08c974d2bf3a997c3f2d0b",
        ],
        "the key of FROM changed (a key change needs a README changelog line)"
    );
}
