//! Base images for tests, made from Debian packages, written as an OCI layout in plain Rust
//! (tar + flate2) and pushed to a harness [`Registry`] with `skopeo copy`.
//!
//! - [`push_busybox`]: Debian's `busybox-static` with its applet symlinks and an `/etc/passwd`
//!   holding root and nobody; one small layer, OCI media types.
//! - [`push_multi_layer`]: busybox plus extra small layers, pushed as Docker schema 2.
//! - [`push_manifest_list`]: an OCI index with linux/amd64 (busybox) and linux/arm64/v8.
//! - [`push_debian`]: `debootstrap --variant=minbase` of this machine's release, made once
//!   per machine under `/var/tmp/cairn-testdata/` (the same file `scripts/lib/images.sh` uses),
//!   gzipped once per machine too, so every push of it sends the same layer bytes.

use super::registry::Registry;
use cairn::digest::HashingWriter;
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const MTIME: u64 = 1_700_000_000;
const BUSYBOX: &str = "/bin/busybox";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One entry of a generated layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String, u32),
    File(String, u32, Vec<u8>),
    Symlink(String, String),
}

/// Where a layer's uncompressed tar comes from.
pub enum LayerSrc {
    Entries(Vec<Entry>),
    TarFile(PathBuf),
    /// An already gzipped layer and its diffID.
    Gzipped(PathBuf, String),
}

/// A descriptor of something written into the layout.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Blob {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout directory being filled.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn put(&self, media_type: &str, bytes: &[u8]) -> Blob {
        let d = cairn::Digest::of_bytes(bytes);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        Blob {
            media_type: media_type.into(),
            digest: d.to_string(),
            size: bytes.len() as u64,
        }
    }

    /// Writes a gzip layer; returns (blob descriptor, diffID).
    pub fn put_layer(&self, src: &LayerSrc) -> (Blob, String) {
        if let LayerSrc::Gzipped(path, diff_id) = src {
            let tmp = self.dir.join("blobs/layer.part");
            let mut w = HashingWriter::new(fs::File::create(&tmp).unwrap());
            io::copy(&mut fs::File::open(path).unwrap(), &mut w).unwrap();
            let (_, digest, size) = w.finish();
            fs::rename(&tmp, self.dir.join("blobs/sha256").join(digest.hex())).unwrap();
            let blob = Blob {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: digest.to_string(),
                size,
            };
            return (blob, diff_id.clone());
        }
        let tmp = self.dir.join("blobs/layer.part");
        let file = fs::File::create(&tmp).unwrap();
        let gz = GzEncoder::new(HashingWriter::new(file), flate2::Compression::fast());
        let mut diff = HashingWriter::new(gz);
        match src {
            LayerSrc::Entries(entries) => diff.write_all(&layer_tar(entries)).unwrap(),
            LayerSrc::TarFile(p) => {
                let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                io::copy(&mut f, &mut diff).unwrap();
            }
            LayerSrc::Gzipped(..) => unreachable!("handled above"),
        };
        let (gz, diff_id, _) = diff.finish();
        let (file, digest, size) = gz.finish().unwrap().finish();
        file.sync_all().unwrap();
        fs::rename(&tmp, self.dir.join("blobs/sha256").join(digest.hex())).unwrap();
        let blob = Blob {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: digest.to_string(),
            size,
        };
        (blob, diff_id.to_string())
    }

    /// Builds one image (config + manifest) from layers; returns the manifest descriptor.
    pub fn image(&self, layers: &[LayerSrc], arch: &str, variant: Option<&str>) -> Blob {
        let (descs, diff_ids): (Vec<Blob>, Vec<String>) =
            layers.iter().map(|l| self.put_layer(l)).unzip();
        let mut config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": descs.iter().map(|_| json!({"created_by": "cairn test harness"})).collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = self.put(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json(),
            "layers": descs.iter().map(Blob::json).collect::<Vec<_>>(),
        });
        self.put(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    /// Names `top` in the layout's `index.json` as tag `latest`.
    pub fn tag(&self, top: &Blob) {
        let mut d = top.json();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
        let index = json!({"schemaVersion": 2, "manifests": [d]});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A deterministic tar of `entries` (sorted, numeric root ownership, fixed mtime).
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut entries = entries.to_vec();
    entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
    let mut b = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{p}/"), io::empty()).unwrap();
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn entry_path(e: &Entry) -> &str {
    match e {
        Entry::Dir(p, _) | Entry::File(p, _, _) | Entry::Symlink(p, _) => p,
    }
}

/// The busybox root: the static binary, every applet as a symlink, passwd/group, /tmp.
pub fn busybox_entries() -> Vec<Entry> {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static (scripts/setup does)"
    );
    let mut bin = Vec::new();
    fs::File::open(BUSYBOX)
        .unwrap()
        .read_to_end(&mut bin)
        .unwrap();
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut e =
        vec![
        Entry::Dir("bin".into(), 0o755),
        Entry::Dir("etc".into(), 0o755),
        Entry::Dir("root".into(), 0o700),
        Entry::Dir("tmp".into(), 0o1777),
        Entry::Dir("usr".into(), 0o755),
        Entry::Dir("usr/bin".into(), 0o755),
        Entry::File("bin/busybox".into(), 0o755, bin),
        Entry::Symlink("usr/bin/env".into(), "/bin/busybox".into()),
        Entry::File(
            "etc/passwd".into(),
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
        Entry::File("etc/group".into(), 0o644, b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    ];
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            e.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
    }
    e
}

/// Copies the layout's `latest` to `docker://ADDR/REPO_TAG`; returns the manifest digest
/// the registry now serves for it.
pub fn skopeo_push(reg: &Registry, layout: &Layout, repo_tag: &str, extra: &[&str]) -> String {
    let digest_file = layout.dir.join("pushed.digest");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "-q", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .args(extra);
    if let Some((u, p)) = &reg.creds {
        cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
    }
    cmd.arg(format!("oci:{}:latest", layout.dir.display()))
        .arg(format!("docker://{}/{repo_tag}", reg.addr));
    let out = cmd
        .output()
        .expect("skopeo is needed to push test images (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}\nregistry log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        reg.log()
    );
    fs::read_to_string(digest_file).unwrap().trim().to_string()
}

fn new_layout(reg: &Registry, repo_tag: &str) -> Layout {
    let dir = reg.scratch(&repo_tag.replace(['/', ':'], "_"));
    let _ = fs::remove_dir_all(&dir);
    Layout::new(&dir)
}

/// Pushes the one-layer busybox image; returns its manifest digest.
pub fn push_busybox(reg: &Registry, repo_tag: &str) -> String {
    let layout = new_layout(reg, repo_tag);
    let m = layout.image(&[LayerSrc::Entries(busybox_entries())], "amd64", None);
    layout.tag(&m);
    skopeo_push(reg, &layout, repo_tag, &[])
}

/// Pushes busybox plus `extra` layers (each adds `/layer-N.txt`), converted by skopeo to
/// Docker schema 2 media types; returns the manifest digest.
pub fn push_multi_layer(reg: &Registry, repo_tag: &str, extra: usize) -> String {
    let layout = new_layout(reg, repo_tag);
    let mut layers = vec![LayerSrc::Entries(busybox_entries())];
    for i in 0..extra {
        let body = format!("layer {i}\n").repeat(1000 * (i + 1)).into_bytes();
        layers.push(LayerSrc::Entries(vec![Entry::File(
            format!("layer-{i}.txt"),
            0o644,
            body,
        )]));
    }
    let m = layout.image(&layers, "amd64", None);
    layout.tag(&m);
    skopeo_push(reg, &layout, repo_tag, &["--format", "v2s2"])
}

/// The digests of a pushed two-platform index.
#[derive(Debug, Clone)]
pub struct ManifestList {
    pub index: String,
    pub amd64: String,
    pub arm64: String,
}

/// Pushes an OCI index with linux/amd64 (busybox) and linux/arm64/v8 (a marker file).
pub fn push_manifest_list(reg: &Registry, repo_tag: &str) -> ManifestList {
    let layout = new_layout(reg, repo_tag);
    let amd64 = layout.image(&[LayerSrc::Entries(busybox_entries())], "amd64", None);
    let marker = vec![Entry::File("arch".into(), 0o644, b"arm64\n".to_vec())];
    let arm64 = layout.image(&[LayerSrc::Entries(marker)], "arm64", Some("v8"));
    let mut a = amd64.json();
    a["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut b = arm64.json();
    b["platform"] = json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [a, b],
    });
    let index = layout.put(
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    layout.tag(&index);
    let pushed = skopeo_push(reg, &layout, repo_tag, &["--all"]);
    ManifestList {
        index: pushed,
        amd64: amd64.digest,
        arm64: arm64.digest,
    }
}

/// Pushes a Debian minbase root of this machine's release as one layer; returns the digest.
pub fn push_debian(reg: &Registry, repo_tag: &str) -> String {
    let (gz, diff_id) = debian_layer_gz();
    let layout = new_layout(reg, repo_tag);
    let m = layout.image(&[LayerSrc::Gzipped(gz, diff_id)], "amd64", None);
    layout.tag(&m);
    skopeo_push(reg, &layout, repo_tag, &[])
}

fn testdata() -> PathBuf {
    let data = PathBuf::from(
        std::env::var_os("CAIRN_TESTDATA").unwrap_or_else(|| "/var/tmp/cairn-testdata".into()),
    );
    fs::create_dir_all(&data).unwrap();
    data
}

fn suite() -> String {
    os_release("VERSION_CODENAME").unwrap_or_else(|| "bookworm".into())
}

/// Holds the machine-wide test-data lock, so parallel tests wait for one maker.
fn testdata_lock() -> nix::fcntl::Flock<fs::File> {
    let lock = fs::File::create(testdata().join(".debian.lock")).unwrap();
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// The Debian root as a gzip layer and its diffID, compressed once per machine
/// (`debian-<suite>-minbase.tar.gz` beside the tar), so every push sends the same bytes.
pub fn debian_layer_gz() -> (PathBuf, String) {
    let tar = debian_rootfs_tar();
    let gz = tar.with_extension("tar.gz");
    let diff_file = tar.with_extension("tar.diffid");
    let _held = testdata_lock();
    if !(gz.exists() && diff_file.exists()) {
        let part = tar.with_extension("tar.gz.part");
        let out = GzEncoder::new(
            fs::File::create(&part).unwrap(),
            flate2::Compression::fast(),
        );
        let mut w = HashingWriter::new(out);
        io::copy(&mut fs::File::open(&tar).unwrap(), &mut w).unwrap();
        let (enc, diff_id, _) = w.finish();
        enc.finish().unwrap().sync_all().unwrap();
        fs::write(&diff_file, diff_id.as_str()).unwrap();
        fs::rename(&part, &gz).unwrap();
    }
    (
        gz,
        fs::read_to_string(&diff_file).unwrap().trim().to_string(),
    )
}

/// `/var/tmp/cairn-testdata/debian-<suite>-minbase.tar`, made once per machine (under a
/// lock, so parallel tests wait for one debootstrap instead of racing).
pub fn debian_rootfs_tar() -> PathBuf {
    let data = testdata();
    let suite = suite();
    let tar = data.join(format!("debian-{suite}-minbase.tar"));
    let _held = testdata_lock();
    if fs::metadata(&tar).is_ok_and(|m| m.len() > 0) {
        return tar;
    }
    let mirror = apt_mirror();
    let work = tempfile::Builder::new()
        .prefix("debootstrap.")
        .tempdir_in(&data)
        .unwrap();
    let root = work.path().join("root");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &suite])
        .arg(&root)
        .arg(&mirror)
        .output()
        .expect("debootstrap is needed for the Debian base image (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "debootstrap {suite} from {mirror} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg("rm -rf \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*")
        .arg("sh")
        .arg(&root)
        .status();
    let part = tar.with_extension("tar.part");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&part)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the debootstrap root failed");
    fs::rename(&part, &tar).unwrap();
    tar
}

fn os_release(key: &str) -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The Debian mirror this machine's apt uses (deb822 `URIs:` or a one-line `deb` entry).
fn apt_mirror() -> String {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|v| v.split_whitespace().next().map(String::from));
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_list = || {
        list.lines()
            .filter(|l| l.starts_with("deb ") && !l.contains("security"))
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.contains("://"))
                    .map(String::from)
            })
    };
    from_deb822
        .or_else(from_list)
        .expect("cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list")
}
