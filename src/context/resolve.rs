//! [`Source`]: one COPY source after Docker's resolution rules, and the resolvers that
//! produce it ([`resolve_in`] / [`SourceRoot`] for a plain directory, `Context::resolve` for
//! the build context).
//!
//! Paths are resolved as if the root were `/`: `..` stops at the root, and symlinks —
//! absolute or relative — are followed inside the root, never outside it. The source named
//! in the instruction is followed when it is a symlink (as BuildKit's `FollowSymlinks`);
//! symlinks found inside a copied directory are copied as links.

use super::glob::{go_match, has_wildcards};
use super::{read_err, Error};
use crate::dockerfile::ignore::IgnoreMatcher;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A resolved COPY source.
#[derive(Debug, Clone)]
pub struct Source {
    pub(crate) root: PathBuf,
    /// The resolved path inside the root (symlinks followed), no leading `/`; empty: root.
    pub(crate) rel: Vec<u8>,
    /// The last component of the path as matched (before following a symlink): the name
    /// a file gets when copied into a directory.
    pub(crate) name: Vec<u8>,
    pub(crate) written: String,
    pub(crate) is_dir: bool,
    /// The context's ignore rules; `None` for a plain source root.
    pub(crate) ignore: Option<Arc<IgnoreMatcher>>,
    /// Whether copied files keep their owners (`COPY --from`) or become 0:0 (context).
    pub(crate) keep_owner: bool,
    /// `COPY --parents`: the matched path below its pivot (the root, or the `/./` written
    /// in the source), which the source keeps under the destination.
    pub(crate) parents: Option<Vec<u8>>,
    /// The path as matched, inside the root, before symlinks were followed.
    pub(crate) matched: Vec<u8>,
}

impl Source {
    /// The resolved path relative to its root, slash-separated (`.` for the root itself).
    pub fn rel_path(&self) -> String {
        if self.rel.is_empty() {
            ".".into()
        } else {
            String::from_utf8_lossy(&self.rel).into_owned()
        }
    }

    /// The absolute path on disk.
    pub fn path(&self) -> PathBuf {
        self.root.join(OsStr::from_bytes(&self.rel))
    }

    /// The source as written in the instruction.
    pub fn written(&self) -> &str {
        &self.written
    }

    /// Whether it is a directory (whose contents are copied).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }
}

/// A plain directory used as a COPY source root without ignore rules: the merged
/// filesystem of an earlier stage for `COPY --from=stage`. Owners are kept.
#[derive(Debug, Clone, Copy)]
pub struct SourceRoot<'a> {
    root: &'a Path,
    keep_owner: bool,
}

impl<'a> SourceRoot<'a> {
    pub fn new(root: &'a Path) -> SourceRoot<'a> {
        SourceRoot {
            root,
            keep_owner: true,
        }
    }

    /// Copied files become 0:0 (unless `--chown`), as context files do: for a directory
    /// cairn wrote itself (a `COPY <<EOF` body, a downloaded `ADD` URL), whose on-disk
    /// owner is whoever ran the build.
    pub fn reset_owners(mut self) -> SourceRoot<'a> {
        self.keep_owner = false;
        self
    }

    /// Resolves sources with the same rules as the context, minus the ignore file.
    pub fn resolve(&self, srcs: &[String]) -> Result<Vec<Source>, Error> {
        resolve(self.root, None, self.keep_owner, srcs)
    }

    /// [`Self::resolve`] for `COPY --parents`: each source keeps its path below the root or its `/./` pivot.
    pub fn resolve_parents(&self, srcs: &[String]) -> Result<Vec<Source>, Error> {
        resolve_parents(self.root, None, self.keep_owner, srcs)
    }
}

/// Writes the bodies of `COPY <<NAME` heredocs into `dir` (an empty directory the caller
/// keeps alive until staging) and resolves them as sources. The files get mode `0664`, as
/// BuildKit's `Mkfile` gives them, and owner 0:0, whatever the umask and user of this
/// build, so a heredoc's inputs hash is the same on every machine.
pub fn heredoc_sources(dir: &Path, docs: &[(String, String)]) -> Result<Vec<Source>, Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut names = Vec::with_capacity(docs.len());
    for (name, body) in docs {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::BadPattern { src: name.clone() });
        }
        let path = dir.join(name);
        fs::write(&path, body).map_err(read_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).map_err(read_err(&path))?;
        names.push(name.clone());
    }
    SourceRoot::new(dir).reset_owners().resolve(&names)
}

/// Resolves sources in a plain directory (see [`SourceRoot`]).
pub fn resolve_in(root: &Path, srcs: &[String]) -> Result<Vec<Source>, Error> {
    SourceRoot::new(root).resolve(srcs)
}

/// `COPY --parents` as BuildKit reads a source: the part before the first `/./` is the
/// pivot (the root when there is none) and each match keeps its path below it. A `**`
/// (any depth, in BuildKit's include patterns) is refused rather than matched as `*`.
pub(crate) fn resolve_parents(
    root: &Path,
    ignore: Option<&Arc<IgnoreMatcher>>,
    keep_owner: bool,
    srcs: &[String],
) -> Result<Vec<Source>, Error> {
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    for src in srcs {
        if src.contains("**") {
            return Err(Error::ParentsDoubleStar { src: src.clone() });
        }
        let (pivot, whole) = match src.split_once("/./") {
            Some((pivot, below)) => (pivot, format!("{pivot}/{below}")),
            None => ("", src.clone()),
        };
        let pivot = super::glob::clean(&format!("/{pivot}"));
        let pivot = pivot.trim_start_matches('/').as_bytes().to_vec();
        let found = match resolve(root, ignore, keep_owner, std::slice::from_ref(&whole)) {
            Err(Error::NoMatch { .. }) => {
                unmatched.push(src.clone());
                continue;
            }
            other => other?,
        };
        for mut s in found {
            let matched = s.matched.clone();
            let below = if pivot.is_empty() {
                matched
            } else {
                matched
                    .strip_prefix(&pivot[..])
                    .and_then(|r| r.strip_prefix(b"/"))
                    .map(<[u8]>::to_vec)
                    .unwrap_or(matched)
            };
            s.parents = Some(below);
            s.written = src.clone();
            out.push(s);
        }
    }
    if out.is_empty() && !unmatched.is_empty() {
        return Err(Error::NoMatch {
            srcs: unmatched,
            place: match ignore {
                Some(_) => "build context".to_string(),
                None => root.display().to_string(),
            },
        });
    }
    Ok(out)
}

/// Symlinks followed per lookup before giving up, as Linux's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

pub(crate) fn resolve(
    root: &Path,
    ignore: Option<&Arc<IgnoreMatcher>>,
    keep_owner: bool,
    srcs: &[String],
) -> Result<Vec<Source>, Error> {
    let place = match ignore {
        Some(_) => "build context".to_string(),
        None => root.display().to_string(),
    };
    let finder = Finder {
        root,
        ignore: ignore.map(|m| &**m),
    };
    let mut out = Vec::new();
    for src in srcs {
        let cleaned = super::glob::clean(&format!("/{src}"));
        let rel = cleaned.trim_start_matches('/').as_bytes();
        let candidates = if has_wildcards(rel) {
            finder.expand(rel, src)?
        } else {
            vec![rel.to_vec()]
        };
        let wildcard = has_wildcards(rel);
        for cand in candidates {
            match finder.lookup(&cand, true, src)? {
                Some((_, false)) if src.ends_with('/') || src.ends_with("/.") => {
                    return Err(Error::NotADirectory { src: src.clone() })
                }
                Some((resolved, is_dir)) => out.push(Source {
                    root: root.to_path_buf(),
                    rel: resolved,
                    name: cand.rsplit(|b| *b == b'/').next().unwrap_or(b"").to_vec(),
                    written: src.clone(),
                    is_dir,
                    ignore: ignore.cloned(),
                    keep_owner,
                    parents: None,
                    matched: cand.clone(),
                }),
                None if wildcard => {}
                None => {
                    return Err(Error::NotFound {
                        src: src.clone(),
                        place,
                    })
                }
            }
        }
    }
    if out.is_empty() && !srcs.is_empty() {
        return Err(Error::NoMatch {
            srcs: srcs.to_vec(),
            place,
        });
    }
    Ok(out)
}

struct Finder<'a> {
    root: &'a Path,
    ignore: Option<&'a IgnoreMatcher>,
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = Vec::with_capacity(a.len() + 1 + b.len());
    v.extend_from_slice(a);
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

impl Finder<'_> {
    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// Whether the ignore rules let `rel` be seen (a directory stays visible when an
    /// exception could match below it).
    fn visible(&self, rel: &[u8], is_dir: bool) -> bool {
        let Some(m) = self.ignore else { return true };
        let s = String::from_utf8_lossy(rel);
        !m.is_excluded(&s) || (is_dir && m.may_include_below(&s))
    }

    /// Resolves `rel` inside the root. `None`: missing, hidden, or through a non-directory.
    /// Returns the resolved path and whether it is a directory.
    fn lookup(
        &self,
        rel: &[u8],
        follow_last: bool,
        src: &str,
    ) -> Result<Option<(Vec<u8>, bool)>, Error> {
        let mut todo: Vec<Vec<u8>> = rel
            .split(|b| *b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut is_dir = true;
        let mut links = 0;
        while let Some(part) = todo.pop() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    done.pop();
                    is_dir = true;
                    continue;
                }
                _ => done.push(part),
            }
            let joined = done.join(&b'/');
            let abs = self.abs(&joined);
            let md = match fs::symlink_metadata(&abs) {
                Ok(md) => md,
                Err(e) if is_absent(&e) => return Ok(None),
                Err(e) => return Err(read_err(&abs)(e)),
            };
            if !self.visible(&joined, md.is_dir()) {
                return Ok(None);
            }
            if md.file_type().is_symlink() && (follow_last || !todo.is_empty()) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::SymlinkLoop { src: src.into() });
                }
                let target = fs::read_link(&abs).map_err(read_err(&abs))?;
                let target = target.as_os_str().as_bytes();
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                todo.extend(target.split(|b| *b == b'/').rev().map(<[u8]>::to_vec));
                continue;
            }
            if !todo.is_empty() && !md.is_dir() {
                return Ok(None);
            }
            is_dir = md.is_dir();
        }
        Ok(Some((done.join(&b'/'), is_dir)))
    }

    /// Expands a wildcard path component by component, in sorted name order. Returns the
    /// matched paths as spelled by the match (not yet symlink-resolved).
    fn expand(&self, rel: &[u8], src: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut cands: Vec<Vec<u8>> = vec![Vec::new()];
        for part in rel.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            if !has_wildcards(part) && !part.contains(&b'\\') {
                cands.iter_mut().for_each(|c| *c = join(c, part));
                continue;
            }
            go_match(part, b"").map_err(|_| Error::BadPattern { src: src.into() })?;
            let mut next = Vec::new();
            for c in &cands {
                let Some((dir, true)) = self.lookup(c, true, src)? else {
                    continue;
                };
                for name in self.sorted_names(&dir)? {
                    if go_match(part, &name).unwrap_or(false) {
                        next.push(join(c, &name));
                    }
                }
            }
            cands = next;
        }
        Ok(cands)
    }

    fn sorted_names(&self, dir: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let abs = self.abs(dir);
        let mut names = Vec::new();
        for entry in fs::read_dir(&abs).map_err(read_err(&abs))? {
            let entry = entry.map_err(read_err(&abs))?;
            names.push(entry.file_name().as_bytes().to_vec());
        }
        names.sort();
        Ok(names)
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG)
    )
}
