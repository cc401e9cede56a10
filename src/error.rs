//! The crate error: one `thiserror` enum per module, gathered here with `#[from]`, and the
//! mapping from each failure to the documented process exit code.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a cairn command can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dockerfile(#[from] crate::dockerfile::Error),
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    #[error(transparent)]
    Context(#[from] crate::context::Error),
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::Error),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Export(#[from] crate::export::Error),
    /// Bad command-line usage (a flag value that does not parse, a missing file).
    #[error("{0}")]
    Usage(String),
    /// A `RUN` step exited non-zero.
    #[error("{location}: RUN exited with {code}: {command}")]
    StepFailed {
        location: String,
        code: i32,
        command: String,
    },
    /// SIGINT or SIGTERM arrived; the build stopped and cleaned up.
    #[error("interrupted")]
    Interrupted,
    /// A bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

/// The documented exit codes (README, `cairn --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    Internal = 1,
    /// Bad usage or a bad Dockerfile / ignore file.
    Usage = 2,
    /// A `RUN` step failed.
    StepFailed = 3,
    /// Registry, auth or network failure.
    Registry = 4,
    /// Docker unreachable or permission denied.
    Docker = 5,
    /// Store problem (corrupt blob, disk full, permissions).
    Store = 6,
    /// The sandbox could not be set up (namespaces, id maps, mounts).
    Sandbox = 7,
    /// Interrupted by SIGINT/SIGTERM.
    Interrupted = 130,
}

impl ExitCode {
    /// One line per code, for `--help` and the README.
    pub const TABLE: &'static str =
        "exit codes: 0 ok, 1 internal error, 2 bad usage or Dockerfile, \
3 a RUN step failed, 4 registry/auth/network failure, 5 Docker unreachable or permission denied, \
6 store problem, 7 sandbox setup failed, 130 interrupted";
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

impl Error {
    /// The process exit code this failure maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Dockerfile(_) | Error::Plan(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Context(_) => ExitCode::Usage,
            Error::Registry(_) => ExitCode::Registry,
            Error::Store(_) | Error::Layer(_) | Error::Image(_) => ExitCode::Store,
            Error::Rootfs(_) | Error::Sandbox(_) => ExitCode::Sandbox,
            Error::Export(e) if e.is_docker() => ExitCode::Docker,
            Error::Export(_) => ExitCode::Store,
            Error::StepFailed { .. } => ExitCode::StepFailed,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}
