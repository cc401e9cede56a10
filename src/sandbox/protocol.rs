//! What the parent and the re-executed helper say to each other: the [`ChildSpec`] as one
//! JSON line on the helper's stdin, then `go` once the id maps are written; the helper
//! answers with [`Report`] lines on its stderr (the step's own output has stdout).

use super::mounts::RootSource;
use super::RunSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the helper is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Run a step.
    Run(Box<ChildSpec>),
    /// Unpack the uncompressed layer tar that follows on stdin into `target`, as root of a
    /// user namespace with this user's id maps (so owners survive a rootless unpack).
    Unpack { target: PathBuf },
    /// Remove a tree such an unpack made (its files belong to subordinate ids).
    Remove { path: PathBuf },
    /// Copy `layers` into `dest` for a copy-based root and save its snapshot.
    CopyRoot {
        layers: Vec<PathBuf>,
        dest: PathBuf,
        snapshot: PathBuf,
    },
    /// Write what changed in a copy-based root since its snapshot into `upper`.
    CopyChanges {
        snapshot: PathBuf,
        root: PathBuf,
        upper: PathBuf,
    },
    /// Write the changeset tar of a rootless step's upper directory to stdout, reading
    /// as root of the namespace (files of the step's users may be unreadable outside).
    LayerTar {
        dir: PathBuf,
        opts: crate::layer::LayerOptions,
    },
}

/// Everything the helper needs to run a step, resolved by the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub run: RunSpec,
    /// The empty mount point that becomes the step's `/`.
    pub root: PathBuf,
    pub source: RootSource,
    /// Holds `resolv.conf`, `hosts` and `hostname` for the step.
    pub etc_files: PathBuf,
    /// The parent's staging directory, where relative overlay lowers are resolved.
    pub staging: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// HOME for a step whose environment has none: the user's home in the image.
    pub home: String,
}

/// The parent's go-ahead after writing the maps.
pub const GO: &str = "go";

/// A line from the helper to the parent.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The user namespace exists: write its maps.
    Userns,
    /// The step's PID 1 has this host pid (killing it ends the whole step).
    Init(i32),
    /// Overlayfs could not be mounted: the parent may retry with a copied root.
    NoOverlay(String),
    /// The sandbox itself failed.
    Failed(String),
    /// Something the parent should print as a warning.
    Warning(String),
    /// The step's command ended with this code (128 + signal when killed).
    Exit(i32),
}

impl Report {
    pub fn to_line(&self) -> String {
        match self {
            Report::Userns => "userns".into(),
            Report::Init(pid) => format!("init {pid}"),
            Report::NoOverlay(why) => format!("nooverlay {why}"),
            Report::Failed(why) => format!("error {why}"),
            Report::Warning(what) => format!("warning {what}"),
            Report::Exit(code) => format!("exit {code}"),
        }
    }

    /// Parses a line; anything unknown (a panic message, say) is a failure.
    pub fn parse(line: &str) -> Report {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (word, rest.parse::<i32>()) {
            ("userns", _) => Report::Userns,
            ("init", Ok(pid)) => Report::Init(pid),
            ("exit", Ok(code)) => Report::Exit(code),
            ("nooverlay", _) => Report::NoOverlay(rest.to_string()),
            ("error", _) => Report::Failed(rest.to_string()),
            ("warning", _) => Report::Warning(rest.to_string()),
            _ => Report::Failed(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Userns,
            Report::Init(42),
            Report::NoOverlay("mount overlay: EINVAL".into()),
            Report::Failed("no such file".into()),
            Report::Warning("skipped 3 entries".into()),
            Report::Exit(130),
        ] {
            assert_eq!(Report::parse(&r.to_line()), r);
        }
        assert_eq!(
            Report::parse("thread 'main' panicked"),
            Report::Failed("thread 'main' panicked".into())
        );
    }
}
