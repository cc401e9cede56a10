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
    /// A file named on the command line (or a build input) that cannot be read or written:
    /// bad usage, unless the source says the disk is full.
    #[error("{what}: {source}")]
    Input {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A local file operation of the build itself failed (a temporary directory, a
    /// download's file); the exit code follows the source (a full disk is a store problem).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A `RUN` step exited non-zero.
    #[error("{location}: RUN exited with {code}: {command}")]
    StepFailed {
        location: String,
        code: i32,
        command: String,
    },
    /// A failure while an instruction was prepared or run, at its Dockerfile line
    /// (`Dockerfile:3: copy source "x": not found in build context`); the exit code is the
    /// cause's.
    #[error("{location}: {source}")]
    At {
        location: String,
        #[source]
        source: Box<Error>,
    },
    /// JSON cairn reads or writes itself (a cache state, a listing) that does not
    /// (de)serialize: a bug, or a damaged store entry.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
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
    /// A local I/O failure: `what` failed with `source`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether the failure is a full file system or an exceeded quota: an `io::Error` in
    /// the source chain with `ENOSPC`/`EDQUOT`, or of that kind (libraries that add a path
    /// to an OS error, as `tempfile` does, keep its kind but not its errno). Classified by
    /// the sources only: an error that lost its source to a string is not guessed at.
    pub fn is_disk_full(&self) -> bool {
        const FULL: [i32; 2] = [libc::ENOSPC, libc::EDQUOT];
        // The kinds std gives those errnos (named `StorageFull`/`QuotaExceeded` only since
        // Rust 1.83, above our minimum), asked of std rather than spelled out.
        let full_kind = |k| {
            k != std::io::ErrorKind::Other
                && FULL
                    .iter()
                    .any(|&n| std::io::Error::from_raw_os_error(n).kind() == k)
        };
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.raw_os_error().is_some_and(|n| FULL.contains(&n))
                    || (io.raw_os_error().is_none() && full_kind(io.kind()))
                {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }

    /// `e` located at `file:line`, unless it already names a place in the Dockerfile (parse
    /// and plan errors, a failed RUN) or is an interruption.
    pub fn at_line(file: &str, line: usize, e: Error) -> Error {
        match e {
            Error::Interrupted
            | Error::StepFailed { .. }
            | Error::At { .. }
            | Error::Dockerfile(_)
            | Error::Plan(_) => e,
            Error::Usage(ref m) if m.starts_with(&format!("{file}:")) => e,
            e => Error::At {
                location: format!("{file}:{line}"),
                source: Box::new(e),
            },
        }
    }

    /// The process exit code this failure maps to.
    pub fn exit_code(&self) -> ExitCode {
        // A full disk is a store problem wherever it surfaced (pull, COPY staging, unpack).
        if self.is_disk_full() {
            return ExitCode::Store;
        }
        match self {
            Error::Dockerfile(_) | Error::Plan(_) | Error::Usage(_) | Error::Input { .. } => {
                ExitCode::Usage
            }
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
            Error::At { source, .. } => source.exit_code(),
            Error::Io { .. } | Error::Json { .. } | Error::Internal(_) => ExitCode::Internal,
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
        let local = Error::io("cannot create /s/tmp/x", enospc());
        assert_eq!(local.exit_code(), ExitCode::Store);
        let quota = Error::Input {
            what: "cannot write iid".into(),
            source: std::io::Error::from_raw_os_error(libc::EDQUOT),
        };
        assert_eq!(quota.exit_code(), ExitCode::Store);
        let wrapped = Error::Registry(crate::registry::Error::Store(crate::store::Error::Io {
            path: "/s/blobs".into(),
            source: enospc(),
        }));
        assert_eq!(wrapped.exit_code(), ExitCode::Store);
        // What tempfile returns: the kind kept, the errno behind a custom error.
        let with_path = Error::Store(crate::store::Error::Io {
            path: "/s/tmp".into(),
            source: std::io::Error::new(
                std::io::Error::from_raw_os_error(libc::ENOSPC).kind(),
                "at path /s/tmp/x",
            ),
        });
        assert_eq!(with_path.exit_code(), ExitCode::Store);
        let other = Error::Sandbox(crate::sandbox::Error::Io(
            std::io::Error::from_raw_os_error(libc::EPERM),
        ));
        assert_eq!(other.exit_code(), ExitCode::Sandbox);
    }

    /// Errors are classified by their sources, never by their text.
    #[test]
    fn text_that_looks_like_a_full_disk_is_not_one() {
        let text =
            Error::Internal("cannot create /s/tmp/x: No space left on device (os error 28)".into());
        assert_eq!(text.exit_code(), ExitCode::Internal);
        let io = Error::io(
            "cannot create /s/tmp/x",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(io.exit_code(), ExitCode::Internal);
        assert!(std::error::Error::source(&io).is_some());
        let input = Error::Input {
            what: "cannot read Dockerfile".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(input.exit_code(), ExitCode::Usage);
    }
}
