//! What `ADD` does beyond `COPY`: remote URLs are downloaded through the registry's HTTP
//! stack ([`registry::download`]: its timeouts, retries, proxies and TLS) and checked against
//! `--checksum`, and local tar archives — plain, gzip or zstd — are extracted into the
//! destination instead of copied, as Docker does. The extraction goes through the rootfs
//! module's secure unpacker, so an archive cannot write outside the destination.

use super::env::{Step, StepEnv};
use super::steps::CopySources;
use crate::context::{InputsHash, Source};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::git::{GitSource, Resolved};
use crate::plan::ExpandedCopy;
use crate::registry::{self, RegistryOptions};
use std::io::Read;
use std::path::Path;

/// Whether an ADD source is a remote URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name a URL's content gets, as BuildKit's Dockerfile frontend names it: the
/// last segment of the URL's path (trailing slashes aside), `__unnamed__` when it has none.
fn url_file_name(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." => name.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// Downloads each URL into `dir`; returns the file names. With `checksum`
/// (`sha256:<hex>`, one URL only) the content must match it.
pub fn download(
    urls: &[String],
    checksum: Option<&str>,
    dir: &Path,
    opts: &RegistryOptions,
) -> Result<Vec<String>> {
    if checksum.is_some() && urls.len() != 1 {
        return Err(Error::Usage(
            "ADD --checksum takes exactly one URL source".into(),
        ));
    }
    let expected = checksum
        .map(|c| Digest::parse(c).map_err(|e| Error::Usage(format!("ADD --checksum: {e}"))))
        .transpose()?;
    let mut names = Vec::new();
    for url in urls {
        let name = url_file_name(url);
        let path = dir.join(&name);
        let got = registry::download(url, &path, opts)?;
        if let Some(want) = &expected {
            if &got != want {
                return Err(Error::Usage(format!(
                    "ADD {}: checksum mismatch: expected {want}, got {got}",
                    crate::redact::url(url)
                )));
            }
        }
        // Docker gives downloaded files mode 0600.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("cannot set the mode of {}", path.display()), e))?;
        names.push(name);
    }
    Ok(names)
}

/// A git source of an `ADD`, resolved to a commit while the step's key is computed and
/// checked out only if the step runs.
pub(super) struct PendingGit {
    /// `FILE:LINE` of the instruction, for errors.
    at: String,
    source: GitSource,
    resolved: Resolved,
}

/// An `ADD` whose sources are git repositories (see [`crate::git`]): each ref is resolved
/// to a commit (one `git ls-remote`, announced on the progress output). The inputs digest
/// is the sources' [`GitSource::key_digest`]s, so the key follows the commit, never the ref
/// name alone, and `--explain` names the old and the new commit. `None`: no source is a
/// git URL.
pub(super) fn prepare_git(
    env: &StepEnv<'_>,
    c: &ExpandedCopy,
    step: &Step<'_>,
) -> Result<Option<(CopySources, InputsHash)>> {
    let at = env.location(step);
    let mut gits = Vec::new();
    for s in &c.sources {
        if let Some(g) = GitSource::classify(s, c.keep_git_dir, c.checksum.as_deref()) {
            gits.push(g.map_err(|e| e.at(&at))?);
        }
    }
    if gits.is_empty() {
        return Ok(None);
    }
    if gits.len() != c.sources.len() {
        return Err(Error::Usage(format!(
            "{at}: ADD with both git repositories and other sources: split it into two ADDs"
        )));
    }
    let mut key = crate::cache::Framer::new("cairn git sources v1");
    let mut files = std::collections::BTreeMap::new();
    let mut pending = Vec::new();
    for source in gits {
        let resolved = source.resolve().map_err(|e| e.at(&at))?;
        env.rep.info(&source.describe(&resolved));
        let digest = source.key_digest(&resolved);
        key.field(digest.as_str().as_bytes());
        files.insert(source.explain_name(&resolved), digest);
        pending.push(PendingGit {
            at: at.clone(),
            source,
            resolved,
        });
    }
    let hash = InputsHash {
        digest: key.digest(),
        files,
    };
    Ok(Some((CopySources::Git(pending), hash)))
}

/// Checks the sources out into a temporary directory of the store (removed on drop) and
/// resolves each tree as a directory source with owner 0:0, as BuildKit's git snapshot.
pub(super) fn checkout_git(
    env: &StepEnv<'_>,
    gits: &[PendingGit],
) -> Result<(tempfile::TempDir, Vec<Source>)> {
    let dir = env.store.temp_dir("git-")?;
    let mut sources = Vec::new();
    for (i, g) in gits.iter().enumerate() {
        let work = dir.path().join(i.to_string());
        std::fs::create_dir(&work)
            .map_err(|e| Error::io(format!("cannot create {}", work.display()), e))?;
        let root = g
            .source
            .checkout(&g.resolved, &work)
            .map_err(|e| e.at(&g.at))?;
        sources.extend(
            crate::context::SourceRoot::new(&root)
                .reset_owners()
                .resolve(&[".".to_string()])?,
        );
    }
    Ok((dir, sources))
}

/// Whether a local ADD source is a tar archive — plain, gzip or zstd, told by magic bytes
/// as the rootfs module tells layer blobs — as Docker's `archive.IsArchivePath` decides.
pub fn is_archive(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut block = [0u8; 512];
    crate::rootfs::decompressed(f)
        .and_then(|mut r| r.read_exact(&mut block))
        .is_ok()
        && &block[257..262] == b"ustar"
}

/// Extracts an archive into `target` (created if missing), refusing entries that would
/// land outside it; what `privilege` cannot reproduce goes to `warn`.
pub fn extract(
    path: &Path,
    target: &Path,
    privilege: &crate::userns::Privilege,
    warn: &mut dyn FnMut(&str),
) -> Result<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| Error::io(format!("cannot create {}", target.display()), e))?;
    let input = |e| Error::Input {
        what: format!("ADD {}", path.display()),
        source: e,
    };
    let f = std::fs::File::open(path).map_err(input)?;
    let reader = crate::rootfs::decompressed(f).map_err(input)?;
    crate::rootfs::unpack_tar(reader, target, privilege, warn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn url_names() {
        assert_eq!(
            url_file_name("https://h/x/tool.tar.gz?sig=1"),
            "tool.tar.gz"
        );
        // BuildKit's dockerfile2llb: path.Base of the URL's path, `__unnamed__` when the
        // path has no name (`.` or `/`); a trailing slash does not hide the last segment.
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h?x=/y"), "__unnamed__");
        assert_eq!(url_file_name("https://h/dir/"), "dir");
        assert_eq!(url_file_name("http://h:8080/a//b//#frag"), "b");
    }

    #[test]
    fn archives_are_detected_and_extracted_plain_gzip_zstd() {
        let t = tempfile::tempdir().unwrap();
        let raw = tar_with("dir/hello.txt", b"hi");
        let plain = t.path().join("a.tar");
        std::fs::write(&plain, &raw).unwrap();
        let gz = t.path().join("a.tgz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let zs = t.path().join("a.tar.zst");
        std::fs::write(&zs, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
        let not = t.path().join("notes.txt");
        std::fs::write(&not, vec![b'x'; 1024]).unwrap();
        assert!(is_archive(&plain) && is_archive(&gz) && is_archive(&zs));
        assert!(!is_archive(&not));
        for (i, p) in [&plain, &gz, &zs].into_iter().enumerate() {
            let out = t.path().join(format!("out-{i}"));
            extract(p, &out, &crate::userns::Privilege::detect(), &mut |_| {}).unwrap();
            assert_eq!(std::fs::read(out.join("dir/hello.txt")).unwrap(), b"hi");
        }
    }

    #[test]
    fn an_archive_cannot_write_outside_the_destination() {
        let t = tempfile::tempdir().unwrap();
        let evil = t.path().join("evil.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../escape.tx");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        std::fs::write(&evil, b.into_inner().unwrap()).unwrap();
        let out = t.path().join("out");
        let _ = extract(
            &evil,
            &out,
            &crate::userns::Privilege::detect(),
            &mut |_| {},
        );
        assert!(!t.path().join("escape.tx").exists());
    }
}
