//! Cache keys: the product's promise. [`CacheKey`] is a sha256 over a canonical,
//! length-framed encoding of a step's [`KeyInputs`]: its parent key, expanded instruction,
//! environment, user, workdir, shell, network mode and inputs digest.
//!
//! Keys are pure functions of those fields: no mtimes, host names, clocks, image names or
//! tags ever reach the hasher, so the same inputs give the same key on any machine, and any
//! changed input gives a different key. Every field is framed with its length (and every
//! list with its count), so no two different field sets can encode to the same bytes
//! (`["ab","c"]` and `["a","bc"]` differ). A `FROM` is a record like any other
//! ([`KeyInputs::base`]), so `--explain` can compare base digests the same way it compares
//! instruction text or context files.

use crate::digest::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The key of one build step. Equal keys promise equal results; keys never depend on
/// mtimes, host names, clocks, image names or tags.
#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CacheKey(pub Digest);

impl CacheKey {
    /// 64 hex digits, for file names in the cache index.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The instruction text of a `FROM` record; its key ignores the text (names and tags must
/// not change keys), only the manifest digest and platform count.
pub const FROM: &str = "FROM";

/// Everything that goes into one step's key, kept (serialized) per build so `--explain`
/// can say what changed. `input_files` is explanation only and is not hashed: `inputs`
/// already covers it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyInputs {
    pub parent: CacheKey,
    /// Keyword, flags and arguments after expansion, heredoc bodies included: the text
    /// [`crate::plan::Expanded::canonical`] gives, for `FROM` the constant [`FROM`].
    pub instruction: String,
    /// `K=V` in the order the step sees them (ENV order matters).
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub shell: Vec<String>,
    pub network: String,
    /// COPY/ADD: the Merkle hash of the sources; `COPY --from`: the source stage's key or
    /// the image digest; `FROM`: the resolved manifest digest; otherwise none.
    pub inputs: Option<Digest>,
    /// Per-source-file digests, for `--explain` only.
    #[serde(default)]
    pub input_files: BTreeMap<String, Digest>,
}

impl KeyInputs {
    /// A step record with everything but parent and instruction empty.
    pub fn new(parent: CacheKey, instruction: impl Into<String>) -> KeyInputs {
        KeyInputs {
            parent,
            instruction: instruction.into(),
            env: Vec::new(),
            user: String::new(),
            workdir: String::new(),
            shell: Vec::new(),
            network: String::new(),
            inputs: None,
            input_files: BTreeMap::new(),
        }
    }

    /// The record of a `FROM`: a registry image by its resolved manifest digest, or
    /// `scratch` (`None`), for a platform. Its key is [`base_key`] / [`scratch_key`].
    pub fn base(manifest: Option<&Digest>, platform: &Platform) -> KeyInputs {
        let mut k = KeyInputs::new(platform_root(platform), FROM);
        k.inputs = manifest.cloned();
        k
    }

    /// The step's key: sha256 of the framed encoding of every hashed field.
    pub fn key(&self) -> CacheKey {
        let mut f = Framer::new("cairn/step/v1");
        f.field(self.parent.0.as_str().as_bytes());
        f.field(self.instruction.as_bytes());
        f.list(&self.env);
        f.field(self.user.as_bytes());
        f.field(self.workdir.as_bytes());
        f.list(&self.shell);
        f.field(self.network.as_bytes());
        match &self.inputs {
            None => f.field(b"-"),
            Some(d) => {
                f.field(b"+");
                f.field(d.as_str().as_bytes());
            }
        }
        f.finish()
    }
}

/// The key of `FROM image` after resolving it to a platform manifest digest.
pub fn base_key(manifest: &Digest, platform: &Platform) -> CacheKey {
    KeyInputs::base(Some(manifest), platform).key()
}

/// The key of `FROM scratch`.
pub fn scratch_key(platform: &Platform) -> CacheKey {
    KeyInputs::base(None, platform).key()
}

/// The parent of every `FROM` record: the platform alone.
fn platform_root(platform: &Platform) -> CacheKey {
    let mut f = Framer::new("cairn/platform/v1");
    f.field(platform.to_string().as_bytes());
    f.finish()
}

/// Sentences saying why `current` misses where `previous` (the last build of the same
/// Dockerfile) had a key: which field changed, which build arg or env var, the base image
/// digest, which context file. Empty when the hashed fields are identical.
pub fn explain_change(previous: &KeyInputs, current: &KeyInputs) -> Vec<String> {
    let mut out = Vec::new();
    let is_from = current.instruction == FROM && previous.instruction == FROM;
    if previous.parent != current.parent {
        out.push(if is_from {
            "platform changed".to_string()
        } else {
            "parent step changed".to_string()
        });
    }
    if previous.instruction != current.instruction {
        out.push(format!(
            "instruction changed: {} -> {}",
            previous.instruction, current.instruction
        ));
    }
    explain_env(&previous.env, &current.env, &mut out);
    for (what, a, b) in [
        ("user", &previous.user, &current.user),
        ("workdir", &previous.workdir, &current.workdir),
        ("network mode", &previous.network, &current.network),
    ] {
        if a != b {
            out.push(format!("{what} changed: {a:?} -> {b:?}"));
        }
    }
    if previous.shell != current.shell {
        out.push(format!(
            "shell changed: {:?} -> {:?}",
            previous.shell, current.shell
        ));
    }
    if previous.inputs != current.inputs {
        if is_from {
            out.push(format!(
                "base image digest changed: {} -> {}",
                show(&previous.inputs),
                show(&current.inputs)
            ));
        } else {
            explain_files(previous, current, &mut out);
        }
    }
    out
}

/// How many context-file sentences to print before summarising the rest.
const MAX_FILE_LINES: usize = 20;

fn explain_files(previous: &KeyInputs, current: &KeyInputs, out: &mut Vec<String>) {
    let (a, b) = (&previous.input_files, &current.input_files);
    let mut lines = Vec::new();
    for (path, digest) in b {
        match a.get(path) {
            None => lines.push(format!("context file {path} added")),
            Some(old) if old != digest => lines.push(format!("context file {path} changed")),
            Some(_) => {}
        }
    }
    lines.extend(
        a.keys()
            .filter(|p| !b.contains_key(*p))
            .map(|p| format!("context file {p} removed")),
    );
    if lines.is_empty() {
        out.push(format!(
            "inputs changed: {} -> {}",
            show(&previous.inputs),
            show(&current.inputs)
        ));
        return;
    }
    let extra = lines.len().saturating_sub(MAX_FILE_LINES);
    out.extend(lines.into_iter().take(MAX_FILE_LINES));
    if extra > 0 {
        out.push(format!("... and {extra} more context files"));
    }
}

/// Values are not printed: build args may carry secrets.
fn explain_env(previous: &[String], current: &[String], out: &mut Vec<String>) {
    if previous == current {
        return;
    }
    let split = |v: &[String]| -> BTreeMap<String, String> {
        v.iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    };
    let (a, b) = (split(previous), split(current));
    let before = out.len();
    for (k, v) in &b {
        match a.get(k) {
            None => out.push(format!("build arg/env {k} added")),
            Some(old) if old != v => out.push(format!("build arg/env {k} changed")),
            Some(_) => {}
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        out.push(format!("build arg/env {k} removed"));
    }
    if out.len() == before {
        out.push("environment order changed".to_string());
    }
}

fn show(d: &Option<Digest>) -> String {
    d.as_ref().map_or("none".to_string(), Digest::to_string)
}

/// The canonical encoding: a domain tag, then each field as a big-endian u64 length and
/// its bytes; lists as a count followed by framed items.
pub(crate) struct Framer(Sha256);

impl Framer {
    pub(crate) fn new(domain: &str) -> Framer {
        let mut f = Framer(Sha256::new());
        f.field(domain.as_bytes());
        f
    }

    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn u64(&mut self, n: u64) {
        self.field(&n.to_be_bytes());
    }

    pub(crate) fn list<S: AsRef<str>>(&mut self, items: &[S]) {
        self.u64(items.len() as u64);
        for item in items {
            self.field(item.as_ref().as_bytes());
        }
    }

    pub(crate) fn digest(self) -> Digest {
        Digest::from_sha256(self.0.finalize().into())
    }

    fn finish(self) -> CacheKey {
        CacheKey(self.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(fields: &[&[u8]]) -> Digest {
        let mut f = Framer::new("t");
        for x in fields {
            f.field(x);
        }
        f.digest()
    }

    #[test]
    fn framing_is_unambiguous() {
        assert_ne!(framed(&[b"ab", b"c"]), framed(&[b"a", b"bc"]));
        assert_ne!(framed(&[b"", b"a"]), framed(&[b"a", b""]));
        assert_ne!(framed(&[b"a"]), framed(&[b"a", b""]));
        assert_eq!(framed(&[b"ab", b"c"]), framed(&[b"ab", b"c"]));
    }

    #[test]
    fn list_counts_are_framed() {
        let mut a = Framer::new("t");
        a.list(&["x", "y"]);
        a.list::<&str>(&[]);
        let mut b = Framer::new("t");
        b.list(&["x"]);
        b.list(&["y"]);
        assert_ne!(a.digest(), b.digest());
    }
}
