//! [`GitUrl`]: an `ADD` source read as BuildKit's Dockerfile frontend reads it
//! (`dfgitutil.ParseGitRef` over `gitutil.ParseURL`), and the decision whether a source is
//! a git repository at all, an HTTP file, or a local path.
//!
//! A source is a git source when it is
//! - `git://…` or `ssh://…` (scheme case-insensitive),
//! - `http(s)://…` whose path (before `?` and `#`) ends in `.git`,
//! - SCP-like `user@host:path` (user of `[A-Za-z0-9_-]`, host of `[A-Za-z0-9.-]`).
//!
//! Everything after the first `#` is `REF[:SUBDIR]`; a query string may carry
//! `ref`, `tag`, `branch`, `subdir`, `checksum`/`commit`, `keep-git-dir`, `submodules`,
//! `mtime` and `fetch-by-commit`, as BuildKit's `loadQuery` takes them. `./x`, `../x` and
//! `github.com/x` are never git sources for `ADD` (BuildKit keeps the last for build
//! contexts only).
//!
//! Where BuildKit would fall back to a local path because Go's `url.Parse` rejected a
//! `git://` or `ssh://` URL, cairn reports the URL as malformed instead: such a source can
//! only have been meant as a repository.

use std::fmt;

/// Why a source that is a git URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git source {url}: {reason}")]
pub struct UrlError {
    /// The source with any password replaced.
    pub url: String,
    pub reason: String,
}

/// How the repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ssh,
    Git,
}

impl Scheme {
    fn from_lower(s: &str) -> Option<Scheme> {
        Some(match s {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ssh" => Scheme::Ssh,
            "git" => Scheme::Git,
            _ => return None,
        })
    }

    /// Whether the transport is unencrypted (`http://`, `git://`); BuildKit allows these.
    pub fn is_unencrypted(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Git)
    }
}

/// A parsed git source: the remote for the git CLI plus what the fragment and query ask.
#[derive(Clone, PartialEq, Eq)]
pub struct GitUrl {
    pub scheme: Scheme,
    /// What `git` is given: the source without its query and fragment.
    pub remote: String,
    /// Branch, tag, full ref (`refs/…`) or commit; empty: the remote's default branch.
    pub git_ref: String,
    /// A directory inside the repository, cleaned (no `.`/`..`, no leading `/`); empty:
    /// the whole tree.
    pub subdir: String,
    /// `?checksum=` / `?commit=`: a (prefix of a) commit the ref must resolve to.
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub submodules: Option<bool>,
    /// `?mtime=checkout|commit`.
    pub mtime: Option<String>,
    pub fetch_by_commit: bool,
}

impl fmt::Debug for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The remote may hold a password: show it redacted, like everywhere else.
        f.debug_struct("GitUrl")
            .field("scheme", &self.scheme)
            .field("remote", &crate::redact::url(&self.remote))
            .field("git_ref", &self.git_ref)
            .field("subdir", &self.subdir)
            .field("checksum", &self.checksum)
            .field("keep_git_dir", &self.keep_git_dir)
            .field("submodules", &self.submodules)
            .field("mtime", &self.mtime)
            .field("fetch_by_commit", &self.fetch_by_commit)
            .finish()
    }
}

impl GitUrl {
    /// Reads an `ADD` source. `None`: not a git source (an HTTP file or a local path);
    /// `Some(Err)`: a git source that cannot be used.
    pub fn classify(src: &str) -> Option<Result<GitUrl, UrlError>> {
        if src.starts_with("./") || src.starts_with("../") || src.starts_with("github.com/") {
            return None;
        }
        let err = |reason: String| UrlError {
            url: crate::redact::url(src),
            reason,
        };
        let (rest, fragment) = match src.split_once('#') {
            Some((r, f)) => (r, f),
            None => (src, ""),
        };
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let scheme = if let Some(proto) = scheme_prefix(src) {
            let scheme = Scheme::from_lower(&proto.to_ascii_lowercase())?;
            let parsed = match url::Url::parse(base) {
                Ok(u) => u,
                // An http(s) URL Go cannot parse is not taken for git by BuildKit either.
                Err(_) if matches!(scheme, Scheme::Http | Scheme::Https) => return None,
                Err(e) => return Some(Err(err(format!("malformed URL: {e}")))),
            };
            if matches!(scheme, Scheme::Http | Scheme::Https) && !parsed.path().ends_with(".git") {
                return None;
            }
            if !matches!(parsed.host_str(), Some(h) if !h.is_empty()) {
                return Some(Err(err("URL has no host".into())));
            }
            scheme
        } else if is_scp_like(base) {
            Scheme::Ssh
        } else {
            return None;
        };
        // Go's url.String() gives the scheme in lower case, and git needs it so.
        let base = match scheme_prefix(base) {
            Some(proto) => format!("{}{}", proto.to_ascii_lowercase(), &base[proto.len()..]),
            None => base.to_string(),
        };
        Some(Self::finish(scheme, &base, fragment, query).map_err(err))
    }

    fn finish(
        scheme: Scheme,
        base: &str,
        fragment: &str,
        query: Option<&str>,
    ) -> Result<GitUrl, String> {
        let (git_ref, subdir) = match fragment.split_once(':') {
            Some((r, s)) => (r.to_string(), clean_subdir(s)),
            None => (fragment.to_string(), String::new()),
        };
        let mut url = GitUrl {
            scheme,
            remote: base.to_string(),
            git_ref,
            subdir,
            checksum: None,
            keep_git_dir: None,
            submodules: None,
            mtime: None,
            fetch_by_commit: false,
        };
        if let Some(q) = query {
            url.load_query(q)?;
        }
        Ok(url)
    }

    /// Applies the query string, with BuildKit's conflict rules.
    fn load_query(&mut self, query: &str) -> Result<(), String> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|(s, _)| *s == k) {
                return Err(format!("query {k:?} has multiple values"));
            }
            seen.push((k.into_owned(), v.into_owned()));
        }
        let (mut tag, mut branch) = (String::new(), String::new());
        for (k, v) in seen {
            let flag = |name: &str| -> Result<bool, String> {
                if v.is_empty() {
                    Ok(true)
                } else {
                    parse_go_bool(&v).ok_or_else(|| format!("invalid {name} value: {v:?}"))
                }
            };
            if v.is_empty()
                && !matches!(
                    k.as_str(),
                    "submodules" | "keep-git-dir" | "fetch-by-commit"
                )
            {
                return Err(format!("query {k:?} has no value"));
            }
            match k.as_str() {
                "ref" => {
                    if !self.git_ref.is_empty() && self.git_ref != v {
                        return Err(format!("ref conflicts: {:?} vs {v:?}", self.git_ref));
                    }
                    self.git_ref = v;
                }
                "tag" => tag = v,
                "branch" => branch = v,
                "subdir" => {
                    if !self.subdir.is_empty() && self.subdir != v {
                        return Err(format!("subdir conflicts: {:?} vs {v:?}", self.subdir));
                    }
                    self.subdir = clean_subdir(&v);
                }
                "checksum" | "commit" => self.checksum = Some(v),
                "keep-git-dir" => self.keep_git_dir = Some(flag("keep-git-dir")?),
                "submodules" => self.submodules = Some(flag("submodules")?),
                "fetch-by-commit" => self.fetch_by_commit = flag("fetch-by-commit")?,
                "mtime" => match v.as_str() {
                    "checkout" | "commit" => self.mtime = Some(v),
                    _ => {
                        return Err(format!(
                            "invalid mtime value: {v:?} (must be \"checkout\" or \"commit\")"
                        ))
                    }
                },
                _ => return Err(format!("unexpected query {k:?}")),
            }
        }
        for (name, value, prefix) in [
            ("tag", &tag, "refs/tags/"),
            ("branch", &branch, "refs/heads/"),
        ] {
            if value.is_empty() {
                continue;
            }
            if name == "branch" && !tag.is_empty() {
                return Err("branch conflicts with tag".into());
            }
            let full = if value.starts_with(prefix) {
                value.clone()
            } else {
                format!("{prefix}{value}")
            };
            if !self.git_ref.is_empty() && self.git_ref != full {
                return Err(format!("ref conflicts: {:?} vs {full:?}", self.git_ref));
            }
            self.git_ref = full;
        }
        Ok(())
    }

    /// The remote with any password replaced, for messages and keys.
    pub fn redacted_remote(&self) -> String {
        crate::redact::url(&self.remote)
    }

    /// The repository's directory name (`bar` for `…/bar.git`), as BuildKit's `ShortName`.
    pub fn short_name(&self) -> &str {
        let last = self.remote.rsplit('/').next().unwrap_or(&self.remote);
        last.strip_suffix(".git").unwrap_or(last)
    }
}

/// `^[a-zA-Z0-9]+://` → the scheme.
fn scheme_prefix(s: &str) -> Option<&str> {
    let end = s.find("://")?;
    let proto = &s[..end];
    (!proto.is_empty() && proto.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(proto)
}

/// BuildKit's `^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*)` (over the part before `?`/`#`).
fn is_scp_like(base: &str) -> bool {
    let Some((user, rest)) = base.split_once('@') else {
        return false;
    };
    let Some((host, _path)) = rest.split_once(':') else {
        return false;
    };
    let ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    ok(user, b"-_") && ok(host, b"-.")
}

/// Go's `strings.TrimPrefix(path.Join("/", s), "/")`: `.`/`..`/empty segments dropped,
/// never above the root.
fn clean_subdir(s: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(seg),
        }
    }
    parts.join("/")
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(src: &str) -> GitUrl {
        GitUrl::classify(src)
            .unwrap_or_else(|| panic!("{src} is not a git source"))
            .unwrap()
    }

    #[test]
    fn which_sources_are_git_as_buildkit_decides() {
        for src in [
            "https://example.invalid/foo/bar.git",
            "http://example.invalid/bar.git#main",
            "HTTPS://example.invalid/bar.git?ref=v1",
            "git://127.0.0.1:9418/repo.git#v1:sub",
            "git://example.invalid/repo",
            "ssh://git@example.invalid/repo",
            "git@example.invalid:foo/bar.git",
            "git@example.invalid:foo/bar",
            "deploy_key-1@host-1.example:repo#ref",
        ] {
            assert!(
                matches!(GitUrl::classify(src), Some(Ok(_))),
                "{src} should be git"
            );
        }
        for src in [
            "https://example.invalid/file.tar.gz",
            "https://example.invalid/bar.git/file",
            "https://example.invalid/dl?name=x.git",
            "ftp://example.invalid/x.git",
            "./repo.git",
            "../repo.git",
            "github.com/foo/bar",
            "repo.git",
            "dir/file:with-colon",
            "user@host",
            "us er@host:x",
            "/abs/path@x:y",
        ] {
            assert!(GitUrl::classify(src).is_none(), "{src} should not be git");
        }
    }

    #[test]
    fn fragment_is_ref_then_cleaned_subdir() {
        let u = git("https://example.invalid/foo/bar.git#baz/qux:quux/quuz");
        assert_eq!(u.remote, "https://example.invalid/foo/bar.git");
        assert_eq!(
            (u.git_ref.as_str(), u.subdir.as_str()),
            ("baz/qux", "quux/quuz")
        );
        assert_eq!(u.short_name(), "bar");
        assert_eq!(git("git@h:r.git#v1:../../a/./b//c/").subdir, "a/b/c");
        assert_eq!(git("git@h:r.git#:sub").git_ref, "");
        let u = git("git@example.invalid:foo/bar.git#main");
        assert_eq!(
            (u.scheme, u.remote.as_str()),
            (Scheme::Ssh, "git@example.invalid:foo/bar.git")
        );
        assert_eq!(git("git://h/r.git").git_ref, "");
        assert_eq!(git("GIT://h/r.git#v1").remote, "git://h/r.git");
    }

    #[test]
    fn query_form_as_buildkit_loads_it() {
        let u = git("https://h/r.git?tag=v1&subdir=a/b&keep-git-dir&checksum=abc123");
        assert_eq!(u.remote, "https://h/r.git");
        assert_eq!(u.git_ref, "refs/tags/v1");
        assert_eq!(u.subdir, "a/b");
        assert_eq!(u.keep_git_dir, Some(true));
        assert_eq!(u.checksum.as_deref(), Some("abc123"));
        assert_eq!(git("https://h/r.git?branch=dev").git_ref, "refs/heads/dev");
        assert_eq!(git("https://h/r.git?ref=main#main").git_ref, "main");
        assert_eq!(git("git@h:r?submodules=false").submodules, Some(false));
        assert_eq!(git("git@h:r?commit=ff").checksum.as_deref(), Some("ff"));
        for (src, msg) in [
            ("https://h/r.git?ref=a#b", "ref conflicts"),
            (
                "https://h/r.git?tag=a&branch=b",
                "branch conflicts with tag",
            ),
            ("https://h/r.git?branch=b#main", "ref conflicts"),
            ("https://h/r.git?subdir=x#m:y", "subdir conflicts"),
            ("https://h/r.git?ref=", "has no value"),
            ("https://h/r.git?ref=a&ref=b", "multiple values"),
            ("https://h/r.git?keep-git-dir=maybe", "invalid keep-git-dir"),
            ("https://h/r.git?mtime=now", "invalid mtime"),
            ("https://h/r.git?depth=1", "unexpected query"),
        ] {
            let e = GitUrl::classify(src).unwrap().unwrap_err();
            assert!(e.reason.contains(msg), "{src}: {e}");
            assert!(e.to_string().contains("https://h/r.git"), "{e}");
        }
    }

    #[test]
    fn malformed_git_urls_are_errors_not_local_paths() {
        for src in ["git://h:notaport/r.git", "ssh://[::1/r", "git:///r.git"] {
            let e = GitUrl::classify(src).unwrap().unwrap_err();
            assert!(e.to_string().starts_with("git source "), "{e}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let src = "https://user:s3cret@h/r.git#main";
        let u = git(src);
        assert_eq!(u.redacted_remote(), "https://xxxxx:xxxxx@h/r.git");
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = GitUrl::classify("https://user:s3cret@h/r.git?x=1")
            .unwrap()
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert_eq!(
            crate::redact::url("https://tok@h/r.git#a@b"),
            "https://xxxxx@h/r.git#a@b"
        );
        assert_eq!(crate::redact::url("ssh://git@h/r"), "ssh://xxxxx@h/r");
        assert_eq!(crate::redact::url("git@h:r"), "git@h:r");
    }

    proptest::proptest! {
        /// What the fuzz target checks, on URL-shaped strings: no panic, the remote is the
        /// source before `?`/`#`, the subdir is clean, redaction is idempotent.
        #[test]
        fn any_source_classifies_cleanly(
            src in "(https?|git|ssh|GIT|ftp)?(://)?([a-z:@_-]{0,6}@)?[a-z0-9.:\\[\\]-]{0,10}/?[a-z./-]{0,10}(\\.git)?(\\?[a-z=&-]{0,16})?(#[a-z0-9/.:-]{0,12})?"
        ) {
            let shown = crate::redact::url(&src);
            proptest::prop_assert_eq!(crate::redact::url(&shown), shown.clone());
            if let Some(Ok(u)) = GitUrl::classify(&src) {
                let base = src.split('#').next().unwrap();
                let base = base.split('?').next().unwrap();
                proptest::prop_assert!(u.remote.eq_ignore_ascii_case(base));
                proptest::prop_assert!(u.remote.ends_with(base.split_once("://").map_or(base, |b| b.1)));
                proptest::prop_assert!(u.subdir.is_empty()
                    || u.subdir.split('/').all(|s| !matches!(s, "" | "." | "..")));
            }
        }
    }
}
