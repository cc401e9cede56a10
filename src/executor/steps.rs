//! One function per kind of step: [`prepare`] gathers a step's inputs (COPY sources and their
//! Merkle hash) so the key can be computed before anything runs, [`execute`] runs a miss, and
//! [`simulate`] stands in for a step `cairn key` does not run. How an instruction changes
//! the image config is [`dispatch::apply`]'s business, not this module's. Each function
//! takes the [`StepEnv`] and the [`Step`] at hand, never the builder.

use super::dispatch::{self, StageFacts};
use super::env::{Step, StepEnv};
use super::{progress, Event, State};
use crate::cache::CacheKey;
use crate::context::{self, CopyOptions, InputsHash, Source};
use crate::digest::Digest;
use crate::dockerfile::{Heredoc, Instruction, ShellOrExec, Spanned};
use crate::error::{Error, Result};
use crate::image::LayerDesc;
use crate::layer::{self, Chown, LayerOptions};
use crate::plan::{Expanded, ExpandedCopy, ExpandedRun};
use crate::sandbox::{self, Network, RunSpec};
use crate::userns::Privilege;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What a step needs beyond its instruction, gathered before the key is computed.
pub(super) enum Prepared {
    Plain,
    Run {
        network: Network,
        /// `RUN --mount=type=bind` sources, hashed into the key like COPY sources.
        binds: Vec<super::mounts::BindInput>,
    },
    Copy {
        target: CopyTarget,
        sources: CopySources,
        hash: InputsHash,
    },
    CopyFrom {
        target: CopyTarget,
        key: CacheKey,
        layers: Vec<LayerDesc>,
    },
}

/// Where and how a COPY or ADD writes, worked out once for its key and its run.
pub(super) struct CopyTarget {
    /// The destination made absolute against WORKDIR.
    dest: String,
    options: CopyOptions,
}

impl CopyTarget {
    fn new(c: &ExpandedCopy, state: &State, command: &'static str) -> Result<CopyTarget> {
        Ok(CopyTarget {
            dest: dest_path(&c.dest, state.config.config.working_dir.as_deref()),
            options: CopyOptions {
                command,
                ..copy_options(c)?
            },
        })
    }
}

/// Where COPY sources come from.
pub(super) enum CopySources {
    Context(Vec<Source>),
    /// Heredoc bodies written to a temporary directory (kept alive with the sources).
    Heredocs {
        _dir: tempfile::TempDir,
        sources: Vec<Source>,
    },
    /// Git sources resolved to commits (`add::prepare_git`), keyed on those commits and
    /// checked out only when the step runs.
    Git(Vec<super::add::PendingGit>),
}

impl CopySources {
    fn sources(&self) -> &[Source] {
        match self {
            CopySources::Context(s) | CopySources::Heredocs { sources: s, .. } => s,
            // Nothing on disk yet: `copy_step` checks them out.
            CopySources::Git(_) => &[],
        }
    }
}

impl Prepared {
    pub(super) fn network_name(&self, default: Network) -> &'static str {
        match self {
            Prepared::Run { network, .. } => network_str(*network),
            _ => network_str(default),
        }
    }

    pub(super) fn inputs_digest(&self) -> Option<Digest> {
        match self {
            Prepared::Copy { hash, .. } => Some(hash.digest.clone()),
            Prepared::CopyFrom { key, .. } => Some(key.0.clone()),
            Prepared::Run { binds, .. } => super::mounts::binds_digest(binds),
            _ => None,
        }
    }

    /// The per-file digests of the step's inputs, for its `--explain` record.
    pub(super) fn input_files(&self) -> BTreeMap<String, Digest> {
        match self {
            Prepared::Copy { hash, .. } => hash.files.clone(),
            Prepared::Run { binds, .. } => {
                binds.iter().flat_map(|b| b.hash.files.clone()).collect()
            }
            _ => BTreeMap::new(),
        }
    }

    /// [`Prepared::input_files`] taken, not cloned (20,000 paths for a large COPY): for a
    /// step that does not run, which reads them no more.
    pub(super) fn take_input_files(&mut self) -> BTreeMap<String, Digest> {
        match self {
            Prepared::Copy { hash, .. } => std::mem::take(&mut hash.files),
            Prepared::Run { binds, .. } => binds
                .iter_mut()
                .flat_map(|b| std::mem::take(&mut b.hash.files))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

fn network_str(n: Network) -> &'static str {
    match n {
        Network::None => "none",
        // Cache keys are a promise: the default network had the key name "host" when the
        // default was the host's network, and keeps it, so no default build rebuilds.
        Network::Default => "host",
        // The host's own network is now a different mode from the default (a RUN there can
        // reach the host's loopback services), so it must not share the default's keys.
        Network::Host => "host-shared",
    }
}

/// Parses a base image's ONBUILD trigger into an instruction of this stage, located at the
/// stage's FROM line (a trigger has no line of its own).
pub(super) fn parse_trigger(text: &str, from_line: usize) -> Result<Spanned<Instruction>> {
    let node = crate::dockerfile::parse_instruction_line(text)?;
    Ok(Spanned {
        node,
        span: crate::dockerfile::Span {
            line: from_line,
            col: 1,
            end_line: from_line,
        },
        original: format!("ONBUILD {text}"),
    })
}

/// What `COPY --from` copies out of: the source stage's (or image's) key and layers,
/// resolved by the orchestrator, which knows the stages and pulls images.
pub(super) struct FromSource {
    pub key: CacheKey,
    pub layers: Vec<LayerDesc>,
}

/// Gathers a step's inputs; `from` is the resolved `COPY --from` source, if any, and
/// `mount_froms` the resolved `from=` of each `RUN --mount`.
pub(super) fn prepare(
    env: &StepEnv<'_>,
    step: &Step<'_>,
    from: Option<FromSource>,
    mount_froms: Vec<Option<FromSource>>,
) -> Result<Prepared> {
    let exp = step.exp;
    match exp {
        Expanded::Run(run)
            if run.security == crate::dockerfile::Security::Insecure
                && !env.mounts.allow_insecure =>
        {
            Err(Error::Usage(format!(
                "{}: RUN --security=insecure needs the entitlement: cairn build --allow security.insecure",
                env.location(step)
            )))
        }
        // Entitlements are checked before the key, as BuildKit checks them before solving:
        // a cached step is no way around them.
        Expanded::Run(run)
            if run.network == crate::dockerfile::Network::Host
                && !env.mounts.allow_network_host =>
        {
            Err(Error::Usage(format!(
                "{}: RUN --network=host needs the entitlement: cairn build --allow network.host",
                env.location(step)
            )))
        }
        Expanded::Run(run) if run.security == crate::dockerfile::Security::Insecure => {
            Err(Error::Usage(format!(
                "{}: RUN --security=insecure is not supported: cairn runs every step with Docker's default capabilities",
                env.location(step)
            )))
        }
        Expanded::Run(run) => Ok(Prepared::Run {
            binds: super::mounts::bind_inputs(env, step, run, mount_froms)?,
            network: match run.network {
                crate::dockerfile::Network::None => Network::None,
                crate::dockerfile::Network::Host => Network::Host,
                crate::dockerfile::Network::Default => env.network,
            },
        }),
        Expanded::Copy(c) | Expanded::Add(c) => {
            // BuildKit's checks, with its wording (`--checksum` is ADD's alone: the parser
            // refuses it on COPY).
            if c.checksum.is_some() {
                if c.sources.len() != 1 {
                    return Err(Error::Usage(format!(
                        "{}: checksum can't be specified for multiple sources",
                        env.location(step)
                    )));
                }
                if !super::add::is_url(&c.sources[0]) {
                    return Err(Error::Usage(format!(
                        "{}: checksum requires HTTP(S) or Git sources",
                        env.location(step)
                    )));
                }
            }
            let target = CopyTarget::new(c, step.state, exp.keyword())?;
            if let Some(FromSource { key, layers }) = from {
                return Ok(Prepared::CopyFrom {
                    target,
                    key,
                    layers,
                });
            }
            let is_add = matches!(exp, Expanded::Add(_));
            if is_add {
                if let Some((sources, hash)) = super::add::prepare_git(env, c, step)? {
                    return Ok(Prepared::Copy {
                        target,
                        sources,
                        hash,
                    });
                }
            }
            let sources = if is_add && c.sources.iter().any(|s| super::add::is_url(s)) {
                if !c.sources.iter().all(|s| super::add::is_url(s)) {
                    return Err(Error::Usage(format!(
                        "{}: ADD with both URLs and local sources: split it into two ADDs",
                        env.location(step)
                    )));
                }
                let dir = env.store.temp_dir("add-")?;
                let names = super::add::download(
                    &c.sources,
                    c.checksum.as_deref(),
                    dir.path(),
                    env.registry,
                )?;
                let s = context::resolve_in(dir.path(), &names)?;
                CopySources::Heredocs {
                    _dir: dir,
                    sources: s,
                }
            } else if !c.heredocs.is_empty() {
                let dir = env.store.temp_dir("heredoc-")?;
                let docs: Vec<(String, String)> =
                    c.heredocs.iter().map(|h| (h.name.clone(), h.body.clone())).collect();
                // Mode 0664 and owner 0:0 whatever the umask or user: the key must not
                // depend on the machine.
                let s = context::heredoc_sources(dir.path(), &docs)?;
                CopySources::Heredocs {
                    _dir: dir,
                    sources: s,
                }
            } else {
                let ctx = env.context.ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: {} needs a build context, and a Dockerfile read from stdin has none",
                        env.df_name,
                        exp.keyword()
                    ))
                })?;
                CopySources::Context(if c.parents {
                    ctx.resolve_parents(&c.sources)?
                } else {
                    ctx.resolve(&c.sources)?
                })
            };
            let hash = match &sources {
                CopySources::Context(s) => {
                    env.hash_context_sources(s, &target.dest, &target.options)?
                }
                _ => context::hash_sources(sources.sources(), &target.dest, &target.options)?,
            };
            Ok(Prepared::Copy {
                target,
                sources,
                hash,
            })
        }
        _ => Ok(Prepared::Plain),
    }
}

fn copy_options(c: &ExpandedCopy) -> Result<CopyOptions> {
    Ok(CopyOptions {
        chmod: c.chmod.clone(),
        exclude: c.exclude.clone(),
        ..CopyOptions::default()
    })
}

/// COPY's destination made absolute against WORKDIR (a trailing `/` kept: it means "into").
fn dest_path(dest: &str, workdir: Option<&str>) -> String {
    if dest.starts_with('/') {
        return dest.to_string();
    }
    let wd = workdir.unwrap_or("/");
    let joined = format!("{}/{}", wd.trim_end_matches('/'), dest);
    if dest == "." || dest == "./" {
        format!("{}/", wd.trim_end_matches('/'))
    } else {
        joined
    }
}

/// Runs a step that missed the cache; returns the new state and per-stage timings.
pub(super) fn execute(
    env: &StepEnv<'_>,
    facts: &mut StageFacts,
    step: &Step<'_>,
    prepared: Prepared,
) -> Result<(State, Vec<(String, f64)>)> {
    let mut next = step.state.clone();
    let history = dispatch::history(step.inst, dispatch::step_time(env.source_date_epoch));
    let mut timings = Vec::new();
    let layer = match (step.exp, prepared) {
        (Expanded::Run(run), Prepared::Run { network, binds }) => {
            run_step(env, step, run, network, &binds, &mut timings)?
        }
        (Expanded::Copy(c), prepared) => {
            copy_step(env, step.state, c, false, prepared, &mut timings)?
        }
        (Expanded::Add(c), prepared) => {
            copy_step(env, step.state, c, true, prepared, &mut timings)?
        }
        (Expanded::Workdir(_), _) => {
            // How WORKDIR changes the config is dispatch's rule; the history entry is
            // written below, with the layer of the directory it creates.
            let mut applied = next.config.clone();
            dispatch::apply(&mut applied, facts, step.exp, history.clone());
            next.config.config.working_dir = applied.config.working_dir;
            let dir = next.config.config.working_dir.clone().unwrap_or_default();
            workdir_step(env, step.state, &dir, &mut timings)?
        }
        (other, _) => {
            dispatch::apply(&mut next.config, facts, other, history);
            return Ok((next, timings));
        }
    };
    match layer {
        Some(l) => {
            next.config.push_step(history, Some(l.diff_id.clone()));
            next.layers.push(LayerDesc {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type,
                diff_id: l.diff_id,
            });
        }
        None => next.config.push_step(history, None),
    }
    Ok((next, timings))
}

/// The state `cairn key` assumes after a step it does not run: config changes applied,
/// RUN/COPY recorded without a layer (their keys do not depend on their results).
pub(super) fn simulate(
    state: &State,
    facts: &mut StageFacts,
    exp: &Expanded,
    inst: &Spanned<Instruction>,
) -> State {
    let mut next = state.clone();
    let history = dispatch::history(inst, dispatch::step_time(Some(0)));
    dispatch::apply(&mut next.config, facts, exp, history);
    next
}

/// A RUN step's temporary directory. Rootless, it holds files owned by subordinate ids that
/// this user cannot delete, so it is removed from inside a user namespace as its root.
struct RunDir<'a>(Option<tempfile::TempDir>, &'a Privilege);

impl RunDir<'_> {
    fn path(&self) -> &std::path::Path {
        self.0
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(std::path::Path::new("/nonexistent"))
    }
}

impl Drop for RunDir<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            if !self.1.is_root() {
                let _ = crate::userns::remove_as_root(self.1, &t.keep());
            }
        }
    }
}

/// Unpacks (once) every layer of a state; returns the directories, bottom first.
pub(super) fn lowers(env: &StepEnv<'_>, layers: &[LayerDesc]) -> Result<Vec<PathBuf>> {
    layers
        .iter()
        .map(|l| {
            Ok(crate::rootfs::ensure_unpacked(
                env.store,
                &l.digest,
                &l.diff_id,
                env.privilege,
                &mut env.warn(),
            )?)
        })
        .collect()
}

fn layer_options(env: &StepEnv<'_>, chown: Option<Chown>) -> Result<LayerOptions> {
    let (uid_maps, gid_maps) = env.privilege.id_maps();
    Ok(LayerOptions {
        compression: env.compression,
        source_date_epoch: env.source_date_epoch,
        uid_maps,
        gid_maps,
        chown,
    })
}

/// The script a shell-form RUN hands to the shell. A command that is only a heredoc
/// (`RUN <<EOF`) runs the heredoc's body; otherwise the heredocs follow the command line so
/// the shell itself feeds them, as BuildKit does. A lone heredoc whose body starts with
/// `#!` runs under that interpreter, as BuildKit runs it as a script file: the shell
/// hands the body on a file descriptor to the interpreter and its one optional argument,
/// as the kernel's shebang rule would, and nothing lands in the layer.
fn shell_script(cmd: &str, heredocs: &[Heredoc]) -> String {
    let trimmed = cmd.trim();
    if heredocs.len() == 1 && trimmed.starts_with("<<") && !trimmed.contains(char::is_whitespace) {
        let body = &heredocs[0].body;
        if let Some(line) = body.strip_prefix("#!") {
            let line = line.lines().next().unwrap_or("").trim();
            let (interp, arg) = match line.split_once([' ', '\t']) {
                Some((i, a)) => (i, Some(a.trim())),
                None => (line, None),
            };
            if !interp.is_empty() {
                return shebang_script(interp, arg.filter(|a| !a.is_empty()), body);
            }
        }
        return body.clone();
    }
    let mut s = cmd.to_string();
    for h in heredocs {
        s.push('\n');
        s.push_str(&h.body);
        if !h.body.ends_with('\n') && !h.body.is_empty() {
            s.push('\n');
        }
        s.push_str(&h.name);
    }
    s
}

/// A shell script that runs `body` under `interp [arg]` as a script file (`/dev/fd/3`),
/// feeding it through a quoted heredoc (no expansion) whose delimiter is not a line of it.
fn shebang_script(interp: &str, arg: Option<&str>, body: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut delim = "CAIRN_SHEBANG_EOF".to_string();
    while body.lines().any(|l| l == delim) {
        delim.push('_');
    }
    let mut s = format!("exec 3<<'{delim}'\n{body}");
    if !body.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&delim);
    s.push_str("\nexec ");
    s.push_str(&quote(interp));
    if let Some(a) = arg {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s.push_str(" /dev/fd/3\n");
    s
}

fn run_step(
    env: &StepEnv<'_>,
    step: &Step<'_>,
    run: &ExpandedRun,
    network: Network,
    binds: &[super::mounts::BindInput],
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<layer::Layer>> {
    let (state, cmd) = (step.state, &run.cmd);
    let t = Instant::now();
    let lowers = lowers(env, &state.layers)?;
    timings.push(("unpack".into(), progress::secs(t.elapsed())));
    let tmp = RunDir(Some(env.store.temp_dir("run-")?), env.privilege);
    // Held (locks, private cache copies) until the step is done; bound sources are staged
    // in the step's directory (removed as root when rootless, as the upper is).
    let mount_set = super::mounts::prepare(env, step, run, binds, tmp.path())?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    for d in [&upper, &work] {
        std::fs::create_dir(d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
    }
    let argv = match cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => dispatch::shell_argv(
            state.config.config.shell.as_deref(),
            shell_script(s, &run.heredocs),
        ),
    };
    let mut step_env = step.scope.run_env();
    step_env.extend(mount_set.env.iter().cloned());
    let spec = RunSpec {
        lowers,
        upper: upper.clone(),
        work,
        argv: argv.clone(),
        env: step_env,
        user: state.config.config.user.clone().unwrap_or_default(),
        workdir: state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into()),
        network,
        security: match run.security {
            crate::dockerfile::Security::Insecure => crate::sandbox::Security::Insecure,
            crate::dockerfile::Security::Sandbox => crate::sandbox::Security::Sandbox,
        },
        limits: env.limits.clone(),
        hostname: "cairn".into(),
        stdin: None,
        mounts: mount_set.mounts.clone(),
    };
    let t = Instant::now();
    let mut pending: Vec<u8> = Vec::new();
    let mut emit = |chunk: &[u8]| {
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            env.rep.emit(&Event::Output {
                step: step.no,
                line: &text,
            });
        }
    };
    let outcome = sandbox::run_outcome(&spec, env.privilege, &mut emit, &mut env.warn())?;
    let code = outcome.code;
    env.cancel.check()?;
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending).into_owned();
        env.rep.emit(&Event::Output {
            step: step.no,
            line: &text,
        });
    }
    timings.push(("run".into(), progress::secs(t.elapsed())));
    if code != 0 {
        return Err(Error::StepFailed {
            location: env.location(step),
            code,
            command: {
                let command = match cmd {
                    ShellOrExec::Shell(s) => s.clone(),
                    ShellOrExec::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                };
                match outcome.limit {
                    Some(why) => format!("{command} ({why})"),
                    None => command,
                }
            },
        });
    }
    super::mounts::remove_stubs(&upper, &spec.lowers, &spec.mounts);
    drop(mount_set);
    let t = Instant::now();
    let layer = reported_layer(env, &format!("of step {}", step.no), || {
        upper_layer(env, &upper)
    })?;
    timings.push(("layer".into(), progress::secs(t.elapsed())));
    if let Some(l) = &layer {
        adopt_as_lower(env, &l.diff_id, &upper);
    }
    Ok(layer)
}

/// The layer of a RUN step's upper directory. Rootless, the upper holds files of other
/// (subordinate) owners that this user may not read — `/etc/shadow` after a `useradd` — so
/// the tar is written inside a user namespace where they belong to its root.
fn upper_layer(env: &StepEnv<'_>, upper: &std::path::Path) -> Result<Option<layer::Layer>> {
    let opts = layer_options(env, None)?;
    Ok(layer::from_upper_as_owner(
        env.privilege,
        env.store,
        upper,
        &opts,
    )?)
}

/// Makes a finished step's upper directory the unpacked form of the layer it produced, so
/// the next step does not unpack the blob it was just written from. The upper is already
/// in the form lowers take (overlay whiteouts and opaque markers, owners as the sandbox
/// mapped them), as containerd's overlay snapshotter reuses committed snapshots. Best
/// effort: if it cannot be adopted, the blob is unpacked when a later step needs it.
fn adopt_as_lower(env: &StepEnv<'_>, diff_id: &Digest, upper: &std::path::Path) {
    let _ = env.store.pin([diff_id]);
    let dir = env.store.layer_dir(diff_id);
    if dir.is_dir() {
        return;
    }
    let Ok(_lock) = env.store.lock(&format!("unpack-{}", diff_id.hex())) else {
        return;
    };
    if dir.is_dir() {
        return;
    }
    if let Some(parent) = dir.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::rename(upper, &dir);
}

fn copy_step(
    env: &StepEnv<'_>,
    state: &State,
    c: &ExpandedCopy,
    is_add: bool,
    prepared: Prepared,
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<layer::Layer>> {
    let tmp = env.store.temp_dir("copy-")?;
    let root = tmp.path().join("root");
    std::fs::create_dir(&root)
        .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
    let t = Instant::now();
    let dest = match prepared {
        Prepared::Copy {
            target,
            sources: CopySources::Git(gits),
            ..
        } => {
            // Keyed on the commits: a cached ADD from git cost one ls-remote, no fetch.
            let (_checkout, plain) = super::add::checkout_git(env, &gits)?;
            context::stage(&plain, &target.dest, &target.options, &root)?;
            target.dest
        }
        Prepared::Copy {
            target,
            sources,
            hash,
        } => {
            let CopyTarget {
                dest,
                options: copts,
            } = target;
            let hash = &hash;
            // ADD extracts local tar archives instead of copying them; downloaded ones only
            // with `--unpack=true`, as BuildKit does.
            let downloaded =
                c.heredocs.is_empty() && c.sources.iter().all(|s| super::add::is_url(s));
            let extract = is_add
                && match c.unpack {
                    Some(true) => downloaded || matches!(sources, CopySources::Context(_)),
                    Some(false) => false,
                    None => matches!(sources, CopySources::Context(_)),
                };
            let (archives, plain): (Vec<_>, Vec<_>) = sources
                .sources()
                .iter()
                .cloned()
                .partition(|s| extract && !s.is_dir() && super::add::is_archive(&s.path()));
            if archives.is_empty() {
                // Refuses files that changed since they were hashed: a layer is never
                // stored under a key its content does not match.
                context::stage_checked(&plain, &dest, &copts, &root, hash)?;
            } else if !plain.is_empty() {
                context::stage(&plain, &dest, &copts, &root)?;
            }
            for src in archives {
                let target = root.join(dest.trim_start_matches('/'));
                super::add::extract(&src.path(), &target, env.privilege, &mut env.warn())?;
            }
            dest
        }
        Prepared::CopyFrom { target, layers, .. } => {
            let view = env.store.temp_dir("from-")?;
            let lowers = lowers(env, &layers)?;
            let patterns = super::merge::resolve_patterns(&lowers, &c.sources);
            super::merge::materialize(&lowers, &patterns, view.path())?;
            let from_root = context::SourceRoot::new(view.path());
            let sources = if c.parents {
                from_root.resolve_parents(&patterns)?
            } else {
                from_root.resolve(&patterns)?
            };
            context::stage(&sources, &target.dest, &target.options, &root)?;
            target.dest
        }
        _ => return Err(Error::Internal("COPY without prepared sources".into())),
    };
    let image = lowers(env, &state.layers)?;
    let mut existing = super::merge::inherit_existing_dirs(&image, &root, &dest, env.privilege)?;
    super::merge::follow_image_symlinks(&image, &root, env.privilege, &mut existing)?;
    let chown = match &c.chown {
        // As root the owner is set on what was staged, sparing the directories that
        // already existed (BuildKit leaves them) and reaching the parents this COPY
        // created; rootless, the layer writer gives it to everything under the destination.
        Some(spec) => {
            let (uid, gid) = resolve_owner(env, state, spec)?;
            if env.privilege.is_root() {
                super::merge::chown_created(&root, &existing, uid, gid)?;
                None
            } else {
                Some(Chown {
                    prefix: PathBuf::from(dest.trim_start_matches('/').trim_end_matches('/')),
                    uid,
                    gid,
                })
            }
        }
        None => None,
    };
    timings.push(("copy".into(), progress::secs(t.elapsed())));
    let t = Instant::now();
    let opts = layer_options(env, chown)?;
    let layer = reported_layer(env, &format!("for {dest}"), || {
        Ok(layer::from_upper(env.store, &root, &opts)?)
    })?;
    timings.push(("layer".into(), progress::secs(t.elapsed())));
    // As root, with no owner left to the layer writer and no SOURCE_DATE_EPOCH clamp, the
    // staged root is what the layer's tar unpacks to (the store's check compares no
    // mtimes): it becomes the layer's unpacked form, so a following RUN does not unpack
    // the blob just written, and the staged files are not deleted one by one.
    if let Some(l) = &layer {
        if env.privilege.is_root() && opts.chown.is_none() && opts.source_date_epoch.is_none() {
            adopt_as_lower(env, &l.diff_id, &root);
        }
    }
    Ok(layer)
}

/// WORKDIR's directory, as BuildKit's `dispatchWorkdir` makes it: `mkdir -p` with mode
/// 0755, the directories it creates owned by the USER in force (resolved in the image),
/// the image's symlinks followed inside its root. A directory that exists (or `/`) is left
/// alone and the step adds no layer; a file on the way is an error, as mkdir's.
fn workdir_step(
    env: &StepEnv<'_>,
    state: &State,
    dir: &str,
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<layer::Layer>> {
    let t = Instant::now();
    let image = lowers(env, &state.layers)?;
    let Some(first_missing) = super::merge::first_missing_dir(&image, dir)? else {
        return Ok(None);
    };
    let tmp = env.store.temp_dir("workdir-")?;
    let root = tmp.path().join("root");
    let rel = dir.trim_start_matches('/');
    let mut at = root.clone();
    for comp in std::path::Path::new(rel).components() {
        at.push(comp);
        if std::fs::symlink_metadata(&at).is_err() {
            std::fs::create_dir_all(&at)
                .and_then(|()| {
                    std::fs::set_permissions(
                        &at,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )
                })
                .map_err(|e| Error::io(format!("WORKDIR: cannot create {}", at.display()), e))?;
        }
    }
    let mut existing = super::merge::inherit_existing_dirs(&image, &root, dir, env.privilege)?;
    super::merge::follow_image_symlinks(&image, &root, env.privilege, &mut existing)?;
    let user = state.config.config.user.clone().unwrap_or_default();
    let chown = if user.is_empty() {
        None
    } else {
        let (uid, gid, _) = sandbox::resolve_user(&image, &user)?;
        if env.privilege.is_root() {
            super::merge::chown_created(&root, &existing, uid, gid)?;
            None
        } else {
            Some(Chown {
                prefix: first_missing,
                uid,
                gid,
            })
        }
    };
    timings.push(("mkdir".into(), progress::secs(t.elapsed())));
    let t = Instant::now();
    let opts = layer_options(env, chown)?;
    let layer = reported_layer(env, &format!("for {dir}"), || {
        Ok(layer::from_upper(env.store, &root, &opts)?)
    })?;
    timings.push(("layer".into(), progress::secs(t.elapsed())));
    Ok(layer)
}

/// Writes a step's layer as a `layer` transfer of the event sink; its size (the stored
/// blob's) is known when it is done.
fn reported_layer(
    env: &StepEnv<'_>,
    what: &str,
    write: impl FnOnce() -> Result<Option<layer::Layer>>,
) -> Result<Option<layer::Layer>> {
    let t = env
        .rep
        .transfer(crate::events::TransferKind::Layer, what, None);
    let layer = write()?;
    if let Some(l) = &layer {
        t.finish_at(l.size);
    }
    Ok(layer)
}

/// `--chown=user[:group]` as numeric ids: numbers as they are, names from the image.
fn resolve_owner(env: &StepEnv<'_>, state: &State, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if let (Ok(uid), Some(Ok(gid))) = (u.parse::<u32>(), g.map(str::parse::<u32>)) {
        return Ok((uid, gid));
    }
    if let (Ok(uid), None) = (u.parse::<u32>(), g) {
        return Ok((uid, uid));
    }
    let lowers = lowers(env, &state.layers)?;
    let (uid, gid, _) = sandbox::resolve_user(&lowers, spec)?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(dest: &str, chmod: Option<&str>) -> ExpandedCopy {
        ExpandedCopy {
            sources: vec!["a".into()],
            dest: dest.into(),
            from: None,
            chown: None,
            chmod: chmod.map(|m| crate::dockerfile::Chmod::parse(m).unwrap()),
            link: false,
            parents: false,
            exclude: vec!["*.tmp".into()],
            checksum: None,
            keep_git_dir: None,
            unpack: None,
            heredocs: vec![],
        }
    }

    /// The destination goes into the key (through the inputs hash): pinned forms.
    #[test]
    fn destinations_are_made_absolute_against_workdir() {
        let rows = [
            ("/abs", Some("/w"), "/abs"),
            ("/abs/", None, "/abs/"),
            ("rel", None, "/rel"),
            ("rel", Some("/w"), "/w/rel"),
            ("rel/", Some("/w/"), "/w/rel/"),
            (".", Some("/w"), "/w/"),
            ("./", Some("/w"), "/w/"),
            (".", None, "/"),
            ("./x", Some("/w"), "/w/./x"),
        ];
        for (dest, wd, want) in rows {
            assert_eq!(dest_path(dest, wd), want, "{dest} in {wd:?}");
        }
    }

    #[test]
    fn copy_target_is_worked_out_once_from_the_instruction_and_workdir() {
        let mut state = State {
            config: crate::image::ImageConfig::default(),
            layers: vec![],
        };
        state.config.config.working_dir = Some("/srv".into());
        let t = CopyTarget::new(&copy("app/", Some("750")), &state, "COPY").unwrap();
        assert_eq!(t.dest, "/srv/app/");
        assert_eq!(
            t.options.chmod,
            Some(crate::dockerfile::Chmod::octal(0o750))
        );
        assert_eq!(t.options.exclude, vec!["*.tmp".to_string()]);
        assert!(CopyTarget::new(&copy("x", None), &state, "COPY")
            .unwrap()
            .options
            .chmod
            .is_none());
        // A bad --chmod never gets here: the plan refuses it with its Dockerfile line.
    }

    fn heredoc(name: &str, body: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            body: body.into(),
            expand: true,
            chomp: false,
            fd: None,
        }
    }

    #[test]
    fn a_run_heredoc_is_fed_to_the_shell_as_buildkit_does() {
        // Only a heredoc: its body is the script.
        assert_eq!(
            shell_script("<<EOF", &[heredoc("EOF", "echo a\necho b\n")]),
            "echo a\necho b\n"
        );
        // A command reading heredocs: they follow it, each closed by its delimiter.
        assert_eq!(
            shell_script(
                "cat <<A >/a && cat <<B",
                &[heredoc("A", "one\n"), heredoc("B", "two")]
            ),
            "cat <<A >/a && cat <<B\none\nA\ntwo\nB"
        );
        assert_eq!(shell_script("echo hi", &[]), "echo hi");
        // A shebang picks the interpreter; its body is never expanded by the shell.
        assert_eq!(
            shell_script("<<EOF", &[heredoc("EOF", "#!/bin/awk -f\nBEGIN { print $1 }\n")]),
            "exec 3<<'CAIRN_SHEBANG_EOF'\n#!/bin/awk -f\nBEGIN { print $1 }\nCAIRN_SHEBANG_EOF\nexec '/bin/awk' '-f' /dev/fd/3\n"
        );
    }

    #[test]
    fn an_onbuild_trigger_parses_as_an_instruction_of_the_child() {
        let t = parse_trigger("RUN make install", 3).unwrap();
        assert!(matches!(t.node, Instruction::Run(_)));
        assert_eq!(t.original, "ONBUILD RUN make install");
        assert_eq!(
            dispatch::created_by(&t),
            "ONBUILD RUN make install",
            "the history shows where the step came from"
        );
        assert!(parse_trigger("NOT-AN-INSTRUCTION x", 3).is_err());
    }

    /// A step environment built from parts, as any test can: no builder needed.
    struct Fixture {
        store: crate::store::Store,
        _root: tempfile::TempDir,
        ctx: tempfile::TempDir,
        rep: super::super::Reporter,
        cancel: super::super::Cancel,
        registry: crate::registry::RegistryOptions,
        mounts: crate::mounts::MountOptions,
        stat_cache: std::sync::Mutex<Option<crate::context::StatCache>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let root = tempfile::tempdir().unwrap();
            let ctx = tempfile::tempdir().unwrap();
            std::fs::write(ctx.path().join("a.txt"), "a").unwrap();
            Fixture {
                store: crate::store::Store::open(&root.path().join("store")).unwrap(),
                _root: root,
                ctx,
                rep: super::super::Reporter::new(super::super::Mode::Quiet, false),
                cancel: super::super::Cancel::new(),
                registry: Default::default(),
                mounts: Default::default(),
                stat_cache: Default::default(),
            }
        }

        fn env<'a>(&'a self, context: Option<&'a crate::context::Context>) -> StepEnv<'a> {
            StepEnv {
                store: &self.store,
                rep: &self.rep,
                cancel: &self.cancel,
                privilege: &Privilege::Root,
                context,
                df_name: "Dockerfile",
                network: Network::Host,
                limits: {
                    static NONE: std::sync::OnceLock<crate::sandbox::Limits> =
                        std::sync::OnceLock::new();
                    NONE.get_or_init(Default::default)
                },
                compression: crate::layer::Compression::None,
                source_date_epoch: Some(0),
                registry: &self.registry,
                mounts: &self.mounts,
                stat_cache: &self.stat_cache,
            }
        }

        /// Prepares every instruction of a one-stage Dockerfile (`FROM scratch` first).
        fn prepare_all(&self, df: &str, with_context: bool) -> Vec<Result<Prepared>> {
            let parsed = crate::dockerfile::parse(df, "Dockerfile").unwrap();
            let plan = crate::plan::plan(
                &parsed,
                &crate::plan::PlanOptions {
                    build_args: Default::default(),
                    target: None,
                    target_platform: crate::Platform::new("linux", "amd64", None),
                    build_platform: crate::Platform::new("linux", "amd64", None),
                },
            )
            .unwrap();
            let context = with_context.then(|| {
                let ignore = crate::dockerfile::ignore::IgnoreMatcher::load(
                    self.ctx.path(),
                    &self.ctx.path().join("Dockerfile"),
                    None,
                )
                .unwrap();
                crate::context::Context::open(self.ctx.path(), ignore).unwrap()
            });
            let stage = &plan.stages[0];
            let state = State {
                config: crate::image::ImageConfig::default(),
                layers: vec![],
            };
            let mut scope = crate::plan::Scope::new(&plan, stage, &[]);
            let env = self.env(context.as_ref());
            stage
                .instructions
                .iter()
                .enumerate()
                .map(|(i, inst)| {
                    let exp = scope.apply(inst).unwrap();
                    let step = Step {
                        no: i + 1,
                        inst,
                        exp: &exp,
                        state: &state,
                        scope: &scope,
                    };
                    prepare(&env, &step, None, Vec::new())
                })
                .collect()
        }
    }

    #[test]
    fn prepare_reads_what_it_needs_from_the_step_environment() {
        let f = Fixture::new();
        let got = f.prepare_all(
            "FROM scratch\nRUN true\nRUN --network=none true\nCOPY a.txt /a\nLABEL x=y\n",
            true,
        );
        // The default network is the environment's; a flag overrides it.
        assert!(matches!(
            got[0],
            Ok(Prepared::Run {
                network: Network::Host,
                ..
            })
        ));
        assert!(matches!(
            got[1],
            Ok(Prepared::Run {
                network: Network::None,
                ..
            })
        ));
        match &got[2] {
            Ok(Prepared::Copy { target, hash, .. }) => {
                assert_eq!(target.dest, "/a");
                assert!(
                    hash.files.keys().any(|k| k.contains("a.txt")),
                    "{:?}",
                    hash.files
                );
            }
            _ => panic!("COPY prepared as something else"),
        }
        assert!(matches!(got[3], Ok(Prepared::Plain)));
    }

    #[test]
    fn prepare_errors_name_the_dockerfile_line() {
        let f = Fixture::new();
        let got = f.prepare_all(
            "FROM scratch\nRUN --mount=type=bind,source=nope,target=/c true\n",
            true,
        );
        let e = got[0].as_ref().err().unwrap().to_string();
        assert!(e.contains("nope"), "{e}");
        let got = f.prepare_all("FROM scratch\nCOPY a.txt /\n", false);
        let e = got[0].as_ref().err().unwrap().to_string();
        assert!(e.contains("needs a build context"), "{e}");
        let got = f.prepare_all("FROM scratch\nADD a.txt http://h/x /d/\n", true);
        let e = got[0].as_ref().err().unwrap().to_string();
        assert!(e.starts_with("Dockerfile:2: ADD with both URLs"), "{e}");
    }

    #[test]
    fn key_facts_of_prepared_steps() {
        let run = Prepared::Run {
            network: Network::None,
            binds: Vec::new(),
        };
        assert_eq!(run.network_name(Network::Host), "none");
        assert_eq!(Prepared::Plain.network_name(Network::Default), "host");
        assert_eq!(Prepared::Plain.network_name(Network::Host), "host-shared");
        assert!(Prepared::Plain.inputs_digest().is_none());
        assert!(Prepared::Plain.take_input_files().is_empty());
    }
}
