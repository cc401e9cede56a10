//! [`prepare`]: the front half every command that reads a Dockerfile shares — read it
//! ([`read_dockerfile`]), parse it ([`parse`]), plan its stages, load the ignore file and
//! open the context. `cairn build` and `cairn key` take all of it; `cairn parse` stops after
//! the parse. One path, so the three commands cannot disagree about a Dockerfile: the same
//! file reads the same way and a bad one fails with the same `FILE:LINE:COL` error.

use super::{BuildOptions, Reporter};
use crate::context::Context;
use crate::dockerfile::{self, ignore::IgnoreMatcher, Dockerfile};
use crate::error::{Error, Result};
use crate::plan::{self, Plan, PlanOptions};
use crate::Platform;
use std::path::Path;

/// A Dockerfile read, parsed and planned, with its context opened.
pub struct Frontend {
    /// How the Dockerfile is named in messages (its path as given).
    pub df_name: String,
    pub plan: Plan,
    /// `None` when the Dockerfile came from stdin.
    pub context: Option<Context>,
    /// The parsed Dockerfile and the options it was planned with, to plan it again once
    /// the bases' ONBUILD triggers are known ([`Frontend::replan`]).
    pub dockerfile: Dockerfile,
    pub plan_options: PlanOptions,
}

impl Frontend {
    /// Plans the Dockerfile again with its bases' ONBUILD triggers (Dockerfile stage index
    /// → trigger texts), so a stage that only a trigger names is part of the plan.
    pub fn replan(
        &mut self,
        triggers: &std::collections::BTreeMap<usize, Vec<String>>,
    ) -> Result<()> {
        self.plan = plan::plan_with_triggers(&self.dockerfile, &self.plan_options, triggers)
            .map_err(|e| located(&self.df_name, e))?;
        Ok(())
    }
}

/// Reads a Dockerfile; an unreadable one is bad usage naming the file.
pub fn read_dockerfile(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Input {
        what: format!("cannot read {}", path.display()),
        source: e,
    })
}

/// Parses Dockerfile text, naming `path` in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dockerfile> {
    Ok(dockerfile::parse(text, &path.display().to_string())?)
}

/// Parses and plans the build's Dockerfile, warns about unused build args, and opens the
/// context with its ignore file.
pub fn prepare(opts: &BuildOptions, rep: &Reporter) -> Result<Frontend> {
    let df_name = opts.dockerfile_path.display().to_string();
    let df = parse(&opts.dockerfile_path, &opts.dockerfile_text)?;
    let plan_options = PlanOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: opts.platform.clone(),
        build_platform: Platform::host(),
    };
    let plan = plan::plan(&df, &plan_options).map_err(|e| located(&df_name, e))?;
    for (line, w) in &plan.warnings {
        rep.info(&format!("warning: {df_name}:{line}: {w}"));
    }
    for a in &plan.unused_build_args {
        rep.warn(&format!("build arg {a} was not consumed by any stage"));
    }
    let context = match &opts.context {
        Some(dir) => {
            let ignore =
                IgnoreMatcher::load(dir, &opts.dockerfile_path, opts.ignore_file.as_deref())
                    .map_err(crate::context::Error::from)?;
            Some(Context::open(dir, ignore)?)
        }
        None => None,
    };
    Ok(Frontend {
        df_name,
        plan,
        context,
        dockerfile: df,
        plan_options,
    })
}

/// A plan error located in the Dockerfile: `FILE:LINE: message`, as parse errors are.
pub(super) fn located(df_name: &str, e: plan::Error) -> Error {
    match e {
        plan::Error::At { line, message } => Error::Usage(format!("{df_name}:{line}: {message}")),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    fn options(dir: &Path, text: &str) -> BuildOptions {
        BuildOptions {
            context: Some(dir.to_path_buf()),
            dockerfile_path: dir.join("Dockerfile"),
            dockerfile_text: text.into(),
            ignore_file: None,
            build_args: Default::default(),
            target: None,
            platform: Platform::new("linux", "amd64", None),
            labels: Default::default(),
            no_cache: false,
            pull: Default::default(),
            network: crate::sandbox::Network::None,
            limits: Default::default(),
            compression: crate::layer::Compression::None,
            source_date_epoch: None,
            registry: Default::default(),
            mirrors: Default::default(),
            remote_cache: None,
            privilege: crate::userns::Privilege::Root,
            mounts: Default::default(),
            jobs: 0,
            final_base: None,
        }
    }

    fn quiet() -> Reporter {
        Reporter::new(super::super::Mode::Quiet, false)
    }

    #[test]
    fn a_dockerfile_is_planned_and_its_context_opened() {
        let dir = tempfile::tempdir().unwrap();
        let f = prepare(
            &options(
                dir.path(),
                "FROM scratch AS a\nLABEL x=1\nFROM a\nENV A=1\n",
            ),
            &quiet(),
        )
        .unwrap();
        assert_eq!(f.plan.stages.len(), 2);
        assert!(f.context.is_some());
        assert!(f.df_name.ends_with("Dockerfile"));
    }

    #[test]
    fn parse_and_plan_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let bad = prepare(&options(dir.path(), "FROM scratch\nBOGUS x\n"), &quiet())
            .err()
            .unwrap();
        assert_eq!(bad.exit_code(), ExitCode::Usage);
        assert!(bad.to_string().contains("Dockerfile:2"), "{bad}");
        let mut o = options(dir.path(), "FROM scratch\nLABEL a=b\n");
        o.target = Some("nope".into());
        let e = prepare(&o, &quiet()).err().unwrap();
        assert_eq!(e.exit_code(), ExitCode::Usage, "{e}");
    }

    #[test]
    fn an_unreadable_dockerfile_is_bad_usage_with_its_source() {
        let e = read_dockerfile(Path::new("/nonexistent/Dockerfile")).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Usage);
        assert!(e
            .to_string()
            .starts_with("cannot read /nonexistent/Dockerfile: "));
        assert!(std::error::Error::source(&e).is_some());
    }
}
