//! One function per kind of step: [`prepare`] gathers a step's inputs (COPY sources and their
//! Merkle hash) so the key can be computed before anything runs, [`execute`] runs a miss, and
//! [`apply_meta`] applies the config-only instructions (also used by `cairn key`).

use super::{progress, step_time, Builder, Event, StageResult, State};
use crate::cache::CacheKey;
use crate::context::{self, CopyOptions, InputsHash, Source};
use crate::digest::Digest;
use crate::dockerfile::{Heredoc, Instruction, ShellOrExec, Spanned};
use crate::error::{Error, Result};
use crate::image::{History, LayerDesc};
use crate::layer::{self, Chown, LayerOptions};
use crate::plan::ExpandedCopy;
use crate::plan::{CopySource, Expanded, Scope};
use crate::sandbox::{self, Network, RunSpec};
use crate::userns::Privilege;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Per-stage facts that outlive one step.
pub(super) struct StageCtx {
    /// Whether this stage set CMD (ENTRYPOINT clears an inherited CMD otherwise).
    cmd_set: bool,
}

impl StageCtx {
    pub(super) fn new(_label: &str) -> StageCtx {
        StageCtx { cmd_set: false }
    }
}

/// What a step needs beyond its instruction, gathered before the key is computed.
pub(super) enum Prepared {
    Plain,
    Run {
        network: Network,
    },
    Copy {
        sources: CopySources,
        hash: InputsHash,
    },
    CopyFrom {
        key: CacheKey,
        layers: Vec<LayerDesc>,
    },
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
            Prepared::Run { network } => network_str(*network),
            _ => network_str(default),
        }
    }

    pub(super) fn inputs_digest(&self) -> Option<Digest> {
        match self {
            Prepared::Copy { hash, .. } => Some(hash.digest.clone()),
            Prepared::CopyFrom { key, .. } => Some(key.0.clone()),
            _ => None,
        }
    }

    pub(super) fn input_files(&self) -> BTreeMap<String, Digest> {
        match self {
            Prepared::Copy { hash, .. } => hash.files.clone(),
            _ => BTreeMap::new(),
        }
    }
}

fn network_str(n: Network) -> &'static str {
    match n {
        Network::None => "none",
        Network::Host => "host",
    }
}

/// Parses a base image's ONBUILD trigger into an instruction of this stage.
pub(super) fn parse_trigger(text: &str) -> Result<Spanned<Instruction>> {
    let node = crate::dockerfile::parse_instruction_line(text)?;
    Ok(Spanned {
        node,
        span: crate::dockerfile::Span {
            line: 0,
            col: 1,
            end_line: 0,
        },
        original: format!("ONBUILD {text}"),
    })
}

/// Gathers a step's inputs.
pub(super) fn prepare(
    b: &Builder<'_>,
    _ctx: &mut StageCtx,
    state: &State,
    _scope: &Scope,
    exp: &Expanded,
    _inst: &Spanned<Instruction>,
    done: &[StageResult],
) -> Result<Prepared> {
    match exp {
        Expanded::Run(run) if !run.mounts.is_empty() => Err(Error::Usage(format!(
            "{}:{}: RUN --mount=type={} is not supported by cairn yet (remove the flag, or COPY what the step needs)",
            b.df_name,
            _inst.span.line,
            run.mounts[0].kind.as_str()
        ))),
        Expanded::Run(run) if run.security == crate::dockerfile::Security::Insecure => {
            Err(Error::Usage(format!(
                "{}:{}: RUN --security=insecure is not supported: cairn runs every step with Docker's default capabilities",
                b.df_name, _inst.span.line
            )))
        }
        Expanded::Run(run) => Ok(Prepared::Run {
            network: match run.network {
                crate::dockerfile::Network::None => Network::None,
                crate::dockerfile::Network::Host => Network::Host,
                crate::dockerfile::Network::Default => b.opts.network,
            },
        }),
        Expanded::Copy(c) | Expanded::Add(c) => {
            match &c.from {
                Some(CopySource::Stage(i)) => {
                    let src = &done[*i];
                    return Ok(Prepared::CopyFrom {
                        key: src.key.clone(),
                        layers: src.state.layers.clone(),
                    });
                }
                Some(CopySource::Image(r)) => {
                    let img = b.pull_image(r, None)?;
                    return Ok(Prepared::CopyFrom {
                        key: img.key,
                        layers: img.state.layers,
                    });
                }
                None => {}
            }
            let copts = copy_options(c)?;
            let dest = dest_path(&c.dest, state);
            let is_add = matches!(exp, Expanded::Add(_));
            if is_add {
                if let Some(git) = super::add::prepare_git(b, c, _inst.span.line)? {
                    return Ok(git);
                }
            }
            let sources = if is_add && c.sources.iter().any(|s| super::add::is_url(s)) {
                if !c.sources.iter().all(|s| super::add::is_url(s)) {
                    return Err(Error::Usage(format!(
                        "{}:{}: ADD with both URLs and local sources: split it into two ADDs",
                        b.df_name, _inst.span.line
                    )));
                }
                let dir = b.store.temp_dir("add-")?;
                let names = super::add::download(&c.sources, c.checksum.as_deref(), dir.path())?;
                let s = context::resolve_in(dir.path(), &names)?;
                CopySources::Heredocs {
                    _dir: dir,
                    sources: s,
                }
            } else if !c.heredocs.is_empty() {
                let dir = b.store.temp_dir("heredoc-")?;
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
                let ctx = b.context.as_ref().ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: {} needs a build context, and a Dockerfile read from stdin has none",
                        b.df_name,
                        exp.keyword()
                    ))
                })?;
                CopySources::Context(ctx.resolve(&c.sources)?)
            };
            let hash = context::hash_sources(sources.sources(), &dest, &copts)?;
            Ok(Prepared::Copy { sources, hash })
        }
        _ => Ok(Prepared::Plain),
    }
}

fn copy_options(c: &ExpandedCopy) -> Result<CopyOptions> {
    let chmod = match &c.chmod {
        Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
            Error::Usage(format!("--chmod={m}: expected an octal mode such as 755"))
        })?),
        None => None,
    };
    Ok(CopyOptions {
        chmod,
        exclude: c.exclude.clone(),
        ..CopyOptions::default()
    })
}

/// COPY's destination made absolute against WORKDIR (a trailing `/` kept: it means "into").
fn dest_path(dest: &str, state: &State) -> String {
    if dest.starts_with('/') {
        return dest.to_string();
    }
    let wd = state
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let joined = format!("{}/{}", wd.trim_end_matches('/'), dest);
    if dest == "." || dest == "./" {
        format!("{}/", wd.trim_end_matches('/'))
    } else {
        joined
    }
}

/// Runs a step that missed the cache; returns the new state and per-stage timings.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    b: &Builder<'_>,
    ctx: &mut StageCtx,
    step: usize,
    state: &State,
    scope: &Scope,
    exp: &Expanded,
    inst: &Spanned<Instruction>,
    prepared: Prepared,
    _done: &[StageResult],
) -> Result<(State, Vec<(String, f64)>)> {
    let mut next = state.clone();
    let created_by = created_by(inst);
    let mut timings = Vec::new();
    let layer = match (exp, prepared) {
        (Expanded::Run(run), Prepared::Run { network }) => run_step(
            b,
            step,
            state,
            scope,
            &run.cmd,
            &run.heredocs,
            network,
            inst,
            &mut timings,
        )?,
        (Expanded::Copy(c), prepared) => copy_step(b, state, c, false, prepared, &mut timings)?,
        (Expanded::Add(c), prepared) => copy_step(b, state, c, true, prepared, &mut timings)?,
        (other, _) => {
            apply_meta(&mut next, ctx, other, inst, scope, b.opts.source_date_epoch);
            return Ok((next, timings));
        }
    };
    let history = History {
        created: Some(step_time(b.opts.source_date_epoch)),
        created_by: Some(created_by),
        comment: Some("cairn".into()),
        ..History::default()
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
    ctx: &mut StageCtx,
    exp: &Expanded,
    inst: &Spanned<Instruction>,
    scope: &Scope,
) -> State {
    let mut next = state.clone();
    apply_meta(&mut next, ctx, exp, inst, scope, Some(0));
    next
}

/// The history text of a step: its source text on one line, as `docker history` shows it.
fn created_by(inst: &Spanned<Instruction>) -> String {
    inst.original
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
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
fn lowers(b: &Builder<'_>, layers: &[LayerDesc]) -> Result<Vec<PathBuf>> {
    layers
        .iter()
        .map(|l| {
            Ok(crate::rootfs::ensure_unpacked(
                b.store,
                &l.digest,
                &l.diff_id,
                &b.opts.privilege,
                &mut warn_to(b),
            )?)
        })
        .collect()
}

/// Passes a warning of the sandbox or the unpacker on to the reporter.
fn warn_to<'a>(b: &'a Builder<'_>) -> impl FnMut(&str) + 'a {
    |w: &str| b.rep.info(&format!("warning: {w}"))
}

fn layer_options(b: &Builder<'_>, chown: Option<Chown>) -> Result<LayerOptions> {
    let (uid_maps, gid_maps) = b.opts.privilege.id_maps();
    Ok(LayerOptions {
        compression: b.opts.compression,
        source_date_epoch: b.opts.source_date_epoch,
        uid_maps,
        gid_maps,
        chown,
    })
}

/// The script a shell-form RUN hands to the shell. A command that is only a heredoc
/// (`RUN <<EOF`) runs the heredoc's body; otherwise the heredocs follow the command line so
/// the shell itself feeds them, as BuildKit does.
fn shell_script(cmd: &str, heredocs: &[Heredoc]) -> String {
    let trimmed = cmd.trim();
    if heredocs.len() == 1 && trimmed.starts_with("<<") && !trimmed.contains(char::is_whitespace) {
        return heredocs[0].body.clone();
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

#[allow(clippy::too_many_arguments)]
fn run_step(
    b: &Builder<'_>,
    step: usize,
    state: &State,
    scope: &Scope,
    cmd: &ShellOrExec,
    heredocs: &[Heredoc],
    network: Network,
    inst: &Spanned<Instruction>,
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<layer::Layer>> {
    let t = Instant::now();
    let lowers = lowers(b, &state.layers)?;
    timings.push(("unpack".into(), progress::secs(t.elapsed())));
    let tmp = RunDir(Some(b.store.temp_dir("run-")?), &b.opts.privilege);
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    for d in [&upper, &work] {
        std::fs::create_dir(d)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", d.display())))?;
    }
    let argv = match cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut argv = state
                .config
                .config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            argv.push(shell_script(s, heredocs));
            argv
        }
    };
    let spec = RunSpec {
        lowers,
        upper: upper.clone(),
        work,
        argv: argv.clone(),
        env: scope.run_env(),
        user: state.config.config.user.clone().unwrap_or_default(),
        workdir: state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into()),
        network,
        hostname: "cairn".into(),
        stdin: None,
    };
    let t = Instant::now();
    let mut pending: Vec<u8> = Vec::new();
    let mut emit = |chunk: &[u8]| {
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            b.rep.emit(&Event::Output { step, line: &text });
        }
    };
    let code = sandbox::run(&spec, &b.opts.privilege, &mut emit, &mut warn_to(b))?;
    super::check_interrupted()?;
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending).into_owned();
        b.rep.emit(&Event::Output { step, line: &text });
    }
    timings.push(("run".into(), progress::secs(t.elapsed())));
    if code != 0 {
        return Err(Error::StepFailed {
            location: format!("{}:{}", b.df_name, inst.span.line),
            code,
            command: match cmd {
                ShellOrExec::Shell(s) => s.clone(),
                ShellOrExec::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
            },
        });
    }
    let t = Instant::now();
    let layer = upper_layer(b, &upper)?;
    timings.push(("layer".into(), progress::secs(t.elapsed())));
    if let Some(l) = &layer {
        adopt_as_lower(b, &l.diff_id, &upper);
    }
    Ok(layer)
}

/// The layer of a RUN step's upper directory. Rootless, the upper holds files of other
/// (subordinate) owners that this user may not read — `/etc/shadow` after a `useradd` — so
/// the tar is written inside a user namespace where they belong to its root.
fn upper_layer(b: &Builder<'_>, upper: &std::path::Path) -> Result<Option<layer::Layer>> {
    let opts = layer_options(b, None)?;
    Ok(layer::from_upper_as_owner(
        &b.opts.privilege,
        b.store,
        upper,
        &opts,
    )?)
}

/// Makes a finished step's upper directory the unpacked form of the layer it produced, so
/// the next step does not unpack the blob it was just written from. The upper is already
/// in the form lowers take (overlay whiteouts and opaque markers, owners as the sandbox
/// mapped them), as containerd's overlay snapshotter reuses committed snapshots. Best
/// effort: if it cannot be adopted, the blob is unpacked when a later step needs it.
fn adopt_as_lower(b: &Builder<'_>, diff_id: &Digest, upper: &std::path::Path) {
    let dir = b.store.layer_dir(diff_id);
    if dir.is_dir() {
        return;
    }
    let Ok(_lock) = b.store.lock(&format!("unpack-{}", diff_id.hex())) else {
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
    b: &Builder<'_>,
    state: &State,
    c: &ExpandedCopy,
    is_add: bool,
    prepared: Prepared,
    timings: &mut Vec<(String, f64)>,
) -> Result<Option<layer::Layer>> {
    let copts = copy_options(c)?;
    let dest = dest_path(&c.dest, state);
    let tmp = b.store.temp_dir("copy-")?;
    let root = tmp.path().join("root");
    std::fs::create_dir(&root)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", root.display())))?;
    let t = Instant::now();
    match prepared {
        Prepared::Copy {
            sources: CopySources::Git(gits),
            ..
        } => {
            // Keyed on the commits: a cached ADD from git cost one ls-remote, no fetch.
            let (_checkout, plain) = super::add::checkout_git(b, &gits)?;
            context::stage(&plain, &dest, &copts, &root)?;
        }
        Prepared::Copy { sources, hash } => {
            let hash = &hash;
            // ADD extracts local tar archives (not downloaded files) instead of copying them.
            let extract =
                is_add && c.unpack != Some(false) && matches!(sources, CopySources::Context(_));
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
                super::add::extract(&src.path(), &target, &b.opts.privilege, &mut warn_to(b))?;
            }
        }
        Prepared::CopyFrom { layers, .. } => {
            let view = b.store.temp_dir("from-")?;
            let lowers = lowers(b, &layers)?;
            super::merge::materialize(&lowers, &c.sources, view.path())?;
            let sources = context::resolve_in(view.path(), &c.sources)?;
            context::stage(&sources, &dest, &copts, &root)?;
        }
        _ => return Err(Error::Internal("COPY without prepared sources".into())),
    }
    super::merge::inherit_existing_dirs(
        &lowers(b, &state.layers)?,
        &root,
        &dest,
        &b.opts.privilege,
    )?;
    timings.push(("copy".into(), progress::secs(t.elapsed())));
    let chown = match &c.chown {
        Some(spec) => {
            let (uid, gid) = resolve_owner(b, state, spec)?;
            Some(Chown {
                prefix: PathBuf::from(dest.trim_start_matches('/').trim_end_matches('/')),
                uid,
                gid,
            })
        }
        None => None,
    };
    let t = Instant::now();
    let layer = layer::from_upper(b.store, &root, &layer_options(b, chown)?)?;
    timings.push(("layer".into(), progress::secs(t.elapsed())));
    Ok(layer)
}

/// `--chown=user[:group]` as numeric ids: numbers as they are, names from the image.
fn resolve_owner(b: &Builder<'_>, state: &State, spec: &str) -> Result<(u32, u32)> {
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
    let lowers = lowers(b, &state.layers)?;
    let (uid, gid, _) = sandbox::resolve_user(&lowers, spec)?;
    Ok((uid, gid))
}

/// Applies a config-only instruction (ENV, LABEL, USER, WORKDIR, CMD, ...).
pub(super) fn apply_meta(
    next: &mut State,
    ctx: &mut StageCtx,
    exp: &Expanded,
    inst: &Spanned<Instruction>,
    scope: &Scope,
    sde: Option<i64>,
) {
    let cfg = &mut next.config.config;
    let shell_form = |cfg: &crate::image::ContainerConfig, c: &ShellOrExec| match c {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut v = cfg
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(s.clone());
            v
        }
    };
    match exp {
        Expanded::Env(_) => cfg.env = scope.config_env(),
        Expanded::Label(kvs) => {
            for (k, v) in kvs {
                cfg.labels.insert(k.clone(), v.clone());
            }
        }
        Expanded::User(u) => cfg.user = Some(u.clone()).filter(|u| !u.is_empty()),
        Expanded::Workdir(w) => {
            let base = cfg.working_dir.clone().unwrap_or_else(|| "/".into());
            let p = if w.starts_with('/') {
                w.clone()
            } else {
                format!("{}/{}", base.trim_end_matches('/'), w)
            };
            cfg.working_dir = Some(clean_path(&p));
        }
        Expanded::Cmd(c) => {
            cfg.cmd = Some(shell_form(cfg, c));
            ctx.cmd_set = true;
        }
        Expanded::Entrypoint(c) => {
            cfg.entrypoint = Some(shell_form(cfg, c));
            if !ctx.cmd_set {
                cfg.cmd = None;
            }
        }
        Expanded::Expose(ports) => {
            for p in ports {
                let p = if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                };
                cfg.exposed_ports.insert(p, Default::default());
            }
        }
        Expanded::Volume(vs) => {
            for v in vs {
                cfg.volumes.insert(v.clone(), Default::default());
            }
        }
        Expanded::Shell(s) => cfg.shell = Some(s.clone()),
        Expanded::StopSignal(s) => cfg.stop_signal = Some(s.clone()),
        Expanded::Healthcheck(h) => cfg.healthcheck = Some(healthcheck(h)),
        Expanded::Onbuild(t) => cfg.on_build.push(t.clone()),
        Expanded::Maintainer(m) => next.config.author = Some(m.clone()),
        _ => {}
    }
    if matches!(exp, Expanded::Arg(_)) {
        return; // ARG changes the scope, not the image, and leaves no history (as BuildKit)
    }
    let created_by = created_by(inst);
    next.config.push_step(
        History {
            created: Some(step_time(sde)),
            created_by: Some(created_by),
            comment: Some("cairn".into()),
            ..History::default()
        },
        None,
    );
}

fn healthcheck(h: &crate::dockerfile::Healthcheck) -> crate::image::Healthcheck {
    use crate::dockerfile::Healthcheck as H;
    let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64);
    match h {
        H::None => crate::image::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        H::Cmd {
            cmd,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
            ..
        } => crate::image::Healthcheck {
            test: match cmd {
                ShellOrExec::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                ShellOrExec::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
            interval: ns(interval),
            timeout: ns(timeout),
            start_period: ns(start_period),
            start_interval: ns(start_interval),
            retries: retries.map(i64::from),
        },
    }
}

/// Lexically cleans an absolute path (`/a/./b/../c` → `/a/c`), as Go's path.Clean.
pub(super) fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}
