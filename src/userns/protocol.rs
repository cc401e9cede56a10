//! What the parent and the re-executed helper say to each other: the job as one JSON
//! line on the helper's stdin, then `go` once the id maps are written; the helper answers
//! with [`Report`] lines on its stderr (a job's own output has stdout).

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
