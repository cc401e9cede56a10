//! The RUN sandbox: [`run`] executes one step's command in fresh user, mount, PID, UTS and
//! IPC namespaces (and a network namespace of its own unless [`Network::Host`]: empty for
//! [`Network::None`], connected to the outside through `slirp4netns` for [`Network::Default`],
//! `net.rs`) on an overlay of the image's unpacked layers, with no runc, crun or daemon.
//!
//! A step is a [`RunJob`] of the privilege broker (`crate::userns`): its helper (this
//! binary re-executed) unshares the namespaces, lets the parent write the id maps of the
//! [`Privilege`](crate::userns::Privilege) it is given, then forks the step's PID 1, which
//! builds the root (`mounts.rs`), drops to the step's user and Docker's default
//! capabilities, and execs the command. When PID 1 exits the kernel kills whatever else
//! the step started. Where overlayfs cannot be mounted the step runs on a copied root
//! ([`fallback`], as [`CopyRootJob`] and [`CopyChangesJob`] when rootless). The sandbox
//! reads the image only through [`crate::stack`]; it knows nothing of layers or the
//! unpacker. Warnings go to the caller's sink, never to stderr. All `unsafe` of the crate
//! lives in `sys.rs`.

mod caps;
mod cgroup;
mod child;
mod copyroot;
pub mod fallback;
mod init;
mod mounts;
mod net;
mod parent;
mod seccomp;
mod staging;
mod stepmounts;
mod sys;
mod user;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use cgroup::{step_cgroup_owner, Limits, Ulimit, DEFAULT_PIDS};
pub use child::{ChildSpec, RunJob};
pub use copyroot::{CopyChangesJob, CopyRootJob};
pub use parent::{
    enter_group, kill_group, kill_running, new_group, run, run_outcome, run_with, run_with_outcome,
    GroupGuard, Outcome, RootMode,
};
pub use stepmounts::{resolve_in_root, SecretBytes, StepMount, StepMountKind};
pub use user::resolve_user;

/// PATH for a step whose environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
    #[error("sandbox: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Broker(#[from] crate::userns::Error),
}

/// A step's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A network namespace of its own with outbound access through a user-mode stack
    /// (`slirp4netns`): the host's loopback services and interfaces are out of reach.
    #[default]
    Default,
    /// The host's network namespace.
    Host,
    /// An empty network namespace with only loopback, up.
    None,
}

/// A step's security mode (`RUN --security`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// Docker's default capabilities and seccomp profile.
    #[default]
    Sandbox,
    /// No seccomp filter (`--security=insecure`, which the caller allows only with the
    /// `security.insecure` entitlement).
    Insecure,
}

/// One `RUN` step, fully resolved by the executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Unpacked layer dirs, bottom (base) first; may be empty (`FROM scratch`).
    pub lowers: Vec<PathBuf>,
    /// Empty dirs on one file system; afterwards `upper` holds exactly the step's change,
    /// in overlayfs form (whiteouts as 0/0 char devices, `user.overlay.opaque` markers).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The final argv (SHELL already applied for shell form).
    pub argv: Vec<String>,
    /// `K=V`, final; nothing else of the host's environment reaches the step.
    pub env: Vec<String>,
    /// `USER` as written: "", "name", "uid", "name:group", "uid:gid".
    pub user: String,
    /// Absolute; created when missing.
    pub workdir: String,
    pub network: Network,
    pub security: Security,
    /// Cgroup limits, `/dev/shm` size and rlimits.
    pub limits: Limits,
    pub hostname: String,
    /// Bytes for the command's stdin (else `/dev/null`).
    pub stdin: Option<Vec<u8>>,
    /// The step's `RUN --mount`s, mounted in the order given.
    #[serde(default)]
    pub mounts: Vec<StepMount>,
}
