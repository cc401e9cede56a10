//! [`write_docker_archive`] and [`write_oci_layout`]: a [`BuiltImage`] written out as a
//! docker-archive tar (OCI layout + `manifest.json` + `repositories`) or an OCI layout
//! directory. Both are deterministic: sorted entries, fixed modes, owners and mtimes.

use super::compat;
use super::convert::{recompressed, OutputCompression};
use super::tags::{full_name, normalize_tag, repo_and_tag};
use super::{BuiltImage, Error};
use crate::digest::Digest;
use crate::image::{
    index_json, to_canonical_json, Descriptor, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
    MEDIA_TYPE_MANIFEST,
};
use crate::store::Store;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// One image in Docker's `manifest.json`.
#[derive(Serialize)]
struct DockerManifest<'a> {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: &'a [String],
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes the docker-archive of `img` (tagged `tags`) to `out`, loadable by `docker load`
/// of any engine version and readable as an OCI layout (`skopeo`, `oci-archive`).
pub fn write_docker_archive(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    out: impl Write,
) -> Result<(), Error> {
    write_docker_archive_omitting(store, img, tags, 0, out)
}

/// [`write_docker_archive`] without the bytes of the first `omit` layers: `manifest.json`
/// still lists them, for an engine that already has that chain of layers and so never
/// opens their files (the classic image store; see `docker::present_layers`). The OCI
/// part of such an archive is incomplete: it is only for that engine.
pub(crate) fn write_docker_archive_omitting(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    omit: usize,
    out: impl Write,
) -> Result<(), Error> {
    let compat = compat::prepare(store, img)?;
    write_archive(store, &compat, tags, omit, out)
}

/// What one entry of a docker-archive holds.
enum Body {
    Dir,
    Blob(Digest),
    Bytes(Vec<u8>),
}

/// One entry of a docker-archive: its path, size and contents.
struct Entry {
    path: String,
    size: u64,
    body: Body,
}

/// The entries of the docker-archive of the image `compat` describes, in order.
fn archive_entries(
    store: &Store,
    compat: &compat::Compat,
    tags: &[String],
    omit: usize,
) -> Result<Vec<Entry>, Error> {
    let tags = normalized(tags)?;
    let img = &compat.image;
    let omit = omit.min(img.layers.len());
    // A digest also used by a layer that is sent (the same tar twice) is sent.
    let omitted: BTreeSet<&Digest> = img.layers[..omit]
        .iter()
        .map(|l| &l.digest)
        .filter(|d| !img.layers[omit..].iter().any(|l| &l.digest == *d))
        .collect();
    let dir = |p: &str| Entry {
        path: p.into(),
        size: 0,
        body: Body::Dir,
    };
    let bytes = |p: &str, b: Vec<u8>| Entry {
        path: p.into(),
        size: b.len() as u64,
        body: Body::Bytes(b),
    };
    let mut entries = vec![dir("blobs/"), dir("blobs/sha256/")];
    for d in blob_set(img).into_iter().filter(|d| !omitted.contains(d)) {
        entries.push(Entry {
            path: format!("blobs/sha256/{}", d.hex()),
            size: compat.blob_size(store, &d)?,
            body: Body::Blob(d),
        });
    }
    entries.push(bytes(
        "index.json",
        index_json(&index_descriptors(store, img, &tags)?),
    ));
    let docker = [DockerManifest {
        config: format!("blobs/sha256/{}", img.config.hex()),
        repo_tags: &tags,
        layers: img
            .layers
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
            .collect(),
    }];
    entries.push(bytes("manifest.json", to_canonical_json(&docker)));
    entries.push(bytes("oci-layout", OCI_LAYOUT.to_vec()));
    entries.push(bytes("repositories", repositories(img, &tags)));
    Ok(entries)
}

/// The docker-archive of the image `compat` describes (its blobs from the store, or
/// streamed as it says), tagged `tags`, without the bytes of the first `omit` layers.
pub(crate) fn write_archive(
    store: &Store,
    compat: &compat::Compat,
    tags: &[String],
    omit: usize,
    out: impl Write,
) -> Result<(), Error> {
    let entries = archive_entries(store, compat, tags, omit)?;
    let mut b = tar::Builder::new(out);
    for e in entries {
        match e.body {
            Body::Dir => append_dir(&mut b, &e.path)?,
            Body::Blob(d) => {
                let data = compat.open_blob(store, &d)?;
                append_file(&mut b, &e.path, e.size, data)?;
            }
            Body::Bytes(bytes) => append_bytes(&mut b, &e.path, &bytes)?,
        }
    }
    b.into_inner()
        .map_err(Error::Write)?
        .flush()
        .map_err(Error::Write)
}

/// What an output wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The digest of the image's manifest as the output holds it (its layers may be
    /// compressed otherwise than in the store).
    pub manifest: Digest,
    /// The output already held exactly this image and was left as it was.
    pub unchanged: bool,
}

/// Writes the docker-archive of `img` (tagged `tags`) to the file `path`, its layers as
/// `oc` asks (by default: as stored, zstd ones as plain tar, which every engine loads). A
/// file that already holds exactly that archive — the same entries, sizes and metadata
/// (blobs are named by their digests) — is left alone; another is replaced whole, through
/// a temporary file beside it.
pub fn write_docker_archive_file(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    path: &Path,
    oc: &OutputCompression,
) -> Result<Written, Error> {
    let compat = match oc.compression {
        None => compat::prepare(store, img)?,
        Some(c) => compat::Compat::as_is(&recompressed(store, img, c, oc.level, oc.force)?),
    };
    let manifest = compat.image.manifest.clone();
    let entries = archive_entries(store, &compat, tags, 0)?;
    if archive_matches(path, &entries) {
        return Ok(Written {
            manifest,
            unchanged: true,
        });
    }
    // A device or pipe (`/dev/stdout`) is written to as it is, never replaced.
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(Error::io(path))?;
        write_archive(store, &compat, tags, 0, io::BufWriter::new(f))?;
        return Ok(Written {
            manifest,
            unchanged: false,
        });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Created as `File::create` would (0666 less the umask), not tempfile's 0600.
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-archive-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(Error::io(path))?;
    write_archive(
        store,
        &compat,
        tags,
        0,
        io::BufWriter::with_capacity(256 * 1024, tmp.as_file()),
    )?;
    tmp.persist(path).map_err(|e| Error::io(path)(e.error))?;
    Ok(Written {
        manifest,
        unchanged: false,
    })
}

/// Whether the tar at `path` has exactly `entries`: same length, same names and sizes in
/// the same order, the same metadata bytes. Blob bodies are not read.
fn archive_matches(path: &Path, entries: &[Entry]) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let expected_len: u64 = entries
        .iter()
        .map(|e| 512 + e.size.div_ceil(512) * 512)
        .sum::<u64>()
        + 1024;
    if f.metadata().map(|m| m.len()).ok() != Some(expected_len) {
        return false;
    }
    let mut ar = tar::Archive::new(io::BufReader::new(f));
    let Ok(mut found) = ar.entries_with_seek() else {
        return false;
    };
    for want in entries {
        let Some(Ok(mut e)) = found.next() else {
            return false;
        };
        if &*e.path_bytes() != want.path.as_bytes() || e.size() != want.size {
            return false;
        }
        if let Body::Bytes(b) = &want.body {
            let mut have = Vec::with_capacity(b.len());
            if io::Read::read_to_end(&mut e, &mut have).is_err() || &have != b {
                return false;
            }
        }
    }
    found.next().is_none()
}

/// Writes `img` as an OCI image layout in `dir` (created if missing), its layers as
/// stored. Blobs already there are kept; `index.json` lists this image once per tag and
/// keeps the entries of other images already in it, except those that held one of these
/// tags.
pub fn write_oci_layout(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    dir: &Path,
) -> Result<(), Error> {
    write_oci_layout_with(store, img, tags, dir, &OutputCompression::default()).map(drop)
}

/// [`write_oci_layout`] with the layers compressed as `oc` asks (as stored when it names
/// no compression). A layout that already holds exactly this image under these tags — the
/// same `index.json`, every blob there with its size — is not written to at all.
pub fn write_oci_layout_with(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    dir: &Path,
    oc: &OutputCompression,
) -> Result<Written, Error> {
    let tags = normalized(tags)?;
    let converted;
    let img = match oc.compression {
        Some(c) => {
            converted = recompressed(store, img, c, oc.level, oc.force)?;
            &converted
        }
        None => img,
    };
    let written = |unchanged| Written {
        manifest: img.manifest.clone(),
        unchanged,
    };
    let ours = index_descriptors(store, img, &tags)?;
    let index_path = dir.join("index.json");
    let mut all = kept_entries(&index_path, &ours);
    all.extend(ours);
    let index = index_json(&all);
    let blobs = dir.join("blobs/sha256");
    let holds = |d: &Digest| -> Result<bool, Error> {
        Ok(fs::metadata(blobs.join(d.hex())).map(|m| m.len()).ok() == Some(blob_size(store, d)?))
    };
    if fs::read(&index_path).ok().as_deref() == Some(&index[..])
        && fs::read(dir.join("oci-layout")).ok().as_deref() == Some(OCI_LAYOUT)
    {
        let mut all_there = true;
        for d in blob_set(img) {
            if !holds(&d)? {
                all_there = false;
                break;
            }
        }
        if all_there {
            return Ok(written(true));
        }
    }
    fs::create_dir_all(&blobs).map_err(Error::io(&blobs))?;
    for d in blob_set(img) {
        let dest = blobs.join(d.hex());
        if dest.exists() && hash_file(&dest)? == d {
            continue;
        }
        let mut src = store.open_blob(&d)?;
        let part = blobs.join(format!(".{}.part", d.hex()));
        let mut out = fs::File::create(&part).map_err(Error::io(&part))?;
        io::copy(&mut src, &mut out).map_err(Error::io(&part))?;
        fs::rename(&part, &dest).map_err(Error::io(&dest))?;
    }
    write_file(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_file(&index_path, &index)?;
    Ok(written(false))
}

/// The entries of an existing `index.json` that `ours` do not replace: other images, and
/// other tags. An unreadable index is replaced whole.
fn kept_entries(path: &Path, ours: &[Descriptor]) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let Ok(old) = serde_json::from_slice::<Index>(&bytes) else {
        return Vec::new();
    };
    let name = |d: &Descriptor| d.annotations.get(ANNOTATION_REF_NAME).cloned();
    old.manifests
        .into_iter()
        .filter(|d| {
            !ours.iter().any(|o| match (name(o), name(d)) {
                (Some(a), Some(b)) => a == b,
                (None, None) => o.digest == d.digest,
                _ => false,
            })
        })
        .collect()
}

fn hash_file(path: &Path) -> Result<Digest, Error> {
    let f = fs::File::open(path).map_err(Error::io(path))?;
    let mut r = crate::digest::HashingReader::new(f);
    io::copy(&mut r, &mut io::sink()).map_err(Error::io(path))?;
    Ok(r.finish().1)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(path, bytes).map_err(Error::io(path))
}

fn normalized(tags: &[String]) -> Result<Vec<String>, Error> {
    let set: BTreeSet<String> = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<Result<_, _>>()?;
    Ok(set.into_iter().collect())
}

/// Every blob of the image, each once, in digest order.
fn blob_set(img: &BuiltImage) -> BTreeSet<Digest> {
    let mut s: BTreeSet<Digest> = img.layers.iter().map(|l| l.digest.clone()).collect();
    s.insert(img.config.clone());
    s.insert(img.manifest.clone());
    s
}

pub(crate) fn blob_size(store: &Store, d: &Digest) -> Result<u64, Error> {
    let p = store.blob_path(d);
    match fs::metadata(&p) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(crate::store::Error::MissingBlob(d.clone()).into())
        }
        Err(e) => Err(Error::io(&p)(e)),
    }
}

/// `index.json`'s entries: the manifest once per tag (annotated as Docker 25 and
/// containerd do), or once without annotations when there are no tags.
fn index_descriptors(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
) -> Result<Vec<Descriptor>, Error> {
    let size = blob_size(store, &img.manifest)?;
    let base = Descriptor::new(MEDIA_TYPE_MANIFEST, &img.manifest, size);
    let descs: Vec<Descriptor> = if tags.is_empty() {
        vec![base]
    } else {
        tags.iter()
            .map(|t| {
                let mut d = base.clone();
                d.annotations
                    .insert(ANNOTATION_IMAGE_NAME.into(), full_name(t));
                d.annotations
                    .insert(ANNOTATION_REF_NAME.into(), repo_and_tag(t).1.into());
                d
            })
            .collect()
    };
    Ok(descs)
}

/// The legacy `repositories` file: `{name: {tag: id}}`, read only by engines that find no
/// `manifest.json`; the config digest stands in for the v1 layer id.
fn repositories(img: &BuiltImage, tags: &[String]) -> Vec<u8> {
    let mut repos: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for t in tags {
        let (name, tag) = repo_and_tag(t);
        repos.entry(name).or_default().insert(tag, img.config.hex());
    }
    to_canonical_json(&repos)
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> Result<tar::Header, Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(Error::Write)?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    Ok(h)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<(), Error> {
    let h = header(path, tar::EntryType::Directory, 0o755, 0)?;
    b.append(&h, io::empty()).map_err(Error::Write)
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<(), Error> {
    append_file(b, path, bytes.len() as u64, bytes)
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl io::Read,
) -> Result<(), Error> {
    let h = header(path, tar::EntryType::Regular, 0o644, size)?;
    let mut counted = CountingReader { inner: data, n: 0 };
    b.append(&h, &mut counted).map_err(Error::Write)?;
    if counted.n != size {
        return Err(Error::Message(format!(
            "{path}: blob changed size while being exported ({} of {size} bytes)",
            counted.n
        )));
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
