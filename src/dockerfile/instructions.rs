//! [`Instruction`]: the closed set of typed Dockerfile commands, as written (before expansion).
//!
//! Every word is kept exactly as the file spells it (quotes and `$VAR` included) because
//! expansion depends on the scope at dispatch time (`plan::Scope`), and because the cache key
//! and `cairn parse` must be able to show what the user wrote. What the parser can check
//! without a scope — argument counts, flag names, mount types, JSON form — it checks here.

use std::time::Duration;

/// Shell form (`RUN make all`) or exec form (`RUN ["make", "all"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// The command text, to be run by the stage's `SHELL`.
    Shell(String),
    /// The argv, run as is.
    Exec(Vec<String>),
}

impl ShellOrExec {
    pub fn is_exec(&self) -> bool {
        matches!(self, ShellOrExec::Exec(_))
    }
}

/// A here-document attached to `RUN`, `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF`).
    pub name: String,
    /// The body, one `\n` after each line, with leading tabs stripped for `<<-`.
    pub body: String,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-` was used.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), if any.
    pub fd: Option<u32>,
}

/// `RUN --mount=type=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MountType {
    Bind,
    Cache,
    Secret,
    Tmpfs,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Secret => "secret",
            MountType::Tmpfs => "tmpfs",
            MountType::Ssh => "ssh",
        }
    }
}

/// One `--mount` of a `RUN`. Values are unexpanded; `options` holds every `key=value` of
/// the flag in the order written (with `type` removed), so nothing is lost for the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// `target`/`dst`/`destination`, if given.
    pub target: Option<String>,
    /// `source`/`src`, if given.
    pub source: Option<String>,
    /// `from=`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `id=` (cache, secret, ssh).
    pub id: Option<String>,
    /// Every option as written after the type: canonical key (aliases resolved) and value
    /// (`"true"` for bare boolean keys like `ro`).
    pub options: Vec<(String, String)>,
}

/// `RUN --network=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

impl Network {
    /// Every mode, for table tests.
    pub const ALL: [Network; 3] = [Network::Default, Network::None, Network::Host];

    /// The name as written in `--network=` and as it reaches the cache key: these bytes
    /// are part of every `RUN` key, so a variant's name is never derived from its Rust name.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Default => "default",
            Network::None => "none",
            Network::Host => "host",
        }
    }
}

/// `RUN --security=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Sandbox,
    Insecure,
}

impl Security {
    /// Every mode, for table tests.
    pub const ALL: [Security; 2] = [Security::Sandbox, Security::Insecure];

    /// The name as written in `--security=` and as it reaches the cache key (see
    /// [`Network::as_str`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: ShellOrExec,
    pub mounts: Vec<Mount>,
    pub network: Option<Network>,
    pub security: Option<Security>,
    pub heredocs: Vec<Heredoc>,
    /// Flags as written (quotes removed), e.g. `--mount=type=cache,target=/root/.cache`.
    pub flags: Vec<String>,
}

/// `COPY` and `ADD` (ADD-only and COPY-only flags are rejected by the parser).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    /// Sources as written; a heredoc source is its marker word (`<<EOF`), see `heredocs`.
    pub sources: Vec<String>,
    pub dest: String,
    /// The JSON form was used.
    pub json: bool,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
    pub heredocs: Vec<Heredoc>,
    pub flags: Vec<String>,
}

/// One name of an `ARG` line, default unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Cmd {
        cmd: ShellOrExec,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
        flags: Vec<String>,
    },
}

/// `ONBUILD <trigger>`: the trigger's text (what goes into the image config) and its parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    pub trigger: String,
    pub inst: Box<Instruction>,
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInst {
    /// The base as written (may hold `$ARG` references, expanded by the plan).
    pub image: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// The stage name, lower-cased as BuildKit does.
    pub name: Option<String>,
    pub flags: Vec<String>,
}

/// A typed instruction. Keys and values are as written (quotes kept) until `plan::Scope`
/// expands them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(FromInst),
    Run(Run),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Copy(Copy),
    Add(Copy),
    /// `(key, value)` pairs; the legacy `ENV k v w` form gives one pair `("k", "v w")`.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Onbuild(Onbuild),
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Shell(_) => "SHELL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Flags as written (quotes removed).
    pub fn flags(&self) -> &[String] {
        match self {
            Instruction::From(f) => &f.flags,
            Instruction::Run(r) => &r.flags,
            Instruction::Copy(c) | Instruction::Add(c) => &c.flags,
            Instruction::Healthcheck(Healthcheck::Cmd { flags, .. }) => flags,
            _ => &[],
        }
    }

    /// Here-documents attached to this instruction.
    pub fn heredocs(&self) -> &[Heredoc] {
        match self {
            Instruction::Run(r) => &r.heredocs,
            Instruction::Copy(c) | Instruction::Add(c) => &c.heredocs,
            Instruction::Onbuild(o) => o.inst.heredocs(),
            _ => &[],
        }
    }
}
