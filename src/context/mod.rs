//! [`Context`]: the build context as `docker build` would send it — a directory seen through
//! its `.dockerignore` — and the COPY/ADD machinery over it: resolving sources with Docker's
//! rules ([`Context::resolve`], [`resolve_in`] for `COPY --from`), laying them out at their
//! destination ([`plan_copy`]), hashing that layout for the cache key ([`hash_sources`]) and
//! materialising it into a layer root ([`stage`]).
//!
//! It exists so that the cache key and the layer are computed from one description of the
//! copy: the hash covers exactly the entries that staging writes (path, type, mode after
//! `--chmod`, owner after `--chown`, content, link target, xattrs) and never an mtime, so a
//! touched file keeps its key and any real change moves it.

pub mod glob;
mod hash;
mod plan;
mod resolve;
mod stage;
mod statcache;

pub use hash::{hash_plan, hash_plan_cached, hash_sources, hash_sources_cached, InputsHash};
pub use plan::{plan_copy, plan_copy_cached, resolve_dest, EntryKind, PlannedEntry};
pub use resolve::{heredoc_sources, resolve_in, Source, SourceRoot};
pub use stage::{stage, stage_checked, stage_plan};
pub use statcache::{StatCache, StatKey, RACY_MARGIN};

use crate::dockerfile::ignore::{IgnoreError, IgnoreMatcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of this module. All map to exit code 2 (a bad context or Dockerfile).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ignore file is unreadable or holds a bad pattern.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// The context directory cannot be opened.
    #[error("build context {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// A source without wildcards that does not exist (or is excluded by `.dockerignore`).
    #[error("copy source {src:?}: not found in {place}")]
    NotFound { src: String, place: String },
    /// A source written with a trailing `/` that is a file.
    #[error("copy source {src:?}: not a directory")]
    NotADirectory { src: String },
    /// Every source was a wildcard and none matched anything.
    #[error("copy sources {srcs:?}: no files match in {place}")]
    NoMatch { srcs: Vec<String>, place: String },
    /// A source pattern Go's `filepath.Match` rejects.
    #[error("copy source {src:?}: syntax error in pattern")]
    BadPattern { src: String },
    /// `**` in a `COPY --parents` source: BuildKit matches it at any depth; cairn's
    /// matcher does not, so it is refused rather than matched as `*`.
    #[error("copy source {src:?}: `**` in COPY --parents is not supported by cairn yet")]
    ParentsDoubleStar { src: String },
    /// Several sources, not all directories, need a directory destination (the Dockerfile
    /// reference's rule, in its words; `command` is COPY or ADD).
    #[error("When using {command} with more than one source file, the destination must be a directory and end with a / (got {dest:?})")]
    DestNotDir { command: &'static str, dest: String },
    /// A symlink chain inside the root that does not end.
    #[error("copy source {src:?}: too many levels of symbolic links")]
    SymlinkLoop { src: String },
    /// Reading a source failed (an unreadable file, a vanished directory).
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A source changed between computing the cache key and copying it.
    #[error("context file {path} changed during the build; run it again")]
    ChangedDuringBuild { path: String },
    /// Writing into the layer root failed.
    #[error("staging {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of a COPY/ADD that change what lands in the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// `--chmod` (already parsed): the permission bits of every copied file and directory,
    /// from each one's own mode when symbolic; symlinks keep theirs.
    pub chmod: Option<crate::dockerfile::Chmod>,
    /// `--chown`, resolved to numeric ids. Without it, context files belong to 0:0 and
    /// `COPY --from` files keep their owners.
    pub chown: Option<(u32, u32)>,
    /// The destination already exists as a directory in the parent image, so a single file
    /// goes inside it even without a trailing `/` (only the integrator can know this).
    pub dest_is_dir: bool,
    /// `--exclude` patterns (`.dockerignore` syntax, exceptions allowed), matched against
    /// paths relative to each copied directory, or a copied file's name.
    pub exclude: Vec<String>,
    /// The instruction (`COPY` or `ADD`) as errors name it; `COPY` when empty.
    pub command: &'static str,
}

/// A build context: a directory and the ignore rules that hide parts of it.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Arc<IgnoreMatcher>,
}

impl Context {
    /// Opens a context directory (symlinks in its own path are resolved once, here).
    pub fn open(dir: &Path, ignore: IgnoreMatcher) -> Result<Context, Error> {
        let open = |reason: String| Error::Open {
            path: dir.to_path_buf(),
            reason,
        };
        let root = dir.canonicalize().map_err(|e| open(e.to_string()))?;
        if !root.is_dir() {
            return Err(open("not a directory".into()));
        }
        Ok(Context {
            root,
            ignore: Arc::new(ignore),
        })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore rules in force.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    /// Resolves COPY/ADD sources as written: relative to the context root (`..` cannot leave
    /// it), wildcards with `filepath.Match` semantics, excluded files invisible. A source
    /// without wildcards must exist; a wildcard may match nothing as long as the instruction
    /// as a whole matches something (`COPY package.json yarn.lock* ./`).
    pub fn resolve(&self, srcs: &[String]) -> Result<Vec<Source>, Error> {
        resolve::resolve(&self.root, Some(&self.ignore), false, srcs)
    }

    /// [`Self::resolve`] for `COPY --parents`: each match keeps its path below the
    /// context root, or below the `/./` pivot written in the source.
    pub fn resolve_parents(&self, srcs: &[String]) -> Result<Vec<Source>, Error> {
        resolve::resolve_parents(&self.root, Some(&self.ignore), false, srcs)
    }

    /// Every path the context holds under its ignore rules, slash-separated and sorted (what
    /// `docker build` would send); mostly for tests and `--explain`.
    pub fn files(&self) -> Result<Vec<String>, Error> {
        let all = self.resolve(&[".".to_string()])?;
        let plan = plan_copy(&all, "/", &CopyOptions::default())?;
        Ok(plan.into_iter().map(|e| e.source_rel).collect())
    }
}
