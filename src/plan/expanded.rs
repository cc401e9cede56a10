//! [`Expanded`]: an instruction with every word final (variables expanded where BuildKit
//! expands them, `--from` resolved), and its canonical text for the cache key.
//!
//! `canonical()` is a JSON object with sorted keys and no insignificant whitespace: stable
//! across runs and machines, unambiguous (every field is named and length-delimited by JSON
//! quoting), and it includes heredoc bodies, flags and exec-versus-shell form.

use crate::dockerfile::{Chmod, Healthcheck, Heredoc, MountType, Network, Security, ShellOrExec};
use serde_json::{json, Value};

/// Where `COPY --from` / `--mount=from=` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A stage: index into `Plan::stages`.
    Stage(usize),
    /// An image reference as written (after expansion).
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedMount {
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<CopySource>,
    pub id: Option<String>,
    /// Every option after expansion (canonical keys), in the order written.
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedRun {
    /// Never expanded by the builder: the shell does that.
    pub cmd: ShellOrExec,
    pub mounts: Vec<ExpandedMount>,
    pub network: Network,
    pub security: Security,
    /// Bodies as written (RUN heredocs are expanded by the shell, not the builder).
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpandedCopy {
    /// Source paths (context paths, URLs, git refs); heredoc sources are not here but in
    /// `heredocs`, in the order written.
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<CopySource>,
    pub chown: Option<String>,
    /// Parsed and checked; the key keeps the text as written.
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
    /// Bodies with variables expanded when the delimiter was unquoted.
    pub heredocs: Vec<Heredoc>,
}

/// An instruction ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expanded {
    Run(ExpandedRun),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Copy(ExpandedCopy),
    Add(ExpandedCopy),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// `(name, value)`: the value the ARG took (build-arg, default, or global), if any.
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger text, stored unexpanded in the image config.
    Onbuild(String),
    Maintainer(String),
}

fn cmd_json(c: &ShellOrExec) -> Value {
    match c {
        ShellOrExec::Shell(s) => json!({ "shell": s }),
        ShellOrExec::Exec(v) => json!({ "exec": v }),
    }
}

fn source_json(s: &Option<CopySource>) -> Value {
    match s {
        None => Value::Null,
        Some(CopySource::Stage(i)) => json!({ "stage": i }),
        Some(CopySource::Image(r)) => json!({ "image": r }),
    }
}

fn heredocs_json(h: &[Heredoc]) -> Value {
    h.iter()
        .map(|h| json!({"name": h.name, "body": h.body, "expand": h.expand, "chomp": h.chomp, "fd": h.fd}))
        .collect()
}

fn pairs_json(kv: &[(String, String)]) -> Value {
    kv.iter().map(|(k, v)| json!([k, v])).collect()
}

fn copy_json(c: &ExpandedCopy) -> Value {
    json!({
        "sources": c.sources, "dest": c.dest, "from": source_json(&c.from),
        "chown": c.chown, "chmod": c.chmod.as_ref().map(Chmod::as_str), "link": c.link,
        "parents": c.parents,
        "exclude": c.exclude, "checksum": c.checksum, "keep_git_dir": c.keep_git_dir,
        "unpack": c.unpack, "heredocs": heredocs_json(&c.heredocs),
    })
}

impl Expanded {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Expanded::Run(_) => "RUN",
            Expanded::Cmd(_) => "CMD",
            Expanded::Entrypoint(_) => "ENTRYPOINT",
            Expanded::Copy(_) => "COPY",
            Expanded::Add(_) => "ADD",
            Expanded::Env(_) => "ENV",
            Expanded::Label(_) => "LABEL",
            Expanded::Arg(_) => "ARG",
            Expanded::Workdir(_) => "WORKDIR",
            Expanded::User(_) => "USER",
            Expanded::Expose(_) => "EXPOSE",
            Expanded::Volume(_) => "VOLUME",
            Expanded::Shell(_) => "SHELL",
            Expanded::StopSignal(_) => "STOPSIGNAL",
            Expanded::Healthcheck(_) => "HEALTHCHECK",
            Expanded::Onbuild(_) => "ONBUILD",
            Expanded::Maintainer(_) => "MAINTAINER",
        }
    }

    /// A stable text form for the cache key: the keyword, a space, and a canonical JSON
    /// object of every expanded field.
    pub fn canonical(&self) -> String {
        let body = match self {
            Expanded::Run(r) => json!({
                "cmd": cmd_json(&r.cmd),
                "mounts": r.mounts.iter().map(|m| json!({
                    "type": m.kind.as_str(), "target": m.target, "source": m.source,
                    "from": source_json(&m.from), "id": m.id,
                    "options": pairs_json(&m.options),
                })).collect::<Vec<_>>(),
                "network": r.network.as_str(),
                "security": r.security.as_str(),
                "heredocs": heredocs_json(&r.heredocs),
            }),
            Expanded::Cmd(c) | Expanded::Entrypoint(c) => cmd_json(c),
            Expanded::Copy(c) => copy_json(c),
            // The key's text is kept in the store's records and quoted by `--explain`: a
            // URL's credentials are masked (the download's content is in the key anyway).
            Expanded::Add(c) => {
                let mut v = copy_json(&ExpandedCopy {
                    sources: c.sources.iter().map(|s| crate::redact::url(s)).collect(),
                    ..c.clone()
                });
                // `ADD --unpack=true <url>` copied the archive as a file until it learnt to
                // extract it, under this same text: the mark keeps those entries from
                // being hits. Every other ADD keeps its text.
                let url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
                if c.unpack == Some(true) && c.sources.iter().any(url) {
                    v["unpack_extracts_url"] = json!(true);
                }
                v
            }
            Expanded::Env(kv) | Expanded::Label(kv) => pairs_json(kv),
            Expanded::Arg(a) => a.iter().map(|(k, v)| json!([k, v])).collect(),
            // Marked as the step that creates its directory: cache entries made when
            // WORKDIR only changed the config must not be hits.
            Expanded::Workdir(s) => json!({ "path": s, "mkdir": true }),
            Expanded::User(s)
            | Expanded::StopSignal(s)
            | Expanded::Onbuild(s)
            | Expanded::Maintainer(s) => json!(s),
            Expanded::Expose(v) | Expanded::Volume(v) | Expanded::Shell(v) => json!(v),
            Expanded::Healthcheck(Healthcheck::None) => json!("NONE"),
            Expanded::Healthcheck(Healthcheck::Cmd {
                cmd,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
                ..
            }) => {
                let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
                json!({
                    "cmd": cmd_json(cmd), "interval": ns(interval), "timeout": ns(timeout),
                    "start_period": ns(start_period), "start_interval": ns(start_interval),
                    "retries": retries,
                })
            }
        };
        format!("{} {}", self.keyword(), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(network: Network, security: Security) -> Expanded {
        Expanded::Run(ExpandedRun {
            cmd: ShellOrExec::Shell("echo hi".into()),
            mounts: Vec::new(),
            network,
            security,
            heredocs: Vec::new(),
        })
    }

    /// The exact text every mode gives: these bytes are in every RUN key (the vectors in
    /// `tests/keys.rs` pin the resulting keys).
    #[test]
    fn run_modes_have_pinned_names() {
        let text = |n, s| run(n, s).canonical();
        assert_eq!(
            text(Network::Default, Security::Sandbox),
            r#"RUN {"cmd":{"shell":"echo hi"},"heredocs":[],"mounts":[],"network":"default","security":"sandbox"}"#
        );
        assert!(text(Network::None, Security::Sandbox).contains(r#""network":"none""#));
        assert!(text(Network::Host, Security::Sandbox).contains(r#""network":"host""#));
        assert!(text(Network::Default, Security::Insecure).contains(r#""security":"insecure""#));
    }

    /// Neighbouring words and heredoc bodies cannot run into each other.
    #[test]
    fn canonical_text_is_unambiguous() {
        let copy = |sources: &[&str], body: &str| {
            Expanded::Copy(ExpandedCopy {
                sources: sources.iter().map(|s| s.to_string()).collect(),
                dest: "/x/".into(),
                heredocs: vec![Heredoc {
                    name: "EOF".into(),
                    body: body.into(),
                    expand: true,
                    chomp: false,
                    fd: None,
                }],
                ..ExpandedCopy::default()
            })
            .canonical()
        };
        assert_ne!(copy(&["a b"], ""), copy(&["a", "b"], ""));
        assert_ne!(copy(&["a"], "1\n"), copy(&["a"], "2\n"));
        assert!(copy(&["a"], "").starts_with("COPY {"));
    }

    /// An ADD URL's credentials never reach the key's text (kept in the store, quoted by
    /// `--explain`); the rest of the URL does.
    #[test]
    fn add_url_credentials_are_masked_in_the_key_text() {
        let add = |src: &str| {
            Expanded::Add(ExpandedCopy {
                sources: vec![src.to_string()],
                dest: "/d/".into(),
                ..ExpandedCopy::default()
            })
            .canonical()
        };
        let text = add("https://u:hunter2@h/p/f.txt");
        assert!(!text.contains("hunter2") && !text.contains("u:"), "{text}");
        assert!(text.contains("https://xxxxx:xxxxx@h/p/f.txt"), "{text}");
        assert_eq!(
            add("https://h/p/f.txt")
                .matches("https://h/p/f.txt")
                .count(),
            1
        );
        assert_ne!(add("https://u:p@h/a"), add("https://u:p@h/b"));
    }
}
