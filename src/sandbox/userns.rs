//! Layer jobs for rootless builds that need the sandbox's id maps without a whole
//! sandbox: [`unpack_as_container_root`] unpacks a layer as root of a user namespace, so
//! a file the layer gives to uid 42 belongs to the subordinate id the step will see as 42
//! (an unprivileged process could only keep them all its own), and
//! [`remove_as_container_root`] removes such a tree again, which the user alone cannot, and
//! [`layer_tar_as_container_root`] writes a rootless step's layer tar reading as the
//! namespace's root (a step's `chmod 700` directory of user 1000 is unreadable outside).

use super::helper::{answer_userns, Helper};
use super::protocol::{Job, Report};
use super::Error;
use std::io::{BufRead, Read, Write};
use std::path::Path;

/// Unpacks the uncompressed layer tar `tar` into the existing directory `target` inside a
/// user namespace with this user's maps (see `rootfs::unpack_tar` for the rules).
pub fn unpack_as_container_root(tar: &mut dyn Read, target: &Path) -> Result<(), Error> {
    let job = Job::Unpack {
        target: target.to_path_buf(),
    };
    run_job(&job, Some(tar))
}

/// Removes a tree made by [`unpack_as_container_root`] (or a rootless step's upper).
pub fn remove_as_container_root(path: &Path) -> Result<(), Error> {
    let job = Job::Remove {
        path: path.to_path_buf(),
    };
    run_job(&job, None)
}

/// Writes the uncompressed changeset tar of `dir` (see `layer::write_tar`) to `out`,
/// reading it inside a user namespace with this user's maps; `opts`' id maps are not
/// needed there (owners read as the container's ids).
pub fn layer_tar_as_container_root(
    dir: &Path,
    opts: &crate::layer::LayerOptions,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let job = Job::LayerTar {
        dir: dir.to_path_buf(),
        opts: opts.clone(),
    };
    run_job_with_output(&job, None, Some(out))
}

/// Runs one layer job in a helper, feeding it `input`, and waits for its report.
pub(super) fn run_job(job: &Job, input: Option<&mut dyn Read>) -> Result<(), Error> {
    run_job_with_output(job, input, None)
}

fn run_job_with_output(
    job: &Job,
    input: Option<&mut dyn Read>,
    output: Option<&mut dyn Write>,
) -> Result<(), Error> {
    let mut helper = Helper::spawn(job, output.is_some())?;
    let pid = helper.pid();
    let first = read_report(&mut helper.stderr);
    if first != Some(Report::Userns) {
        let _ = helper.child.wait();
        return Err(Error::Message(format!("sandbox helper: {first:?}")));
    }
    answer_userns(&mut helper.stdin, pid)?;
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
    let mut outcome = Err(Error::Message(
        "sandbox helper ended without a report".into(),
    ));
    while let Some(report) = read_report(&mut helper.stderr) {
        match report {
            Report::Warning(w) => eprintln!("cairn: warning: {w}"),
            Report::Exit(0) => outcome = Ok(()),
            Report::Failed(why) => outcome = Err(Error::Message(why)),
            other => outcome = Err(Error::Message(format!("sandbox helper: {other:?}"))),
        }
    }
    helper.child.wait()?;
    // A failed write means the helper stopped reading; its own report says why.
    match (outcome, sent, copied) {
        (Ok(()), Err(e), _) => Err(Error::Message(format!("send the layer to the helper: {e}"))),
        (Ok(()), _, Err(e)) => Err(Error::Message(format!("read the helper's output: {e}"))),
        (outcome, _, _) => outcome,
    }
}

fn read_report(stderr: &mut impl BufRead) -> Option<Report> {
    let mut line = String::new();
    match stderr.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(Report::parse(line.trim_end())),
    }
}
