//! The RUN sandbox: [`run`] executes one step's command in fresh user, mount, PID, UTS and
//! IPC namespaces (and an empty network namespace for [`Network::None`]) on an overlay of
//! the image's unpacked layers, with no runc, crun or daemon.
//!
//! `run` re-executes this binary with the hidden first argument [`CHILD_ARG`]; `main`
//! hands that to [`child_main`] before anything can start a thread, because
//! `unshare(CLONE_NEWUSER)` fails in a multi-threaded process. The helper unshares, lets
//! the parent write its id maps ([`id_maps`]), then forks the step's PID 1, which builds
//! the root (`mounts.rs`), drops to the step's user and Docker's default capabilities, and
//! execs the command. When PID 1 exits the kernel kills whatever else the step started.
//! All `unsafe` of the crate lives in `sys.rs`.

mod caps;
mod child;
mod copyroot;
mod helper;
mod idmaps;
mod init;
mod mounts;
mod parent;
mod protocol;
mod staging;
mod sys;
mod user;
mod userns;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use idmaps::id_maps;
pub use parent::{kill_running, run, run_with, RootMode};
pub use user::{find_in_layers, resolve_user};
pub use userns::{layer_tar_as_container_root, remove_as_container_root, unpack_as_container_root};

/// The hidden first argument that makes `main` run [`child_main`] instead of the CLI.
pub const CHILD_ARG: &str = "__cairn-sandbox";

/// The environment variable naming the binary to re-execute (tests point it at cairn).
pub const EXE_ENV: &str = "CAIRN_SANDBOX_EXE";

/// PATH for a step whose environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
    #[error("sandbox: {0}")]
    Io(#[from] std::io::Error),
}

/// A step's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace (so `apt-get` works).
    #[default]
    Host,
    /// An empty network namespace with only loopback, up.
    None,
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
    pub hostname: String,
    /// Bytes for the command's stdin (else `/dev/null`).
    pub stdin: Option<Vec<u8>>,
}

/// Entry point of the re-executed sandbox helper process.
pub fn child_main() -> std::process::ExitCode {
    child::main()
}
