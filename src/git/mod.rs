//! `ADD` from a git repository: [`GitSource`] is one git source of an `ADD` — its URL read
//! as BuildKit reads it ([`url`]), the `--keep-git-dir` and `--checksum` flags merged in —
//! resolved to a commit ([`GitSource::resolve`], one `git ls-remote`) and then checked out
//! shallowly into a directory cairn copies from ([`GitSource::checkout`]).
//!
//! The cache key of such an `ADD` is [`GitSource::key_digest`]: the resolved commit, the
//! subdirectory and the flags that change the tree, never the ref name alone, so a branch
//! that moves misses and a tag re-pointed at the same commit hits.
//!
//! cairn runs the system `git` binary rather than a library (gix): the user's git already
//! knows their SSH agent, known hosts, credential helpers, proxies and `insteadOf` rules, as
//! BuildKit's git source also relies on the `git` CLI. Every call is confined
//! (in the private `fetch` module): no hooks, no `file://`/`ext::` transports (a hostile
//! `.gitmodules` cannot reach the host's repositories), no terminal or GUI prompts, and the
//! checkout's symlinks stay links that are copied as links, never followed on the host.

mod fetch;
pub mod url;

pub use fetch::Resolved;
pub use url::{GitUrl, Scheme, UrlError};

use crate::cache::Framer;
use crate::digest::Digest;

/// Everything that can go wrong with a git source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source is a git URL that cannot be used (bad query, bad URL).
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The flags and the URL disagree, or a flag value is bad.
    #[error("git source {url}: {reason}")]
    Flags { url: String, reason: String },
    /// The ref resolved to a commit other than `--checksum` names.
    #[error(
        "git source {url}#{git_ref}: checksum mismatch: expected commit {expected}, got {got}"
    )]
    ChecksumMismatch {
        url: String,
        git_ref: String,
        expected: String,
        got: String,
    },
    /// The repository has no such branch, tag or ref.
    #[error("git source {url}: repository does not contain ref {git_ref:?}")]
    MissingRef { url: String, git_ref: String },
    /// `git` could not reach or read the repository.
    #[error("git source {url}#{git_ref}: {reason}")]
    Fetch {
        url: String,
        git_ref: String,
        reason: String,
    },
    /// The subdirectory is missing, not a directory, or reached through a symlink.
    #[error("git source {url}#{git_ref}: subdir {subdir:?}: {reason}")]
    Subdir {
        url: String,
        git_ref: String,
        subdir: String,
        reason: String,
    },
    /// The `git` program is missing or a local file operation failed.
    #[error("git source {url}: {reason}")]
    Local { url: String, reason: String },
    /// Any of the above, at a Dockerfile location (`FILE:LINE`).
    #[error("{location}: {source}")]
    At {
        location: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Whether the failure is the network's or the remote's (exit code 4), rather than the
    /// Dockerfile's (2) or this machine's (1).
    pub fn is_network(&self) -> bool {
        match self {
            Error::At { source, .. } => source.is_network(),
            e => matches!(e, Error::Fetch { .. } | Error::MissingRef { .. }),
        }
    }

    /// Whether the failure is local (the `git` program, the file system).
    pub fn is_local(&self) -> bool {
        match self {
            Error::At { source, .. } => source.is_local(),
            e => matches!(e, Error::Local { .. }),
        }
    }

    /// The same error, said to happen at `location` (`FILE:LINE`).
    pub fn at(self, location: impl Into<String>) -> Error {
        Error::At {
            location: location.into(),
            source: Box::new(self),
        }
    }
}

/// One git source of an `ADD`, with its flags.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub url: GitUrl,
    pub keep_git_dir: bool,
    /// Lower-case hex: the resolved commit (or annotated tag) must start with it.
    pub checksum: Option<String>,
    pub submodules: bool,
    /// File times set to the commit's time (the default; `?mtime=checkout` keeps the time
    /// of the checkout, as BuildKit's default does).
    pub mtime_commit: bool,
}

impl GitSource {
    /// Reads an `ADD` source with the instruction's `--keep-git-dir` and `--checksum`.
    /// `None`: not a git source.
    pub fn classify(
        src: &str,
        keep_git_dir: Option<bool>,
        checksum: Option<&str>,
    ) -> Option<Result<GitSource, Error>> {
        let url = match GitUrl::classify(src)? {
            Ok(u) => u,
            Err(e) => return Some(Err(e.into())),
        };
        Some(GitSource::new(url, keep_git_dir, checksum))
    }

    /// Merges the flags into the URL's own options, with BuildKit's conflict rules.
    pub fn new(
        url: GitUrl,
        keep_git_dir: Option<bool>,
        checksum: Option<&str>,
    ) -> Result<GitSource, Error> {
        let bad = |reason: String| Error::Flags {
            url: url.redacted_remote(),
            reason,
        };
        let keep = match (keep_git_dir, url.keep_git_dir) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad("inconsistent keep-git-dir configuration".into()))
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        let checksum = match (checksum, url.checksum.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(format!("checksum mismatch {a:?} != {b:?}")))
            }
            (a, b) => a.or(b),
        };
        if let Some(c) = checksum {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "invalid checksum {c:?}, expected hex commit hash"
                )));
            }
        }
        if url.fetch_by_commit && !checksum.is_some_and(|c| is_commit_sha(&c.to_ascii_lowercase()))
        {
            return Err(bad(
                "fetch-by-commit requires a full commit SHA checksum".into()
            ));
        }
        Ok(GitSource {
            keep_git_dir: keep,
            checksum: checksum.map(str::to_ascii_lowercase),
            submodules: url.submodules.unwrap_or(true),
            mtime_commit: url.mtime.as_deref() != Some("checkout"),
            url,
        })
    }

    /// The ref as written, or `HEAD` for the default branch (for messages).
    pub fn ref_shown(&self) -> &str {
        if self.url.git_ref.is_empty() {
            "HEAD"
        } else {
            &self.url.git_ref
        }
    }

    /// The inputs digest of this source at `resolved`: what the checked-out tree depends
    /// on, as BuildKit's `shaToCacheKey` — the commit (the tag object too, and the ref and
    /// remote, when `.git` is kept, since they are in it), the subdir, submodules, the
    /// mtime policy. A ref name alone never decides it.
    pub fn key_digest(&self, resolved: &Resolved) -> Digest {
        let mut f = Framer::new("cairn git source v1");
        f.field(resolved.commit.as_bytes());
        f.field(self.url.subdir.as_bytes());
        f.field(if self.submodules { b"1" } else { b"0" });
        f.field(if self.mtime_commit { b"1" } else { b"0" });
        if self.keep_git_dir {
            f.field(b"keep-git-dir");
            f.field(resolved.object.as_bytes());
            f.field(resolved.used_ref.as_bytes());
            f.field(self.url.redacted_remote().as_bytes());
        }
        f.digest()
    }

    /// One line for the progress output: which commit the ref resolved to.
    pub fn describe(&self, resolved: &Resolved) -> String {
        let mut s = format!(
            "ADD {}#{}: resolved to commit {}",
            self.url.redacted_remote(),
            self.ref_shown(),
            resolved.commit
        );
        if resolved.object != resolved.commit {
            s.push_str(&format!(" (annotated tag {})", resolved.object));
        }
        s
    }

    /// The name `--explain` gives this source's input: when the commit changes, the old
    /// name is reported removed and the new one added, so both commits are named.
    pub fn explain_name(&self, resolved: &Resolved) -> String {
        format!(
            "{}#{} at commit {}",
            self.url.redacted_remote(),
            self.ref_shown(),
            resolved.commit
        )
    }
}

/// A full SHA-1 or SHA-256 object name in lower-case hex.
pub fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str, keep: Option<bool>, sum: Option<&str>) -> Result<GitSource, Error> {
        GitSource::classify(s, keep, sum).expect("a git source")
    }

    #[test]
    fn flags_merge_with_the_url_as_buildkit_merges_them() {
        let g = src("git://h/r.git?keep-git-dir=true", None, None).unwrap();
        assert!(g.keep_git_dir && g.submodules && g.mtime_commit);
        let e = src("git://h/r.git?keep-git-dir=true", Some(false), None).unwrap_err();
        assert!(e.to_string().contains("inconsistent keep-git-dir"), "{e}");
        let e = src("git://h/r.git?checksum=ab", None, Some("cd")).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let e = src("git://h/r.git#main", None, Some("foobar")).unwrap_err();
        assert!(e.to_string().contains("invalid checksum"), "{e}");
        assert_eq!(
            src("git://h/r.git", None, Some("ABC"))
                .unwrap()
                .checksum
                .as_deref(),
            Some("abc")
        );
        assert!(
            !src("git://h/r.git?submodules=0", None, None)
                .unwrap()
                .submodules
        );
        assert!(
            !src("git://h/r.git?mtime=checkout", None, None)
                .unwrap()
                .mtime_commit
        );
        assert!(src("git://h/r.git?fetch-by-commit", None, Some("ab")).is_err());
        assert!(GitSource::classify("https://h/f.tgz", None, None).is_none());
    }

    #[test]
    fn the_key_is_the_commit_never_the_ref_name() {
        let r = |commit: &str| Resolved {
            commit: commit.into(),
            object: commit.into(),
            used_ref: "refs/heads/main".into(),
        };
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let main = src("git://h/r.git#main", None, None).unwrap();
        let tag = src("git://h/r.git#v1", None, None).unwrap();
        let other_host = src("git://mirror/r.git#v1", None, None).unwrap();
        assert_eq!(main.key_digest(&r(&a)), tag.key_digest(&r(&a)));
        assert_eq!(main.key_digest(&r(&a)), other_host.key_digest(&r(&a)));
        assert_ne!(main.key_digest(&r(&a)), main.key_digest(&r(&b)));
        let sub = src("git://h/r.git#main:sub", None, None).unwrap();
        assert_ne!(main.key_digest(&r(&a)), sub.key_digest(&r(&a)));
        let keep = src("git://h/r.git#main", Some(true), None).unwrap();
        assert_ne!(main.key_digest(&r(&a)), keep.key_digest(&r(&a)));
        let nosub = src("git://h/r.git#main?submodules=false", None, None);
        // The query comes before the fragment: this one is a ref named "main?submodules=false".
        assert!(nosub.unwrap().submodules);
        // Pinned: the key of a git source is a promise like every other key.
        assert_eq!(
            main.key_digest(&r(&a)).to_string(),
            PINNED_MAIN_A,
            "the git source key changed: update the pin and the README changelog"
        );
    }

    const PINNED_MAIN_A: &str =
        "sha256:4fb9c4772bde0fcf68ca68a88ebfe68bdaa37f09e014680aeaff332e754d3def";

    #[test]
    fn describe_names_the_commit_without_the_password() {
        let g = src("https://u:pw@h/r.git#v1", None, None).unwrap();
        let r = Resolved {
            commit: "c".repeat(40),
            object: "t".repeat(40),
            used_ref: "refs/tags/v1".into(),
        };
        let d = g.describe(&r);
        assert!(
            d.contains(&"c".repeat(40)) && d.contains("annotated tag"),
            "{d}"
        );
        assert!(!d.contains("pw"), "{d}");
    }
}
