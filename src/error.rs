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
    #[error(transparent)]
    Git(#[from] crate::git::Error),
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
    /// Whether the failure is a full file system or an exceeded quota: an `io::Error` with
    /// `ENOSPC`/`EDQUOT` in the source chain, or its text where a module kept only that.
    pub fn is_disk_full(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                    return true;
                }
            }
            cur = e.source();
        }
        let text = self.to_string();
        text.contains("(os error 28)") || text.contains("(os error 122)")
    }

    /// The process exit code this failure maps to.
    pub fn exit_code(&self) -> ExitCode {
        // A full disk is a store problem wherever it surfaced (pull, COPY staging, unpack).
        if self.is_disk_full() {
            return ExitCode::Store;
        }
        match self {
            Error::Dockerfile(_) | Error::Plan(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Context(_) => ExitCode::Usage,
            Error::Registry(_) => ExitCode::Registry,
            // A rootless layer is written by the sandbox's helper: its failures are its.
            Error::Layer(crate::layer::Error::Broker(_)) => ExitCode::Sandbox,
            Error::Store(_) | Error::Layer(_) | Error::Image(_) => ExitCode::Store,
            Error::Rootfs(_) | Error::Sandbox(_) => ExitCode::Sandbox,
            Error::Export(e) if e.is_docker() => ExitCode::Docker,
            Error::Export(_) => ExitCode::Store,
            Error::Git(e) if e.is_network() => ExitCode::Registry,
            Error::Git(e) if e.is_local() => ExitCode::Internal,
            Error::Git(_) => ExitCode::Usage,
            Error::StepFailed { .. } => ExitCode::StepFailed,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a full disk during a pull exited 4 (registry) instead of 6 (store).
    #[test]
    fn a_full_disk_is_a_store_problem_wherever_it_surfaces() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let store = Error::Store(crate::store::Error::Io {
            path: "/s/tmp".into(),
            source: enospc(),
        });
        assert_eq!(store.exit_code(), ExitCode::Store);
        let sandbox = Error::Sandbox(crate::sandbox::Error::Io(enospc()));
        assert_eq!(sandbox.exit_code(), ExitCode::Store);
        let stringified = Error::Internal(format!("cannot create /s/tmp/x: {}", enospc()));
        assert_eq!(stringified.exit_code(), ExitCode::Store);
        let other = Error::Sandbox(crate::sandbox::Error::Io(
            std::io::Error::from_raw_os_error(libc::EPERM),
        ));
        assert_eq!(other.exit_code(), ExitCode::Sandbox);
    }
}
