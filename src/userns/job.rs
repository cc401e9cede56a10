//! [`Job`]: a piece of work the helper does as root of a user namespace with this user's
//! maps, and [`run_job`], the parent's side of one: start the helper, write its maps, feed
//! it input, copy its output, collect its report and its warnings. Each module defines its
//! own jobs beside its code (the unpacker in `rootfs`, the layer tar in `layer`, the step
//! in `sandbox`); only [`RemoveJob`], which all of them need, lives here.

use super::helper::{answer_userns, Helper};
use super::protocol::Report;
use super::{Error, Privilege};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, StdinLock, Write};
use std::path::{Path, PathBuf};

/// A job for the helper.
pub trait Job: Serialize + DeserializeOwned {
    /// The name the dispatcher knows it by.
    const KIND: &'static str;

    /// Namespaces to unshare besides the user namespace.
    fn namespaces(&self) -> Namespaces {
        Namespaces::default()
    }

    /// Runs in the helper, as root of the new namespace. `input` is the rest of the
    /// helper's stdin (what [`run_job`] feeds it); reports other than the last one (a
    /// [`Report::Warning`], say) go out with [`super::send`].
    fn run(self, input: StdinLock<'static>) -> Result<Report, String>;
}

/// Namespaces a job's helper unshares besides the user namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub mount: bool,
    pub pid: bool,
    pub uts: bool,
    pub ipc: bool,
    pub net: bool,
}

/// The first line the helper reads.
#[derive(Serialize, Deserialize)]
pub(super) struct Envelope {
    pub kind: String,
    pub namespaces: Namespaces,
    pub job: serde_json::Value,
}

/// Runs `job` in a helper as root of a user namespace with `privilege`'s maps, feeding it
/// `input` and copying its stdout to `output`; returns the warnings it reported.
pub fn run_job<J: Job>(
    privilege: &Privilege,
    job: &J,
    input: Option<&mut dyn Read>,
    output: Option<&mut dyn Write>,
) -> Result<Vec<String>, Error> {
    let mut helper = Helper::spawn(job, output.is_some())?;
    let pid = helper.pid();
    let first = read_report(&mut helper.stderr);
    if first != Some(Report::Userns) {
        let _ = helper.child.wait();
        return Err(Error::Message(format!("sandbox helper: {first:?}")));
    }
    answer_userns(&mut helper.stdin, pid, privilege)?;
    let mut stdin = helper.stdin;
    let sent = match input {
        Some(tar) => std::io::copy(tar, &mut stdin).and_then(|_| stdin.flush()),
        None => Ok(()),
    };
    drop(stdin);
    let copied = match (output, helper.stdout.take()) {
        (Some(out), Some(mut stdout)) => std::io::copy(&mut stdout, out).map(drop),
        _ => Ok(()),
    };
    let mut warnings = Vec::new();
    let mut outcome = Err(Error::Message(
        "sandbox helper ended without a report".into(),
    ));
    while let Some(report) = read_report(&mut helper.stderr) {
        match report {
            Report::Warning(w) => warnings.push(w),
            Report::Exit(0) => outcome = Ok(()),
            Report::Failed(why) => outcome = Err(Error::Message(why)),
            other => outcome = Err(Error::Message(format!("sandbox helper: {other:?}"))),
        }
    }
    helper.child.wait()?;
    // A failed write means the helper stopped reading; its own report says why.
    match (outcome, sent, copied) {
        (Ok(()), Err(e), _) => Err(Error::Message(format!("send the input to the helper: {e}"))),
        (Ok(()), _, Err(e)) => Err(Error::Message(format!("read the helper's output: {e}"))),
        (outcome, _, _) => outcome.map(|()| warnings),
    }
}

fn read_report(stderr: &mut impl BufRead) -> Option<Report> {
    let mut line = String::new();
    match stderr.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(Report::parse(line.trim_end())),
    }
}

/// Removes a tree that may hold files of subordinate ids (an unpacked layer, a rootless
/// step's directories), which the user alone cannot remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveJob {
    pub path: PathBuf,
}

impl Job for RemoveJob {
    const KIND: &'static str = "remove";

    fn run(self, _input: StdinLock<'static>) -> Result<Report, String> {
        std::fs::remove_dir_all(&self.path)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("remove {}: {e}", self.path.display()))
    }
}

/// Removes the tree `path` with `privilege`: directly as root, else as root of a user
/// namespace with the user's maps.
pub fn remove_as_root(privilege: &Privilege, path: &Path) -> Result<(), Error> {
    match privilege {
        Privilege::Root => Ok(std::fs::remove_dir_all(path)?),
        Privilege::Rootless(_) => run_job(
            privilege,
            &RemoveJob {
                path: path.to_path_buf(),
            },
            None,
            None,
        )
        .map(drop),
    }
}
