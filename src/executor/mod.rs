//! [`build`]: the executor, the only place that knows the stage order. It walks the plan,
//! computes each step's cache key from its inputs alone, restores hits from the store and
//! runs misses (pull, sandbox, layer), then writes the final config and manifest.
//!
//! Every step — metadata ones too — gets a cache entry pointing at the [`State`] it produced,
//! so a fully cached build reproduces the same config bytes and thus the same image ID.
//!
//! Independent stages run at the same time (`schedule.rs`): each stage has a thread, steps
//! are numbered in the order they start (as BuildKit numbers its vertices), and what the
//! build returns — step reports, the recorded key inputs — is gathered in plan order, so
//! it is the same however the stages interleaved.

mod add;
mod cancel;
mod dispatch;
mod env;
pub mod frontend;
mod merge;
mod mounts;
pub mod progress;
mod schedule;
mod state;
mod steps;

pub use cancel::Cancel;
pub use progress::{Event, Mode, Reporter};
pub use schedule::{default_jobs, JOBS_ENV};
pub use state::State;

use crate::cache::{self, CacheKey, KeyInputs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::export::BuiltImage;
use crate::image::{self, ImageConfig};
use crate::layer::Compression;
use crate::plan::{self, Base, Plan};
use crate::registry::{self, PullPolicy, Reference, RegistryOptions};
use crate::sandbox::Network;
use crate::store::{CacheEntry, Store};
use crate::Platform;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a build needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The context directory; `None` when the Dockerfile came from stdin.
    pub context: Option<PathBuf>,
    /// The Dockerfile's path (named in messages and `--explain` records).
    pub dockerfile_path: PathBuf,
    pub dockerfile_text: String,
    pub ignore_file: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: PullPolicy,
    pub network: Network,
    /// Resource limits, `/dev/shm` size and rlimits of every RUN (never part of a key).
    pub limits: crate::sandbox::Limits,
    pub compression: Compression,
    pub source_date_epoch: Option<i64>,
    pub registry: RegistryOptions,
    /// Registry mirrors by registry host (`docker.io` → `["mirror:5000"]`), tried in order.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// A cache shared beyond this store (`--cache-from`), asked after a local miss.
    pub remote_cache: Option<std::sync::Arc<dyn RemoteCache>>,
    /// Root or rootless with its id maps, decided once at start-up.
    pub privilege: crate::userns::Privilege,
    /// `--secret`, `--ssh` and `--allow`.
    pub mounts: crate::mounts::MountOptions,
    /// How many steps may work at once (independent stages run in parallel): 0 for
    /// [`default_jobs`], 1 for one stage after the other. Never part of a key.
    pub jobs: usize,
    /// Told the final stage's base image as soon as it is pulled (the CLI starts loading it
    /// into Docker while the steps run). Never part of a key.
    pub final_base: Option<Arc<dyn FinalBase>>,
}

/// A hook for the final stage's base image, pulled from a registry and with every blob in
/// the store, called at the stage's first step that is not a cache hit (never for a build
/// whose steps all hit, for `FROM scratch` or for a stage as base).
pub trait FinalBase: Send + Sync {
    fn pulled(&self, store: &Store, base: &BuiltImage);
}

impl std::fmt::Debug for dyn FinalBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinalBase")
    }
}

/// The executor's one hook into a cache shared between machines (`crate::remote_cache`):
/// a lookup after a local miss, and a request to make layers local before a step or the
/// output reads them (a remote hit brings only the step's small state blob, so layers move
/// only when needed).
pub trait RemoteCache: Send + Sync {
    /// The state blob for `key`, now in the store, and where it came from (for `--explain`);
    /// `None` on a miss; `Err` is a warning (the cache could not be read, or its entry
    /// disagrees with `expect`: the step is built).
    fn lookup(
        &self,
        store: &Store,
        key: &CacheKey,
        expect: &Expect<'_>,
    ) -> std::result::Result<Option<(Digest, String)>, String>;
    /// Brings the blobs of `layers` that the store lacks into it.
    fn materialize(&self, store: &Store, layers: &[image::LayerDesc]) -> Result<()>;
    /// What a miss adds to its explanation (e.g. which caches were asked).
    fn miss_note(&self) -> String;
}

/// What a step's result must be, as far as it is known without running the step: the
/// state before it, and that state with the step's config change applied (its history
/// entry made at time 0 and marked empty). A remote entry is someone else's claim; one
/// that disagrees with this is refused.
pub struct Expect<'a> {
    pub parent: &'a State,
    pub config_only: &'a State,
    /// Whether the step may add a layer (RUN, COPY, ADD, and WORKDIR making its directory).
    pub may_add_layer: bool,
}

impl std::fmt::Debug for dyn RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteCache")
    }
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The plan stage the step belongs to.
    pub stage: usize,
    pub text: String,
    pub key: CacheKey,
    pub cached: bool,
    pub explain: Vec<String>,
}

/// The outcome of a build: the image (all blobs in the store) and how each step went.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub image: BuiltImage,
    pub config: ImageConfig,
    pub cache_key: CacheKey,
    pub steps: Vec<StepReport>,
    pub all_cached: bool,
}

impl BuildResult {
    /// The image ID Docker will show: the config digest.
    pub fn image_id(&self) -> &Digest {
        &self.image.config
    }
}

/// The store record holding the stat cache of the context at `root`.
pub(super) fn stat_cache_name(root: &std::path::Path) -> String {
    format!("stat-cache:{}", root.display())
}

/// The label holding the last step's cache key, for Terraform triggers.
pub const CACHE_KEY_LABEL: &str = "org.cairn.cache-key";

/// Builds the image the options describe. Cancelling `cancel` kills the running step's
/// whole PID namespace; the build then fails with [`Error::Interrupted`] and cleans up as
/// it unwinds.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    rep: &Reporter,
    cancel: &Cancel,
) -> Result<BuildResult> {
    Builder::new(store, opts, rep, cancel, false)?.run()
}

/// Computes the final cache key without running any step (the base is still resolved).
pub fn key(
    store: &Store,
    opts: &BuildOptions,
    rep: &Reporter,
    cancel: &Cancel,
) -> Result<CacheKey> {
    Ok(Builder::new(store, opts, rep, cancel, true)?
        .run()?
        .cache_key)
}

/// Every step's key in build order, without running any step (bases are still resolved):
/// what the pinned key vectors in `tests/keys.rs` compare. It runs nothing, so there is
/// nothing to cancel.
pub fn step_keys(store: &Store, opts: &BuildOptions, rep: &Reporter) -> Result<Vec<StepReport>> {
    Ok(Builder::new(store, opts, rep, &Cancel::new(), true)?
        .run()?
        .steps)
}

/// One finished stage: its state and the key of its last step.
#[derive(Clone)]
struct StageResult {
    state: State,
    key: CacheKey,
}

/// What a stage hands back: its result (which later stages read) and its share of the
/// build's reports and records, in step order.
#[derive(Clone)]
struct StageOut {
    result: StageResult,
    steps: Vec<StepReport>,
    recorded: Vec<(String, KeyInputs)>,
}

/// The other stages, as a stage sees them while it runs.
type Stages<'s> = schedule::Stages<'s, StageOut>;

struct Builder<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    rep: &'a Reporter,
    /// This build's own token: cancelled with the caller's, and when a stage fails.
    cancel: Cancel,
    /// The caller's token (the user's Ctrl-C).
    caller_cancel: &'a Cancel,
    /// The sandbox's kill group of this build's steps (what cancelling kills).
    group: u64,
    key_only: bool,
    plan: Plan,
    df_name: String,
    context: Option<crate::context::Context>,
    /// The context's stat cache, loaded from the store at the first COPY that needs it.
    stat_cache: std::sync::Mutex<Option<crate::context::StatCache>>,
    /// The last build's key inputs of this Dockerfile, read only when a step misses (to
    /// explain it) or the record may need rewriting: on a no-op its megabytes of per-file
    /// digests are never parsed.
    previous: std::sync::OnceLock<BTreeMap<String, KeyInputs>>,
    recorded: BTreeMap<String, KeyInputs>,
    steps: Vec<StepReport>,
    /// Steps known so far (base images' ONBUILD triggers add theirs as they are read).
    total: AtomicUsize,
    /// The number of the last step started.
    started: AtomicUsize,
    /// Images resolved in this build (reference and platform → base), so a base read for
    /// its ONBUILD triggers before planning, or named twice, is resolved once.
    pulled: std::sync::Mutex<BTreeMap<(String, String), StageResult>>,
}

impl<'a> Builder<'a> {
    fn new(
        store: &'a Store,
        opts: &'a BuildOptions,
        rep: &'a Reporter,
        cancel: &'a Cancel,
        key_only: bool,
    ) -> Result<Self> {
        // The sandbox tracks its running steps itself; stopping them is its job. The
        // build's own token stops only this build's steps.
        let group = crate::sandbox::new_group();
        let (caller_cancel, cancel) = (cancel, cancel.child());
        cancel.on_cancel(move || crate::sandbox::kill_group(group));
        let mut front = frontend::prepare(opts, rep)?;
        let context = front.context.take();
        let mut b = Builder {
            store,
            opts,
            rep,
            cancel,
            caller_cancel,
            group,
            key_only,
            plan: front.plan.clone(),
            df_name: front.df_name.clone(),
            context,
            stat_cache: std::sync::Mutex::new(None),
            previous: std::sync::OnceLock::new(),
            recorded: BTreeMap::new(),
            steps: Vec::new(),
            total: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            pulled: Default::default(),
        };
        b.plan_base_triggers(&mut front)?;
        *b.total.get_mut() = b.plan.stages.iter().map(|s| s.instructions.len()).sum();
        Ok(b)
    }

    /// Reads the config of every planned stage's base image and plans again with their
    /// ONBUILD triggers, as BuildKit reads its bases before it settles the stage graph: a
    /// trigger's `COPY --from=NAME` names a stage of this Dockerfile, which must then be
    /// built first. Repeated until no newly planned stage brings new triggers (each round
    /// only adds stages). The pulls are remembered, so each base is resolved once.
    fn plan_base_triggers(&mut self, front: &mut frontend::Frontend) -> Result<()> {
        let mut used = BTreeMap::new();
        loop {
            let mut triggers = BTreeMap::new();
            for stage in &self.plan.stages {
                if let Base::Image(r) = &stage.base {
                    let base = self
                        .pull_image(r, stage.platform.as_ref())
                        .map_err(|e| Error::at_line(&self.df_name, stage.line, e))?;
                    if !base.state.config.config.on_build.is_empty() {
                        triggers.insert(stage.index, base.state.config.config.on_build.clone());
                    }
                }
            }
            if triggers == used {
                return Ok(());
            }
            front.replan(&triggers)?;
            self.plan = front.plan.clone();
            used = triggers;
        }
    }

    fn run(mut self) -> Result<BuildResult> {
        // `cairn key` pulls and hashes only: it keeps to plan order.
        let jobs = match self.opts.jobs {
            _ if self.key_only => 1,
            0 => default_jobs(),
            n => n,
        };
        let outs = {
            let this = &self;
            // Serial stages run on this thread, parallel ones on their own.
            let _group = crate::sandbox::enter_group(this.group);
            schedule::run_stages(this.plan.stages.len(), jobs, &this.cancel, |si, st| {
                let _group = crate::sandbox::enter_group(this.group);
                this.build_stage(si, st)
            })?
        };
        let mut last = None;
        for out in outs {
            let out = Arc::try_unwrap(out).unwrap_or_else(|shared| (*shared).clone());
            self.steps.extend(out.steps);
            self.recorded.extend(out.recorded);
            last = Some(out.result);
        }
        let last = last.ok_or_else(|| Error::Internal("the plan has no stage".into()))?;
        if !self.key_only {
            self.save_record();
        }
        self.save_stat_cache();
        let all_cached = self.steps.iter().all(|s| s.cached);
        let (image, config) = if self.key_only {
            (
                BuiltImage {
                    manifest: Digest::of_bytes(b""),
                    config: Digest::of_bytes(b""),
                    layers: Vec::new(),
                },
                last.state.config.clone(),
            )
        } else {
            self.finish(&last)?
        };
        Ok(BuildResult {
            image,
            config,
            cache_key: last.key,
            steps: self.steps,
            all_cached,
        })
    }

    /// The last build's record (see [`Builder::previous`]), read at the first call.
    fn previous(&self) -> &BTreeMap<String, KeyInputs> {
        self.previous.get_or_init(|| {
            let bytes = self
                .store
                .record_get(&record_name(&self.opts.dockerfile_path))
                .ok()
                .flatten()
                .unwrap_or_default();
            serde_json::from_slice(record_json(&bytes)).unwrap_or_default()
        })
    }

    /// Writes this build's record for `--explain` unless it is the one stored. The record
    /// opens with its stamp ([`record_stamp`]), so a no-op reads that one line and neither
    /// parses nor rewrites the record (which holds every COPY source's digest: megabytes
    /// for a large context). A failure only costs a later explanation, so it is ignored.
    fn save_record(&self) {
        let name = record_name(&self.opts.dockerfile_path);
        let stamp = record_stamp(&self.recorded);
        let head = self.store.record_head(&name, STAMP_LEN + 1).ok().flatten();
        if head.as_deref() == Some(stamp.as_bytes()) {
            return;
        }
        let mut bytes = stamp.into_bytes();
        if serde_json::to_writer(&mut bytes, &self.recorded).is_ok() {
            let _ = self.store.record_put(&name, &bytes);
        }
    }

    /// Writes the stat cache back (atomically) when this build taught it something. A
    /// failure only costs the next build some reading, so it is not an error.
    fn save_stat_cache(&self) {
        let guard = self.stat_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(cache), Some(ctx)) = (guard.as_ref(), &self.context) {
            if cache.is_changed() {
                let _ = self
                    .store
                    .record_put(&stat_cache_name(ctx.root()), &cache.to_bytes());
            }
        }
    }

    /// The base of a stage: its starting state and key (an image pulled under a job token).
    fn base(&self, si: usize, done: &Stages<'_>) -> Result<StageResult> {
        let stage = &self.plan.stages[si];
        match &stage.base {
            Base::Scratch => {
                let platform = stage
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.opts.platform.clone());
                Ok(StageResult {
                    state: State {
                        config: ImageConfig::new_scratch(&platform),
                        layers: Vec::new(),
                    },
                    key: cache::scratch_key(&platform),
                })
            }
            Base::Stage(i) => Ok(done.get(*i)?.result.clone()),
            Base::Image(r) => {
                let _job = done.job();
                self.pull_image(r, stage.platform.as_ref())
            }
        }
    }

    fn pull_image(&self, r: &str, platform: Option<&Platform>) -> Result<StageResult> {
        let platform = platform
            .cloned()
            .unwrap_or_else(|| self.opts.platform.clone());
        let memo = (r.to_string(), platform.to_string());
        let pulled = self.pulled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = pulled.get(&memo) {
            return Ok(done.clone());
        }
        drop(pulled);
        let done = self.pull_image_now(r, platform)?;
        self.pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(memo, done.clone());
        Ok(done)
    }

    fn pull_image_now(&self, r: &str, platform: Platform) -> Result<StageResult> {
        let reference = Reference::parse(r)?;
        self.rep
            .info(&format!("resolving {reference} ({platform})"));
        let pulled = self.pull_via_mirrors(&reference, &platform)?;
        if pulled.offline_fallback {
            self.rep.warn(&format!(
                "registry unreachable; using the stored {} for {reference}",
                pulled.manifest_digest
            ));
        }
        // A config that is no image config, or disagrees with its manifest, is the
        // registry's lie (exit 4), not a store problem or a bug.
        let bad = |msg: String| {
            Error::Registry(registry::Error::BadManifest {
                reference: reference.to_string(),
                msg,
            })
        };
        let config = ImageConfig::from_json(&pulled.config).map_err(|e| {
            bad(format!(
                "config {} is not an image config: {e}",
                pulled.config_digest
            ))
        })?;
        if config.rootfs.diff_ids.len() != pulled.layers.len() {
            return Err(bad(format!(
                "the config lists {} layers but the manifest {}",
                config.rootfs.diff_ids.len(),
                pulled.layers.len()
            )));
        }
        let layers = pulled
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| {
                Ok(image::LayerDesc {
                    digest: Digest::parse(d.digest().as_ref())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    size: d.size(),
                    media_type: d.media_type().to_string(),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StageResult {
            key: cache::base_key(&pulled.manifest_digest, &platform),
            state: State {
                config: config.for_child(),
                layers,
            },
        })
    }

    /// Pulls through the configured mirrors first (a mirror serves the same digests, so
    /// cache keys do not change), then from the registry itself.
    fn pull_via_mirrors(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<registry::PulledImage> {
        if self.opts.pull != PullPolicy::Never {
            for m in self
                .opts
                .mirrors
                .get(&reference.registry)
                .into_iter()
                .flatten()
            {
                let mut via = reference.clone();
                via.registry = m.clone();
                match registry::pull(
                    self.store,
                    &via,
                    platform,
                    self.opts.pull,
                    &self.opts.registry,
                ) {
                    Ok(p) => return Ok(p),
                    Err(e) => self
                        .rep
                        .warn(&format!("mirror {m} failed for {reference}: {e}")),
                }
            }
        }
        Ok(registry::pull(
            self.store,
            reference,
            platform,
            self.opts.pull,
            &self.opts.registry,
        )?)
    }

    fn build_stage(&self, si: usize, done: &Stages<'_>) -> Result<StageOut> {
        let from_line = self.plan.stages[si].line;
        let StageResult { mut state, mut key } = self
            .base(si, done)
            .map_err(|e| Error::at_line(&self.df_name, from_line, e))?;
        let stage = self.plan.stages[si].clone();
        // The final stage's pulled base, for the `final_base` hook at the stage's first
        // step that is not a cache hit: a build whose steps all hit (a no-op) loads
        // nothing, so the hook never hears of it.
        let mut final_base = match (&self.opts.final_base, &stage.base, self.key_only) {
            (Some(hook), Base::Image(_), false)
                if si + 1 == self.plan.stages.len() && !state.layers.is_empty() =>
            {
                Some((
                    hook,
                    StageResult {
                        state: state.clone(),
                        key: key.clone(),
                    },
                ))
            }
            _ => None,
        };
        let stage_label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        // ONBUILD triggers of the base run first, as Docker does; the child does not inherit them.
        let triggers = std::mem::take(&mut state.config.config.on_build);
        let mut instructions = Vec::new();
        for t in &triggers {
            instructions.push(steps::parse_trigger(t, from_line)?);
        }
        self.total.fetch_add(instructions.len(), Ordering::SeqCst);
        instructions.extend(stage.instructions.iter().cloned());
        let (mut reports, mut recorded) = (Vec::new(), Vec::new());

        let mut scope = plan::Scope::new(&self.plan, &stage, &state.config.config.env);
        let mut facts = dispatch::StageFacts::default();
        for (ii, inst) in instructions.iter().enumerate() {
            self.cancel.check()?;
            let expanded = scope
                .apply(inst)
                .map_err(|e| frontend::located(&self.df_name, e))?;
            // Base-image triggers are located at the FROM (`steps::parse_trigger`).
            let line = inst.span.line;
            let at_line = |e| Error::at_line(&self.df_name, line, e);
            // The stages this step reads are waited for before it takes a job token.
            let from = self.copy_from(&expanded, done).map_err(at_line)?;
            let mount_froms = self.mount_froms(&expanded, done).map_err(at_line)?;
            let _job = done.job();
            self.cancel.check()?;
            let read_layers: Vec<image::LayerDesc> = from
                .iter()
                .chain(mount_froms.iter().flatten())
                .flat_map(|f| f.layers.iter().cloned())
                .collect();
            let step = env::Step {
                no: self.started.fetch_add(1, Ordering::SeqCst) + 1,
                inst,
                exp: &expanded,
                state: &state,
                scope: &scope,
            };
            let mut prepared =
                steps::prepare(&self.env(), &step, from, mount_froms).map_err(at_line)?;
            let mut inputs = KeyInputs {
                parent: key.clone(),
                instruction: expanded.canonical(),
                env: scope.key_env(),
                user: state.config.config.user.clone().unwrap_or_default(),
                workdir: state.config.config.working_dir.clone().unwrap_or_default(),
                shell: state.config.config.shell.clone().unwrap_or_default(),
                network: prepared.network_name(self.opts.network).to_string(),
                inputs: prepared.inputs_digest(),
                // Filled in once it is known whether the step runs (below).
                input_files: BTreeMap::new(),
            };
            let new_key = inputs.key();
            let step_no = step.no;
            let rec_name = format!("{}/{}", stage.index, ii);
            let mut cached_entry = if self.opts.no_cache {
                None
            } else {
                self.store.cache_get(&new_key)?
            };
            let text =
                dispatch::display_text(inst, inst.original.lines().next().unwrap_or_default());
            // Another cairn sharing the store may be computing this very step: wait for it
            // and take its result, so an identical step runs once however many builds
            // overlap (metadata steps are too cheap to wait for). The lock dies with its
            // holder, so a killed builder blocks no one.
            let _step_lock = if cached_entry.is_none()
                && !self.key_only
                && !self.opts.no_cache
                && !matches!(prepared, steps::Prepared::Plain)
            {
                let lock = self.lock_step(&new_key, step_no, &text)?;
                cached_entry = self.store.cache_get(&new_key)?;
                Some(lock)
            } else {
                None
            };
            // The step's config change, known without running it: what a hit's config
            // must show, and the stage facts after it (a hit changes them as a run would).
            let mut hit_facts = facts;
            let config_only = steps::simulate(&state, &mut hit_facts, &expanded, inst);
            let remote_hit = match &self.opts.remote_cache {
                Some(rc) if cached_entry.is_none() && !self.key_only && !self.opts.no_cache => {
                    let expect = Expect {
                        parent: &state,
                        config_only: &config_only,
                        may_add_layer: matches!(
                            expanded,
                            plan::Expanded::Run(_)
                                | plan::Expanded::Copy(_)
                                | plan::Expanded::Add(_)
                                | plan::Expanded::Workdir(_)
                        ),
                    };
                    rc.lookup(self.store, &new_key, &expect)
                        .unwrap_or_else(|w| {
                            self.rep.warn(&w);
                            None
                        })
                }
                _ => None,
            };
            let key_text = new_key.to_string();
            let hit = cached_entry.is_some() || remote_hit.is_some();
            if !hit {
                if let Some((hook, base)) = final_base.take() {
                    if let Ok((image, _)) = self.finish(&base) {
                        hook.pulled(self.store, &image);
                    }
                }
            }
            // A step that runs still needs its per-file digests (a staged COPY names the
            // file that changed under it); a hit's are moved out, not cloned.
            inputs.input_files = if hit {
                prepared.take_input_files()
            } else {
                prepared.input_files()
            };
            self.rep.emit(&Event::Step {
                step: step_no,
                total: self.total.load(Ordering::SeqCst),
                stage: &stage_label,
                text: &text,
                key: &key_text,
                cached: hit,
            });
            let mut explain = Vec::new();
            if !hit {
                explain = match self.previous().get(&rec_name) {
                    Some(prev) if prev.key() == new_key => {
                        vec!["the cache entry is missing (pruned, or --no-cache)".into()]
                    }
                    Some(prev) if ii == 0 && prev.parent != inputs.parent => {
                        // The parent of a stage's first step is its base.
                        let mut r = cache::explain_change(prev, &inputs);
                        r.retain(|x| x != "parent step changed");
                        r.insert(
                            0,
                            format!("base image changed ({})", base_text(&stage.base)),
                        );
                        r
                    }
                    Some(prev) => cache::explain_change(prev, &inputs),
                    None => vec!["no earlier build of this step".into()],
                };
                if let Some(rc) = self.opts.remote_cache.as_ref().filter(|_| !self.key_only) {
                    explain.push(rc.miss_note());
                }
                self.rep.emit(&Event::Explain {
                    step: step_no,
                    reasons: &explain,
                });
            }
            if let Some((_, from)) = &remote_hit {
                self.rep.info(&format!("#{step_no} hit: {from}"));
            } else if hit && self.rep.explaining() {
                self.rep.info(&format!("#{step_no} hit: local store"));
            }
            let started = Instant::now();
            state = match (cached_entry, remote_hit) {
                (Some(entry), _) => {
                    facts = hit_facts;
                    State::load(self.store, &entry.state)?
                }
                (None, Some((state_digest, _))) => {
                    facts = hit_facts;
                    State::load(self.store, &state_digest)?
                }
                (None, None) if self.key_only => {
                    facts = hit_facts;
                    config_only
                }
                (None, None) => {
                    if let Some(rc) = &self.opts.remote_cache {
                        // A remote hit brought only its state: the layers this step reads
                        // (its own stage's and any stage a COPY --from names) come now.
                        let mut needed = state.layers.clone();
                        needed.extend(read_layers);
                        rc.materialize(self.store, &needed)?;
                    }
                    let (next, timings) = steps::execute(&self.env(), &mut facts, &step, prepared)
                        .map_err(|e| {
                            // Stopped because another stage failed: said as such, so no
                            // view shows this step as the failure. (Stopped by the user,
                            // it is the failure shown, with its output.)
                            if self.cancel.is_cancelled() && !self.caller_cancel.is_cancelled() {
                                self.rep.emit(&Event::Canceled { step: step_no });
                            }
                            Error::at_line(&self.df_name, line, e)
                        })?;
                    let (digest, refs) = next.save(self.store)?;
                    self.store.cache_put(
                        &new_key,
                        &CacheEntry {
                            state: digest,
                            refs,
                            created: image::now_rfc3339(),
                        },
                    )?;
                    self.rep.emit(&Event::Done {
                        step: step_no,
                        seconds: progress::secs(started.elapsed()),
                        stages: &timings,
                    });
                    next
                }
            };
            recorded.push((rec_name, inputs));
            reports.push(StepReport {
                stage: stage.index,
                text,
                key: new_key.clone(),
                cached: hit,
                explain,
            });
            key = new_key;
        }
        Ok(StageOut {
            result: StageResult { state, key },
            steps: reports,
            recorded,
        })
    }

    /// What step code may use of this build.
    fn env(&self) -> env::StepEnv<'_> {
        env::StepEnv {
            store: self.store,
            rep: self.rep,
            cancel: &self.cancel,
            privilege: &self.opts.privilege,
            context: self.context.as_ref(),
            df_name: &self.df_name,
            network: self.opts.network,
            limits: &self.opts.limits,
            compression: self.opts.compression,
            source_date_epoch: self.opts.source_date_epoch,
            registry: &self.opts.registry,
            mounts: &self.opts.mounts,
            stat_cache: &self.stat_cache,
        }
    }

    /// The `from=` of each `RUN --mount` (`None` where it has none), resolved as
    /// [`Self::copy_from`] resolves COPY's.
    fn mount_froms(
        &self,
        exp: &plan::Expanded,
        done: &Stages<'_>,
    ) -> Result<Vec<Option<steps::FromSource>>> {
        let plan::Expanded::Run(run) = exp else {
            return Ok(Vec::new());
        };
        run.mounts
            .iter()
            .map(|m| match &m.from {
                None => Ok(None),
                Some(plan::CopySource::Stage(i)) => {
                    let r = &done.get(*i)?.result;
                    Ok(Some(steps::FromSource {
                        key: r.key.clone(),
                        layers: r.state.layers.clone(),
                    }))
                }
                Some(plan::CopySource::Image(r)) => {
                    let img = self.pull_image(r, None)?;
                    Ok(Some(steps::FromSource {
                        key: img.key,
                        layers: img.state.layers,
                    }))
                }
            })
            .collect()
    }

    /// The source of a `COPY --from`: a finished stage, or an image (pulled).
    fn copy_from(
        &self,
        exp: &plan::Expanded,
        done: &Stages<'_>,
    ) -> Result<Option<steps::FromSource>> {
        let from = match exp {
            plan::Expanded::Copy(c) | plan::Expanded::Add(c) => c.from.as_ref(),
            _ => None,
        };
        Ok(match from {
            None => None,
            Some(plan::CopySource::Stage(i)) => {
                let r = &done.get(*i)?.result;
                Some(steps::FromSource {
                    key: r.key.clone(),
                    layers: r.state.layers.clone(),
                })
            }
            Some(plan::CopySource::Image(r)) => {
                let img = self.pull_image(r, None)?;
                Some(steps::FromSource {
                    key: img.key,
                    layers: img.state.layers,
                })
            }
        })
    }

    /// The store lock of one step's key, announcing a wait when another process holds it.
    fn lock_step(&self, key: &CacheKey, step_no: usize, text: &str) -> Result<crate::store::Lock> {
        let name = format!("step-{}", key.hex());
        if let Some(lock) = self.store.try_lock(&name)? {
            return Ok(lock);
        }
        self.rep.info(&format!(
            "step {step_no} ({text}) is being built by another cairn process sharing the store; waiting for its result"
        ));
        Ok(self.store.lock(&name)?)
    }

    /// Writes the final config and manifest into the store.
    fn finish(&self, last: &StageResult) -> Result<(BuiltImage, ImageConfig)> {
        let mut config = last.state.config.clone();
        for (k, v) in &self.opts.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        config
            .config
            .labels
            .insert(CACHE_KEY_LABEL.to_string(), last.key.to_string());
        config.created = match self.opts.source_date_epoch {
            Some(t) => Some(crate::image::rfc3339(t)),
            None => config.history.last().and_then(|h| h.created.clone()),
        };
        let config_bytes = config.to_canonical_json();
        let config_digest = self.store.put_bytes(&config_bytes)?;
        let manifest = image::manifest_json(
            &config_digest,
            config_bytes.len() as u64,
            &last.state.layers,
        );
        let manifest_digest = self.store.put_bytes(&manifest)?;
        Ok((
            BuiltImage {
                manifest: manifest_digest,
                config: config_digest,
                layers: last.state.layers.clone(),
            },
            config,
        ))
    }
}

/// How a stage's base is named in explanations.
fn base_text(base: &Base) -> String {
    match base {
        Base::Scratch => "scratch".into(),
        Base::Image(r) => format!("{r} resolved to a different manifest digest"),
        Base::Stage(i) => format!("its base stage {i} changed"),
    }
}

/// The length of a record stamp: a digest, `sha256:` and 64 hex digits.
const STAMP_LEN: usize = 71;

/// The line an `--explain` record opens with: a digest of each step's record name and cache
/// key. A key covers every field of [`KeyInputs`] but `input_files`, and those are the
/// per-file parts of the key's inputs digest, so equal stamps mean equal records.
fn record_stamp(recorded: &BTreeMap<String, KeyInputs>) -> String {
    let mut f = cache::Framer::new("cairn/explain-record/v1");
    f.u64(recorded.len() as u64);
    for (name, inputs) in recorded {
        f.field(name.as_bytes());
        f.field(inputs.key().0.as_str().as_bytes());
    }
    let mut line = f.digest().as_str().to_string();
    debug_assert_eq!(line.len(), STAMP_LEN);
    line.push('\n');
    line
}

/// The JSON of an `--explain` record, after its stamp line (a record written before
/// stamps is JSON from its first byte).
fn record_json(bytes: &[u8]) -> &[u8] {
    match bytes.first() {
        Some(b'{') | None => bytes,
        Some(_) => bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |i| &bytes[i + 1..]),
    }
}

/// The record that holds the last build's key inputs for a Dockerfile path (for --explain).
fn record_name(dockerfile: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_path_buf());
    format!(
        "explain-{}",
        Digest::of_bytes(abs.to_string_lossy().as_bytes()).hex()
    )
}
