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

#[cfg(test)]
mod tests {
    use super::*;
    use userns::Job;

    /// Every job kind reaches its own decoder (a payload of the wrong shape is refused in
    /// that job's name), and a kind nobody defined is refused.
    #[test]
    fn every_job_kind_is_dispatched_to_its_owner() {
        let kinds = [
            sandbox::RunJob::KIND,
            sandbox::CopyRootJob::KIND,
            sandbox::CopyChangesJob::KIND,
            rootfs::UnpackJob::KIND,
            layer::TarJob::KIND,
            userns::RemoveJob::KIND,
        ];
        let mut unique = kinds.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            kinds.len(),
            "two jobs share a kind: {kinds:?}"
        );
        for kind in kinds {
            let err = dispatch(kind, serde_json::json!(42), std::io::stdin().lock()).unwrap_err();
            assert!(err.starts_with(&format!("bad {kind} job")), "{kind}: {err}");
        }
        let err = dispatch(
            "format-disk",
            serde_json::json!({}),
            std::io::stdin().lock(),
        );
        assert_eq!(err, Err("unknown helper job \"format-disk\"".into()));
    }
}
