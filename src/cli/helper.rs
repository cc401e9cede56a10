//! The hidden helper subcommand: the one closed list of every job the privilege broker's
//! helper process can run (`crate::userns`). Each job's payload and code live beside its
//! owner (the step in `sandbox`, the unpack in `rootfs`, the layer tar in `layer`); this
//! dispatcher is the only place that knows them all, so the modules below need not know
//! one another.

use crate::userns::{child_main, perform, Report};
use crate::{layer, rootfs, sandbox, userns};
use std::io::StdinLock;

/// Runs the helper process (`main` calls this for [`userns::HELPER_ARG`] before anything
/// can start a thread).
pub fn main() -> std::process::ExitCode {
    child_main(dispatch)
}

fn dispatch(
    kind: &str,
    job: serde_json::Value,
    input: StdinLock<'static>,
) -> Result<Report, String> {
    use userns::Job;
    match kind {
        sandbox::RunJob::KIND => perform::<sandbox::RunJob>(job, input),
        sandbox::CopyRootJob::KIND => perform::<sandbox::CopyRootJob>(job, input),
        sandbox::CopyChangesJob::KIND => perform::<sandbox::CopyChangesJob>(job, input),
        rootfs::UnpackJob::KIND => perform::<rootfs::UnpackJob>(job, input),
        layer::TarJob::KIND => perform::<layer::TarJob>(job, input),
        userns::RemoveJob::KIND => perform::<userns::RemoveJob>(job, input),
        other => Err(format!("unknown helper job {other:?}")),
    }
}
