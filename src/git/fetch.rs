//! The impure half of a git source: `git ls-remote` to resolve a ref, a shallow fetch of
//! that commit into a fresh repository, the checkout, submodules, and the trimming to the
//! subdirectory and (without `--keep-git-dir`) the removal of `.git`.
//!
//! Every `git` runs through [`git`]: the user's own configuration still applies (it holds
//! their credential helpers and proxies), but hooks are off, the `file` and `ext`
//! transports are refused (so a hostile `.gitmodules` cannot clone the host's repositories
//! or run commands), prompts are off, and stdin is closed.

use super::{is_commit_sha, Error, GitSource};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What a ref resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit checked out.
    pub commit: String,
    /// The object the ref names: the commit, or an annotated tag's own object.
    pub object: String,
    /// The full ref (`refs/heads/main`, `refs/tags/v1`), or the commit when the source
    /// named one.
    pub used_ref: String,
}

/// A `git` command confined as the module doc says.
fn git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "protocol.file.allow=never",
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.symlinks=true",
        "-c",
        "advice.detachedHead=false",
        "-c",
        "init.defaultBranch=main",
    ]);
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("LC_ALL", "C");
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        // A password or host-key prompt would hang a build: fail instead.
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    cmd.stdin(Stdio::null());
    cmd
}

impl GitSource {
    fn local(&self, reason: String) -> Error {
        Error::Local {
            url: self.url.redacted_remote(),
            reason,
        }
    }

    fn fetch_err(&self, reason: String) -> Error {
        Error::Fetch {
            url: self.url.redacted_remote(),
            git_ref: self.ref_shown().to_string(),
            reason,
        }
    }

    /// Runs `cmd`; a failure becomes `on_fail(stderr)`.
    fn run(
        &self,
        mut cmd: Command,
        on_fail: impl FnOnce(String) -> Error,
    ) -> Result<Output, Error> {
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.local(
                    "the git program is not installed (cairn runs it for ADD of git URLs)".into(),
                )
            } else {
                self.local(format!("cannot run git: {e}"))
            }
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(on_fail(self.stderr_text(&out.stderr)))
        }
    }

    /// git's stderr, trimmed, with the remote's password (if any) taken out.
    fn stderr_text(&self, stderr: &[u8]) -> String {
        let text = String::from_utf8_lossy(stderr);
        let mut text = text.trim().replace('\n', "; ");
        let (raw, shown) = (&self.url.remote, self.url.redacted_remote());
        if raw != &shown {
            text = text.replace(raw.as_str(), &shown);
        }
        if let Some(pw) = password(raw) {
            text = text.replace(pw, "xxxxx");
        }
        if text.is_empty() {
            text = "git failed without a message".into();
        }
        text
    }

    /// Resolves the ref to a commit with `git ls-remote`, as BuildKit does: a full commit
    /// (or `?fetch-by-commit` with a full `--checksum`) needs no network; otherwise `refs/…` as written, then a branch, then a tag (git
    /// checkout's preference), an annotated tag peeled to its commit. `--checksum` must
    /// be a prefix of the commit or of the tag object.
    pub fn resolve(&self) -> Result<Resolved, Error> {
        let want = self.url.git_ref.as_str();
        if let Some(sum) = self.checksum.as_ref().filter(|_| self.url.fetch_by_commit) {
            // `?fetch-by-commit`: the checksum is trusted as the commit, as in BuildKit.
            return Ok(Resolved {
                commit: sum.clone(),
                object: sum.clone(),
                used_ref: sum.clone(),
            });
        }
        if is_commit_sha(want) {
            self.check_checksum(want, want)?;
            return Ok(Resolved {
                commit: want.into(),
                object: want.into(),
                used_ref: want.into(),
            });
        }
        let want = if want.is_empty() {
            self.default_branch()?
        } else {
            want.to_string()
        };
        let mut cmd = git(None);
        cmd.args(["ls-remote", "--"])
            .arg(&self.url.remote)
            .arg(&want)
            .arg(format!("{want}^{{}}"));
        let out = self.run(cmd, |e| {
            self.fetch_err(format!("cannot list the remote's refs: {e}"))
        })?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let r = pick_ref(&listing, &want).ok_or_else(|| Error::MissingRef {
            url: self.url.redacted_remote(),
            git_ref: want.clone(),
        })?;
        if !is_commit_sha(&r.commit) {
            return Err(
                self.fetch_err(format!("remote gave an invalid object name {:?}", r.commit))
            );
        }
        self.check_checksum(&r.commit, &r.object)?;
        Ok(r)
    }

    fn check_checksum(&self, commit: &str, object: &str) -> Result<(), Error> {
        let Some(want) = &self.checksum else {
            return Ok(());
        };
        if commit.starts_with(want.as_str()) || object.starts_with(want.as_str()) {
            return Ok(());
        }
        Err(Error::ChecksumMismatch {
            url: self.url.redacted_remote(),
            git_ref: self.ref_shown().to_string(),
            expected: want.clone(),
            got: if commit == object {
                commit.to_string()
            } else {
                format!("{commit} (tag object {object})")
            },
        })
    }

    /// The remote's `HEAD` branch (`git ls-remote --symref`).
    fn default_branch(&self) -> Result<String, Error> {
        let mut cmd = git(None);
        cmd.args(["ls-remote", "--symref", "--"])
            .arg(&self.url.remote)
            .arg("HEAD");
        let out = self.run(cmd, |e| {
            self.fetch_err(format!("cannot list the remote's refs: {e}"))
        })?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let (head, name) = l.strip_prefix("ref: ")?.split_once('\t')?;
                (name == "HEAD").then(|| head.to_string())
            })
            .ok_or_else(|| self.fetch_err("the remote has no default branch (HEAD)".into()))
    }

    /// Fetches `resolved` into `dir/tree` and checks it out; returns the directory whose
    /// contents the `ADD` copies (the subdirectory, if one was asked).
    pub fn checkout(&self, resolved: &Resolved, dir: &Path) -> Result<PathBuf, Error> {
        let tree = dir.join("tree");
        let mut init = git(None);
        init.args(["init", "-q"]);
        if resolved.commit.len() == 64 {
            init.arg("--object-format=sha256");
        }
        init.arg(&tree);
        self.run(init, |e| self.local(format!("git init: {e}")))?;
        self.git_in(
            &tree,
            ["remote", "add", "origin", "--"],
            &[&self.url.remote],
            false,
        )?;
        self.fetch(&tree, resolved)?;
        self.git_in(
            &tree,
            ["checkout", "-q", "--detach"],
            &[&resolved.commit],
            false,
        )?;
        if self.submodules && tree.join(".gitmodules").exists() {
            self.git_in(
                &tree,
                ["submodule", "update", "--init", "--recursive", "--depth=1"],
                &[],
                true,
            )?;
        }
        if self.mtime_commit {
            let out = self.git_in(
                &tree,
                ["log", "-1", "--format=%ct"],
                &[&resolved.commit],
                false,
            )?;
            let secs: i64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| self.local("git log gave no commit time".into()))?;
            set_times(&tree, secs).map_err(|e| self.local(format!("setting file times: {e}")))?;
        }
        if self.keep_git_dir && self.url.subdir.is_empty() {
            let shown = self.url.redacted_remote();
            self.git_in(
                &tree,
                ["remote", "set-url", "origin", "--"],
                &[&shown],
                false,
            )?;
            self.git_in(
                &tree,
                ["reflog", "expire", "--all", "--expire=now"],
                &[],
                false,
            )?;
            let _ = std::fs::remove_file(tree.join(".git/FETCH_HEAD"));
        } else {
            std::fs::remove_dir_all(tree.join(".git"))
                .map_err(|e| self.local(format!("removing .git: {e}")))?;
        }
        self.subdir(&tree)
    }

    /// Runs `git -C dir ARGS… -- EXTRA…`-style commands; `network` picks the error class.
    fn git_in<const N: usize>(
        &self,
        dir: &Path,
        args: [&str; N],
        extra: &[&str],
        network: bool,
    ) -> Result<Output, Error> {
        let mut cmd = git(Some(dir));
        cmd.args(args).args(extra.iter().map(OsStr::new));
        let what = args[..2.min(N)].join(" ");
        self.run(cmd, |e| {
            if network {
                self.fetch_err(format!("git {what}: {e}"))
            } else {
                self.local(format!("git {what}: {e}"))
            }
        })
    }

    /// A shallow fetch of the resolved commit. By ref name when there is one (every server
    /// serves that), checked against the commit ls-remote gave; by commit otherwise, and
    /// if the server refuses unadvertised commits, every branch and tag, then a check that
    /// the commit came with them.
    fn fetch(&self, tree: &Path, r: &Resolved) -> Result<(), Error> {
        if r.used_ref.starts_with("refs/") {
            let spec = format!("+{0}:{0}", r.used_ref);
            self.git_in(
                tree,
                [
                    "fetch",
                    "-q",
                    "--depth=1",
                    "--no-tags",
                    "--update-head-ok",
                    "origin",
                ],
                &[&spec],
                true,
            )?;
            if self.has_commit(tree, &r.commit) {
                return Ok(());
            }
        }
        let by_commit = self.git_in(
            tree,
            ["fetch", "-q", "--depth=1", "--no-tags", "origin"],
            &[&r.commit],
            true,
        );
        if by_commit.is_ok() && self.has_commit(tree, &r.commit) {
            return Ok(());
        }
        self.git_in(
            tree,
            ["fetch", "-q", "--tags", "--update-head-ok", "origin"],
            &["+refs/heads/*:refs/remotes/origin/*"],
            true,
        )?;
        if self.has_commit(tree, &r.commit) {
            Ok(())
        } else {
            Err(self.fetch_err(format!(
                "commit {} is not in the repository (or the server does not serve it)",
                r.commit
            )))
        }
    }

    fn has_commit(&self, tree: &Path, commit: &str) -> bool {
        let mut cmd = git(Some(tree));
        cmd.args(["cat-file", "-e", "--"])
            .arg(format!("{commit}^{{commit}}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// The subdirectory to copy: every component a real directory, never a symlink (which
    /// could point anywhere on the host), as BuildKit's `validateDirsOnly` insists.
    fn subdir(&self, tree: &Path) -> Result<PathBuf, Error> {
        let mut p = tree.to_path_buf();
        for part in self.url.subdir.split('/').filter(|s| !s.is_empty()) {
            p.push(part);
            let err = |reason: &str| Error::Subdir {
                url: self.url.redacted_remote(),
                git_ref: self.ref_shown().to_string(),
                subdir: self.url.subdir.clone(),
                reason: reason.into(),
            };
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return Err(err("is a symlink")),
                Ok(m) if !m.is_dir() => return Err(err("not a directory")),
                Ok(_) => {}
                Err(_) => return Err(err("not found in the repository")),
            }
        }
        Ok(p)
    }
}

/// BuildKit's choice among `ls-remote REF REF^{}` lines: `refs/REF` as written first, then
/// the branch, then the tag; an annotated tag's `^{}` line gives its commit.
pub(super) fn pick_ref(listing: &str, want: &str) -> Option<Resolved> {
    let tail = want.strip_prefix("refs/").unwrap_or(want);
    let exact = format!("refs/{tail}");
    let head = format!(
        "refs/heads/{}",
        want.strip_prefix("refs/heads/").unwrap_or(want)
    );
    let tag = format!(
        "refs/tags/{}",
        want.strip_prefix("refs/tags/").unwrap_or(want)
    );
    let peeled = format!("{tag}^{{}}");
    let (mut found_exact, mut found_head, mut found_tag, mut found_peeled) =
        (None, None, None, None);
    for line in listing.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let slot = if name == head {
            &mut found_head
        } else if name == tag {
            &mut found_tag
        } else if name == peeled {
            &mut found_peeled
        } else if name == exact {
            &mut found_exact
        } else {
            continue;
        };
        *slot = Some(sha.to_string());
    }
    let pick = |sha: String, used: &str| Resolved {
        commit: sha.clone(),
        object: sha,
        used_ref: used.to_string(),
    };
    if let Some(sha) = found_exact {
        return Some(pick(sha, &exact));
    }
    if let Some(sha) = found_head {
        return Some(pick(sha, &head));
    }
    let sha = found_tag?;
    let mut r = pick(sha, &tag);
    if let Some(commit) = found_peeled {
        r.commit = commit;
    }
    Some(r)
}

/// The password part of `scheme://user:password@host…`, if any.
fn password(remote: &str) -> Option<&str> {
    let start = remote.find("://")? + 3;
    let end = remote[start..]
        .find('/')
        .map_or(remote.len(), |i| start + i);
    let authority = &remote[start..end];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then_some(pw)
}

/// Sets every entry's access and modification time under `root` (not following symlinks,
/// skipping `.git`) to `secs`, so the tree's times come from the commit, not the clock.
fn set_times(root: &Path, secs: i64) -> std::io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    // Setting a child's times leaves its directory's alone, so any order will do.
    let walk = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || e.file_name() != ".git");
    for entry in walk {
        let entry = entry?;
        utimensat(None, entry.path(), &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn a_branch_wins_over_a_tag_and_annotated_tags_peel() {
        let listing = format!("{A}\trefs/heads/v1\n{B}\trefs/tags/v1\n{C}\trefs/tags/v1^{{}}\n");
        let r = pick_ref(&listing, "v1").unwrap();
        assert_eq!(
            (r.commit.as_str(), r.used_ref.as_str()),
            (A, "refs/heads/v1")
        );
        let listing = format!("{B}\trefs/tags/v1\n{C}\trefs/tags/v1^{{}}\n");
        let r = pick_ref(&listing, "v1").unwrap();
        assert_eq!((r.commit.as_str(), r.object.as_str()), (C, B));
        assert_eq!(r.used_ref, "refs/tags/v1");
        let r = pick_ref(&listing, "refs/tags/v1").unwrap();
        assert_eq!(r.commit, C);
        let listing = format!("{A}\trefs/remotes/origin/main\n{B}\trefs/heads/feature/main\n");
        assert_eq!(pick_ref(&listing, "main"), None);
        let listing = format!("{A}\trefs/pull/1/head\n");
        assert_eq!(pick_ref(&listing, "pull/1/head").unwrap().commit, A);
    }

    #[test]
    fn passwords_are_found_for_scrubbing() {
        assert_eq!(password("https://u:pw@h/r.git"), Some("pw"));
        assert_eq!(password("https://tok@h/r.git"), None);
        assert_eq!(password("git@h:r.git"), None);
    }
}
