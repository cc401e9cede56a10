//! [`Plan`]: the stages a build needs, in dependency order, with `FROM` lines resolved under
//! the global `ARG`s and `--build-arg`s; pure (no I/O).
//!
//! The rules are BuildKit's: global ARGs (before the first `FROM`) are seen by `FROM` lines
//! only, together with the automatic platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...); a
//! `FROM` may name an *earlier* stage; `COPY --from` and `RUN --mount=from=` may name any
//! stage (by name or index) and make it a dependency, and a cycle is an error; `--target`
//! picks the last stage to build, and only what it reaches is planned. Per-stage variable
//! semantics live in [`Scope`], which the executor drives instruction by instruction.

mod expanded;
mod scope;
mod signal;

pub use expanded::{CopySource, Expanded, ExpandedCopy, ExpandedMount, ExpandedRun};
pub use scope::Scope;

use crate::dockerfile::expand;
use crate::dockerfile::{Dockerfile, Instruction, Spanned};
use crate::Platform;
use std::collections::{BTreeMap, BTreeSet};

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `--target` names no stage (the message, with BuildKit's suggestion, is complete).
    #[error("{0}")]
    UnknownTarget(String),
    /// A problem at a place in the Dockerfile.
    #[error("line {line}: {message}")]
    At { line: usize, message: String },
}

impl Error {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Error {
        Error::At {
            line,
            message: message.into(),
        }
    }
}

/// What a build is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

/// A stage's base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference, after global-ARG expansion.
    Image(String),
    /// An earlier stage: an index into `Plan::stages`.
    Stage(usize),
}

/// One stage the build needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// The stage's index in the Dockerfile.
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=` after expansion; `None` means the target platform.
    pub platform: Option<Platform>,
    /// Line of the `FROM`.
    pub line: usize,
    pub instructions: Vec<Spanned<Instruction>>,
    /// The global ARG values visible to this stage's `FROM` (and to `ARG X` redeclarations
    /// without a default), automatic platform ARGs included.
    pub global_args: BTreeMap<String, String>,
}

/// The stages to build, in dependency order; the last one is the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub stages: Vec<PlannedStage>,
    /// `--build-arg`s no ARG in the planned stages (or the global ones) declares, sorted.
    pub unused_build_args: Vec<String>,
    /// The `--build-arg`s as given.
    pub build_args: BTreeMap<String, String>,
    /// The escape character of the Dockerfile (expansion needs it).
    pub escape: char,
    /// Dockerfile stage index → index in `stages`, for planned stages.
    pub stage_map: BTreeMap<usize, usize>,
    /// Stage name → Dockerfile stage index, for every named stage.
    pub stage_names: BTreeMap<String, usize>,
    /// How many stages the Dockerfile has (planned or not).
    pub stage_count: usize,
    /// Warnings about the Dockerfile, each with its line, for the caller to show.
    pub warnings: Vec<(usize, String)>,
}

/// Build args Docker accepts without an `ARG` (proxies) or that configure the builder.
pub fn is_predefined_arg(name: &str) -> bool {
    const PROXIES: &[&str] = &[
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    PROXIES.iter().any(|p| p.eq_ignore_ascii_case(name))
        || name.starts_with("BUILDKIT_")
        || name == "SOURCE_DATE_EPOCH"
}

/// The proxy build args, which RUN sees without an `ARG`.
pub fn is_proxy_arg(name: &str) -> bool {
    is_predefined_arg(name) && !name.starts_with("BUILDKIT_") && name != "SOURCE_DATE_EPOCH"
}

/// The automatic platform ARGs.
pub fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(
            format!("{prefix}OSVERSION"),
            p.os_version.clone().unwrap_or_default(),
        );
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Every automatic ARG BuildKit defines: the platform ones and `TARGETSTAGE` (the
/// `--target` stage, else the last stage's name, else `default`). A `--build-arg` of the
/// same name overrides any of them.
fn builtin_args(df: &Dockerfile, opts: &PlanOptions) -> BTreeMap<String, String> {
    let mut m = platform_args(&opts.target_platform, &opts.build_platform);
    let stage = opts
        .target
        .clone()
        .or_else(|| df.stages.last().and_then(|s| s.from.name.clone()))
        .unwrap_or_else(|| "default".into());
    m.insert("TARGETSTAGE".into(), stage);
    for (k, v) in m.iter_mut() {
        if let Some(o) = opts.build_args.get(k) {
            v.clone_from(o);
        }
    }
    m
}

/// Evaluates the global ARGs: defaults expanded with the ARGs before them, `--build-arg`
/// overrides applied.
fn global_args(
    df: &Dockerfile,
    opts: &PlanOptions,
) -> Result<(BTreeMap<String, String>, BTreeSet<String>), Error> {
    let mut env = builtin_args(df, opts);
    let mut declared = BTreeSet::new();
    for inst in &df.global_args {
        let Instruction::Arg(decls) = &inst.node else {
            continue;
        };
        for d in decls {
            declared.insert(d.name.clone());
            let value = match (opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(expand_with(
                    def,
                    &env,
                    df.directives.escape,
                    inst.span.line,
                )?),
                (None, None) => None,
            };
            if let Some(v) = value {
                env.insert(d.name.clone(), v);
            }
        }
    }
    Ok((env, declared))
}

pub(crate) fn expand_with(
    word: &str,
    env: &BTreeMap<String, String>,
    escape: char,
    line: usize,
) -> Result<String, Error> {
    expand::expand_word(word, &|k| env.get(k).cloned(), escape)
        .map_err(|e| Error::at(line, e.to_string()))
}

/// A `--from` value (expanded with the global ARGs) resolved to a Dockerfile stage index, or
/// `None` for an image reference.
pub(crate) fn resolve_from(
    value: &str,
    names: &BTreeMap<String, usize>,
    stage_count: usize,
    line: usize,
) -> Result<Option<usize>, Error> {
    if let Ok(i) = value.parse::<usize>() {
        if i >= stage_count {
            return Err(Error::at(
                line,
                format!("invalid stage index {i}: there are {stage_count} stages"),
            ));
        }
        return Ok(Some(i));
    }
    Ok(names.get(&value.to_ascii_lowercase()).copied())
}

/// Every `--from` of a stage's instructions (COPY, and RUN mounts), unexpanded, with lines.
fn from_refs(insts: &[Spanned<Instruction>]) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    for i in insts {
        match &i.node {
            Instruction::Copy(c) => out.extend(c.from.as_deref().map(|f| (f, i.span.line))),
            Instruction::Run(r) => out.extend(
                r.mounts
                    .iter()
                    .filter_map(|m| m.from.as_deref())
                    .map(|f| (f, i.span.line)),
            ),
            _ => {}
        }
    }
    out
}

/// A stage's base-image triggers parsed as instructions located at its `FROM` line.
fn trigger_instructions(
    texts: Option<&Vec<String>>,
    line: usize,
) -> Result<Vec<Spanned<Instruction>>, Error> {
    texts
        .into_iter()
        .flatten()
        .map(|t| {
            let node = crate::dockerfile::parse_instruction_line(t)
                .map_err(|e| Error::at(line, format!("ONBUILD trigger of the base image: {e}")))?;
            Ok(Spanned {
                node,
                span: crate::dockerfile::Span {
                    line,
                    col: 1,
                    end_line: line,
                },
                original: format!("ONBUILD {t}"),
            })
        })
        .collect()
}

/// Plans a build.
pub fn plan(df: &Dockerfile, opts: &PlanOptions) -> Result<Plan, Error> {
    plan_with_triggers(df, opts, &BTreeMap::new())
}

/// Plans a build whose stages' base images carry `ONBUILD` triggers: `triggers` maps a
/// Dockerfile stage index to its base image's trigger texts (as stored in the image
/// config). A trigger's `COPY --from=NAME` (or `RUN --mount=from=NAME`) names a stage of
/// *this* Dockerfile and makes it a dependency, as BuildKit re-resolves the stage graph
/// after reading its bases' triggers; without this, such a stage would not be planned.
pub fn plan_with_triggers(
    df: &Dockerfile,
    opts: &PlanOptions,
    triggers: &BTreeMap<usize, Vec<String>>,
) -> Result<Plan, Error> {
    let escape = df.directives.escape;
    let (globals, mut declared) = global_args(df, opts)?;
    let names: BTreeMap<String, usize> = df
        .stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.from.name.clone().map(|n| (n, i)))
        .collect();
    // Per stage: base (as a Dockerfile index when a stage), platform, dependencies.
    let mut bases = Vec::new();
    let mut deps: Vec<BTreeSet<usize>> = Vec::new();
    for (i, st) in df.stages.iter().enumerate() {
        let line = st.span.line;
        let image = expand_with(&st.from.image, &globals, escape, line)?;
        if image.is_empty() {
            return Err(Error::at(
                line,
                format!("base name ({}) should not be blank", st.from.image),
            ));
        }
        let platform = match &st.from.platform {
            None => None,
            Some(p) => {
                let v = expand_with(p, &globals, escape, line)?;
                Some(
                    v.parse::<Platform>()
                        .map_err(|e| Error::at(line, e.to_string()))?,
                )
            }
        };
        let mut d = BTreeSet::new();
        let base = match names.get(&image.to_ascii_lowercase()) {
            Some(&j) if j < i => {
                d.insert(j);
                Base::Stage(j)
            }
            _ if image.eq_ignore_ascii_case("scratch") => Base::Scratch,
            _ => Base::Image(image),
        };
        let mut onbuild = trigger_instructions(triggers.get(&i), line)?;
        // A base stage of this Dockerfile carries its own ONBUILD lines as triggers.
        if let Base::Stage(j) = &base {
            onbuild.extend(
                df.stages[*j]
                    .instructions
                    .iter()
                    .filter_map(|inst| match &inst.node {
                        Instruction::Onbuild(o) => Some(Spanned {
                            node: (*o.inst).clone(),
                            span: inst.span,
                            original: inst.original.clone(),
                        }),
                        _ => None,
                    }),
            );
        }
        for (from, line) in from_refs(&st.instructions)
            .into_iter()
            .chain(from_refs(&onbuild))
        {
            let v = expand_with(from, &globals, escape, line)?;
            if let Some(j) = resolve_from(&v, &names, df.stages.len(), line)? {
                d.insert(j);
            }
        }
        bases.push((base, platform));
        deps.push(d);
    }
    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => *names.get(&t.to_ascii_lowercase()).ok_or_else(|| {
            let stages: Vec<&str> = names.keys().map(String::as_str).collect();
            Error::UnknownTarget(crate::dockerfile::suggest::did_you_mean(
                format!("target stage {t:?} could not be found"),
                t,
                &stages,
                true,
            ))
        })?,
    };
    let order = dependency_order(df, &deps, target)?;
    let stage_map: BTreeMap<usize, usize> =
        order.iter().enumerate().map(|(p, &d)| (d, p)).collect();
    let mut stages = Vec::new();
    for &i in &order {
        let st = &df.stages[i];
        let (base, platform) = bases[i].clone();
        let base = match base {
            Base::Stage(j) => Base::Stage(stage_map[&j]),
            b => b,
        };
        for inst in &st.instructions {
            if let Instruction::Arg(decls) = &inst.node {
                declared.extend(decls.iter().map(|d| d.name.clone()));
            }
        }
        stages.push(PlannedStage {
            index: i,
            name: st.from.name.clone(),
            base,
            platform,
            line: st.span.line,
            instructions: st.instructions.clone(),
            global_args: globals.clone(),
        });
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !is_predefined_arg(k))
        .cloned()
        .collect();
    let mut warnings = Vec::new();
    if let Some(s) = df.directives.unemulated_syntax() {
        warnings.push((
            df.directives.syntax_line,
            format!(
                "the syntax directive names the frontend {s}, which cairn does not emulate; \
                 the file is read as a docker/dockerfile:1 Dockerfile"
            ),
        ));
    }
    Ok(Plan {
        warnings,
        stages,
        unused_build_args,
        build_args: opts.build_args.clone(),
        escape,
        stage_map,
        stage_names: names,
        stage_count: df.stages.len(),
    })
}

/// Post-order depth-first walk from the target (dependencies in ascending index order), so
/// every stage comes after what it needs and the target is last.
fn dependency_order(
    df: &Dockerfile,
    deps: &[BTreeSet<usize>],
    target: usize,
) -> Result<Vec<usize>, Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; deps.len()];
    let mut order = Vec::new();
    // Explicit stack: (stage, next dependency position).
    let mut stack: Vec<(usize, usize)> = vec![(target, 0)];
    marks[target] = Mark::Open;
    while let Some(&mut (s, ref mut pos)) = stack.last_mut() {
        let next = deps[s].iter().nth(*pos).copied();
        *pos += 1;
        match next {
            None => {
                marks[s] = Mark::Done;
                order.push(s);
                stack.pop();
            }
            Some(d) => match marks[d] {
                Mark::Done => {}
                Mark::Open => {
                    let name = df.stages[d]
                        .from
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("stage-{d}"));
                    return Err(Error::at(
                        df.stages[s].span.line,
                        format!("circular dependency detected on stage: {name}"),
                    ));
                }
                Mark::New => {
                    marks[d] = Mark::Open;
                    stack.push((d, 0));
                }
            },
        }
    }
    Ok(order)
}
