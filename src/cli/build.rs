//! `cairn build` and `cairn key`: raw `docker build`-style flags turned into validated
//! [`BuildOptions`], the executor called, and the result handed to Docker or written out.
//! Results go to stdout (the image ID, or one flat JSON object with `--format json`); logs
//! go to stderr.

use super::{BuildArgs, Cli, CompressionArg, NetworkArg, OutputFormat, Progress};
use crate::error::{Error, Result};
use crate::events::TtyOptions;
use crate::executor::{self, BuildOptions, BuildResult, Cancel, Mode, Reporter};
use crate::export::OutputCompression;
use crate::layer::Compression;
use crate::registry::{self, RegistryOptions};
use crate::remote_cache::{self, CacheTo, RegistryCache};
use crate::sandbox::Network;
use crate::store::Store;
use crate::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Load,
    DockerArchive(PathBuf, OutputCompression),
    OciLayout(PathBuf, OutputCompression),
    /// Push to a registry: to `name` when given, else to every `-t` tag.
    Registry {
        name: Option<String>,
        compression: Compression,
    },
}

/// BuildKit's push spellings: `type=registry[,name=REF][,compression=gzip|zstd|none]` and
/// `type=image,name=REF,push=true` (`push=false` keeps the image local: loaded into
/// Docker). `None` for other types.
fn parse_push_output(spec: &str) -> Option<Result<Output>> {
    let mut kv = Vec::new();
    for part in spec.split(',') {
        kv.push(part.split_once('=')?);
    }
    let kind = kv.iter().find(|(k, _)| *k == "type").map(|(_, v)| *v)?;
    if kind != "registry" && kind != "image" {
        return None;
    }
    let mut name = None;
    let mut compression = Compression::Gzip;
    let mut push = kind == "registry";
    for (k, v) in kv {
        match k {
            "type" => {}
            "name" => name = Some(v.to_string()),
            "compression" => match v.parse() {
                Ok(c) => compression = c,
                Err(e) => return Some(Err(Error::Usage(format!("--output {spec}: {e}")))),
            },
            "push" => match v {
                "true" => push = true,
                "false" => push = false,
                _ => {
                    return Some(Err(Error::Usage(format!(
                        "--output {spec}: push={v:?}: expected true or false"
                    ))))
                }
            },
            // BuildKit options with no meaning for cairn's registry output.
            "oci-mediatypes" | "force-compression" | "compression-level" | "store" => {}
            _ => {
                return Some(Err(Error::Usage(format!(
                "--output {spec}: unknown key {k:?} (expected type=, name=, push=, compression=)"
            ))))
            }
        }
    }
    if let Some(n) = &name {
        if let Err(e) = registry::Reference::parse(n) {
            return Some(Err(Error::Usage(format!("--output {spec}: name: {e}"))));
        }
    }
    Some(Ok(if push {
        Output::Registry { name, compression }
    } else {
        Output::Load
    }))
}

/// Parses `type=docker,dest=FILE` / `type=oci,dest=DIR` (and a bare path, as docker takes it),
/// with BuildKit's `compression=`, `compression-level=` and `force-compression=`. OCI
/// layouts default to gzip layers, which every reader takes; docker-archives to the
/// layers as stored, zstd ones as plain tar, which every engine loads.
pub fn parse_output(spec: &str) -> Result<Output> {
    if let Some(out) = parse_push_output(spec) {
        return out;
    }
    let mut kind = None;
    let mut dest = None;
    let mut oc = OutputCompression::default();
    let usage = |m: String| Error::Usage(format!("--output {spec}: {m}"));
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some((k, v)) => {
                if !oc.parse_option(k, v).map_err(usage)? {
                    return Err(usage(format!(
                        "unknown key {k:?} (expected type=, dest=, compression=, \
                         compression-level=, force-compression=)"
                    )));
                }
            }
            None if kind.is_none() && !part.is_empty() => {
                return Ok(Output::DockerArchive(PathBuf::from(part), oc));
            }
            None => return Err(usage("expected type=...,dest=...".into())),
        }
    }
    oc.validate().map_err(usage)?;
    match (kind.as_deref(), dest) {
        (Some("docker"), None) => Ok(Output::Load),
        (Some("docker") | Some("tar"), Some(d)) => Ok(Output::DockerArchive(d, oc)),
        (Some("oci"), Some(d)) => Ok(Output::OciLayout(
            d,
            OutputCompression {
                compression: oc.compression.or(Some(Compression::Gzip)),
                ..oc
            },
        )),
        (Some("oci"), None) => Err(usage("type=oci needs dest=DIR".into())),
        (Some(other), _) => Err(usage(format!(
            "unsupported type {other:?} (cairn writes type=docker and type=oci)"
        ))),
        (None, _) => Err(usage("missing type=".into())),
    }
}

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Usage(format!("{flag} {s:?}: expected KEY=VALUE"))),
    }
}

/// `--build-arg K=V`, or `--build-arg K` taking K from the environment (skipped when unset).
fn build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        if a.contains('=') {
            let (k, v) = key_value("--build-arg", a)?;
            out.insert(k, v);
        } else if let Ok(v) = std::env::var(a) {
            out.insert(a.clone(), v);
        }
    }
    Ok(out)
}

/// `CONTEXT/Dockerfile`, or `CONTEXT/dockerfile` when only that exists (as BuildKit falls
/// back to the lower-case name).
fn default_dockerfile(ctx: &std::path::Path) -> PathBuf {
    let upper = ctx.join("Dockerfile");
    let lower = ctx.join("dockerfile");
    if !upper.exists() && lower.is_file() {
        lower
    } else {
        upper
    }
}

/// Options shared by `cairn build` and `cairn key`.
pub fn options(cli: &Cli, args: &BuildArgs) -> Result<BuildOptions> {
    let (context, dockerfile_path, dockerfile_text) = if args.context == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::Input {
                what: "cannot read the Dockerfile from stdin".into(),
                source: e,
            })?;
        (None, PathBuf::from("Dockerfile"), text)
    } else {
        let ctx = PathBuf::from(&args.context);
        if !ctx.is_dir() {
            return Err(Error::Usage(format!(
                "context {}: not a directory",
                ctx.display()
            )));
        }
        let file = args
            .file
            .clone()
            .unwrap_or_else(|| default_dockerfile(&ctx));
        let text = executor::frontend::read_dockerfile(&file)?;
        (Some(ctx), file, text)
    };
    let platform = cli.platform(args.platform.as_ref());
    let labels = args
        .labels
        .iter()
        .map(|l| key_value("--label", l))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let build_args = build_args(&args.build_args)?;
    // As BuildKit: `--build-arg SOURCE_DATE_EPOCH=...`, else the environment variable
    // (which buildx passes on as that build arg).
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
    let source_date_epoch = match epoch {
        Some(v) if !v.is_empty() => Some(v.parse::<i64>().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?}: expected seconds since the epoch"
            ))
        })?),
        _ => None,
    };
    if let Some(f) = &args.ignore_file {
        if !f.is_file() {
            return Err(Error::Usage(format!(
                "--ignore-file {}: no such file",
                f.display()
            )));
        }
    }
    Ok(BuildOptions {
        context,
        dockerfile_path,
        dockerfile_text,
        ignore_file: args.ignore_file.clone(),
        build_args,
        target: args.target.clone(),
        platform,
        labels,
        no_cache: args.no_cache,
        pull: cli.pull_policy(args.pull),
        network: match args.network {
            NetworkArg::None => Network::None,
            NetworkArg::Default => Network::Default,
            NetworkArg::Host => Network::Host,
        },
        limits: limits(args)?,
        compression: match args.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        },
        source_date_epoch,
        registry: RegistryOptions {
            quiet: args.quiet,
            ..super::pull::registry_options(cli)
        },
        mirrors: cli.config.mirrors.clone(),
        // Set by `build` (which also exports to the cache); `cairn key` asks no cache.
        remote_cache: None,
        // Decided once here: every step, layer and unpack of the build uses this one.
        privilege: crate::userns::Privilege::detect(),
        mounts: mount_options(args)?,
        jobs: jobs(std::env::var(crate::executor::JOBS_ENV).ok().as_deref())?,
        // Set by `build` when the image goes into Docker.
        final_base: None,
    })
}

/// The final stage's base image on its way into Docker ([`crate::export::BasePreload`]),
/// started by the executor once the base is pulled. One that no load took (the build
/// failed) is waited for and removed when this is dropped.
struct Preload {
    slot: std::sync::Mutex<Option<crate::export::BasePreload>>,
    /// The image's tags: a previous build under them may already hold the base's layers.
    tags: Vec<String>,
    rep: crate::events::Reporter,
}

impl Preload {
    fn take(&self) -> Option<crate::export::BasePreload> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl executor::FinalBase for Preload {
    fn pulled(&self, store: &Store, base: &crate::export::BuiltImage) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let rep = self.rep.clone();
            let loading = Box::new(move || {
                rep.info("loading the base image into Docker while the steps run")
            });
            *slot = Some(crate::export::BasePreload::start(
                store, base, &self.tags, loading,
            ));
        }
    }
}

impl Drop for Preload {
    fn drop(&mut self) {
        if let Some(p) = self.take() {
            p.abandon();
        }
    }
}

/// `CAIRN_JOBS`: how many steps may work at once (`1` builds one stage after the other);
/// unset or empty for the default.
fn jobs(value: Option<&str>) -> Result<usize> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::Usage(format!(
                "{}={v:?}: expected a number of steps at once, at least 1",
                crate::executor::JOBS_ENV
            ))),
        },
    }
}

/// The resource flags, as `docker build` takes them.
fn limits(args: &BuildArgs) -> Result<crate::sandbox::Limits> {
    let memory_swap = match args.memory_swap.as_deref() {
        Some("-1") => Some(-1),
        Some(v) => Some(size("--memory-swap", v)? as i64),
        None => None,
    };
    let memory = args
        .memory
        .as_deref()
        .map(|v| size("--memory", v))
        .transpose()?;
    if let (Some(m), Some(s)) = (memory, memory_swap) {
        if s >= 0 && (s as u64) < m {
            return Err(Error::Usage(format!(
                "--memory-swap {s} is smaller than --memory {m}: it counts memory plus swap"
            )));
        }
    }
    if memory_swap.is_some() && memory.is_none() {
        return Err(Error::Usage("--memory-swap needs --memory".into()));
    }
    Ok(crate::sandbox::Limits {
        memory,
        memory_swap,
        cpu_quota: args.cpu_quota,
        cpu_period: args.cpu_period,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids: None,
        shm_size: args
            .shm_size
            .as_deref()
            .map(|v| size("--shm-size", v))
            .transpose()?,
        ulimits: args
            .ulimit
            .iter()
            .map(|u| ulimit(u))
            .collect::<Result<_>>()?,
        keep_fsync: args.keep_fsync,
    })
}

/// A size as Docker writes it: bytes, or a number with `b`, `k`, `m`, `g`, `t` (powers of
/// 1024, case-insensitive, an optional trailing `b` as in `mb`).
fn size(flag: &str, text: &str) -> Result<u64> {
    let bad = || {
        Error::Usage(format!(
            "{flag} {text:?}: expected a size such as 512m or 2g"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && !r.ends_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        Some('b') => (&t[..t.len() - 1], 0),
        _ => (t, 0),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if !(n.is_finite() && n > 0.0) {
        return Err(bad());
    }
    Ok((n * (1u64 << shift) as f64) as u64)
}

/// `NAME=SOFT[:HARD]`, as `docker build --ulimit`.
fn ulimit(text: &str) -> Result<crate::sandbox::Ulimit> {
    let bad = || {
        Error::Usage(format!(
            "--ulimit {text:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"
        ))
    };
    let (name, values) = text.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = values.split_once(':').unwrap_or((values, values));
    let num = |v: &str| -> Result<u64> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v.parse().map_err(|_| bad()),
        }
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    if soft > hard {
        return Err(Error::Usage(format!(
            "--ulimit {text:?}: the soft limit exceeds the hard one"
        )));
    }
    Ok(crate::sandbox::Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--secret`, `--ssh` and `--allow`; a secret's value is read only when a step mounts it.
fn mount_options(args: &BuildArgs) -> Result<crate::mounts::MountOptions> {
    let mut opts = crate::mounts::MountOptions::default();
    for s in &args.secrets {
        let (id, source) = crate::mounts::parse_secret(s).map_err(Error::Usage)?;
        if let crate::mounts::SecretSource::File(p) = &source {
            if !p.is_file() {
                return Err(Error::Usage(format!(
                    "--secret id={id}: {}: no such file",
                    p.display()
                )));
            }
        }
        opts.secrets.insert(id, source);
    }
    let auth_sock = std::env::var("SSH_AUTH_SOCK").ok();
    for s in &args.ssh {
        let (id, socket) =
            crate::mounts::parse_ssh(s, auth_sock.as_deref()).map_err(Error::Usage)?;
        opts.ssh.insert(id, socket);
    }
    crate::mounts::parse_allow(&args.allow, &mut opts)?;
    Ok(opts)
}

/// The event sink `--progress` and `--quiet` ask for.
pub(super) fn reporter(args: &BuildArgs) -> Reporter {
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        match args.progress {
            Progress::Auto => Mode::auto(),
            Progress::Plain => Mode::Plain,
            Progress::Tty => Mode::Tty,
            Progress::Json => Mode::Json,
        }
    };
    Reporter::with_options(mode, args.explain, TtyOptions::from_env())
}

pub fn build(cli: &Cli, args: &BuildArgs, rep: &Reporter, cancel: &Cancel) -> Result<()> {
    let outputs = args
        .output
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = outputs;
    if args.push {
        outputs.push(Output::Registry {
            name: None,
            compression: Compression::Gzip,
        });
    }
    if outputs.is_empty() || (args.load && !outputs.contains(&Output::Load)) {
        outputs.push(Output::Load);
    }
    let push_targets = push_targets(&outputs, &args.tags)?;
    for t in &args.tags {
        registry::Reference::parse(t)
            .map_err(|e| Error::Usage(format!("-t {t}: invalid image name: {e}")))?;
    }
    let mut opts = options(cli, args)?;
    opts.registry.events = Some(rep.clone());
    let (imports, exports) = cache_specs(cli, args)?;
    let imported =
        (!imports.is_empty()).then(|| Arc::new(RegistryCache::new(imports, opts.registry.clone())));
    opts.remote_cache = imported
        .clone()
        .map(|c| c as Arc<dyn executor::RemoteCache>);
    // With --load, the final stage's base goes into Docker while the steps run.
    let preload = outputs.iter().any(|o| matches!(o, Output::Load)).then(|| {
        Arc::new(Preload {
            slot: Default::default(),
            tags: args.tags.clone(),
            rep: rep.clone(),
        })
    });
    opts.final_base = preload.clone().map(|p| p as Arc<dyn executor::FinalBase>);
    let plain = Store::open(&cli.store_root())?;
    // Everything this build uses stays pinned against collections until it is done.
    let store = plain.leased();
    let result = loop {
        let bad = imported.as_ref().map_or(0, |c| c.bad_layers());
        let attempt = executor::build(&store, &opts, rep, cancel).and_then(|result| {
            if let Some(c) = &imported {
                // A remote hit brought only the step's state: fetch the layers the outputs read.
                let needed = layers_to_fetch(&store, &outputs, &push_targets, &result.image.layers);
                executor::RemoteCache::materialize(c.as_ref(), &store, &needed)?;
            }
            Ok(result)
        });
        match attempt {
            // A layer of the registry cache failed its check (and each such failure adds to
            // the bad ones, so this ends): the entries listing it are refused now, and the
            // build runs again, taking what it built already from the local store.
            Err(e) if imported.as_ref().is_some_and(|c| c.bad_layers() > bad) => {
                rep.warn(&format!("{e}; building those steps instead"));
            }
            attempt => break attempt?,
        }
    };
    for to in &exports {
        match remote_cache::export(&store, to, &result, imported.as_deref(), &opts.registry) {
            Ok(x) => rep.info(&format!(
                "cache export to {}: {} entries written, {} already there",
                to.reference.name(),
                x.written,
                x.existing
            )),
            Err(e) if to.ignore_error => rep.warn(&format!(
                "cache export to {} failed: {e}",
                to.reference.name()
            )),
            Err(e) => return Err(e),
        }
    }
    let mut image_id = result.image_id().to_string();
    let mut names = args.tags.clone();
    names.extend(push_targets.values().flatten().map(|r| r.to_string()));
    super::push::remember_built(&store, &names, &result.image.manifest)?;
    let mut pushed = Vec::new();
    // The manifest as the first archive or layout holds it (its layers may be compressed
    // otherwise than in the store), else as stored.
    let mut manifest = None;
    for out in &outputs {
        let written = match out {
            Output::Load => {
                // scripts/lib/bench.py times the load from this line.
                rep.info("loading the image into Docker");
                let ahead = preload.as_ref().and_then(|p| p.take());
                image_id = crate::export::docker_load_reporting(
                    &store,
                    &result.image,
                    &args.tags,
                    rep,
                    ahead,
                )?;
                rep.exported(&match args.tags.as_slice() {
                    [] => "docker".to_string(),
                    tags => format!("docker ({})", tags.join(", ")),
                });
                continue;
            }
            Output::DockerArchive(dest, oc) => {
                let w = crate::export::write_docker_archive_file(
                    &store,
                    &result.image,
                    &args.tags,
                    dest,
                    oc,
                )
                .map_err(|e| match e {
                    crate::export::Error::Io { path, source } if path == *dest => Error::Input {
                        what: format!("cannot write {}", dest.display()),
                        source,
                    },
                    e => e.into(),
                })?;
                rep.exported(&dest.display().to_string());
                w
            }
            Output::OciLayout(dest, oc) => {
                let w = crate::export::write_oci_layout_with(
                    &store,
                    &result.image,
                    &args.tags,
                    dest,
                    oc,
                )?;
                rep.exported(&format!("OCI layout {}", dest.display()));
                w
            }
            Output::Registry { compression, .. } => {
                let targets = &push_targets[&compression.to_string()];
                pushed.extend(super::push::push_image(
                    cli,
                    &store,
                    &result.image.manifest,
                    targets,
                    *compression,
                    args.quiet,
                    Some(rep),
                )?);
                continue;
            }
        };
        if written.unchanged {
            rep.info("the output already holds this image: not rewritten");
        }
        manifest.get_or_insert(written.manifest);
    }
    let manifest = manifest.unwrap_or_else(|| result.image.manifest.clone());
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &image_id).map_err(|e| Error::Input {
            what: format!("cannot write {}", f.display()),
            source: e,
        })?;
    }
    drop(store);
    if let (Some(cap), false) = (cli.config.max_store_size, result.all_cached) {
        collect_after_build(&plain, cap, rep);
    }
    rep.emit(&executor::Event::Finished {
        image_id: &image_id,
        cache_key: &result.cache_key.to_string(),
        all_cached: result.all_cached,
    });
    print_result(args, &result, &image_id, &manifest, &pushed);
    Ok(())
}

/// The layers the outputs need in the store: all of them for a load or a file output; for
/// pushes only those to be re-compressed or that no target registry is known to hold (the
/// push mounts the others from the cache repository, so they never cross this machine).
fn layers_to_fetch(
    store: &Store,
    outputs: &[Output],
    targets: &BTreeMap<String, Vec<registry::Reference>>,
    layers: &[crate::image::LayerDesc],
) -> Vec<crate::image::LayerDesc> {
    if outputs
        .iter()
        .any(|o| !matches!(o, Output::Registry { .. }))
    {
        return layers.to_vec();
    }
    layers
        .iter()
        .filter(|l| {
            let stored = Compression::from_media_type(&l.media_type);
            let locs = registry::blob_locations(store, &l.digest);
            outputs.iter().any(|o| match o {
                Output::Registry { compression, .. } => {
                    registry::needs_conversion(stored, *compression)
                        || targets[&compression.to_string()].iter().any(|t| {
                            !locs
                                .iter()
                                .any(|loc| loc.starts_with(&format!("{}/", t.registry)))
                        })
                }
                _ => true,
            })
        })
        .cloned()
        .collect()
}

/// `--cache-from` / `--cache-to` (else the config file's `cache_from` / `cache_to`), parsed.
fn cache_specs(cli: &Cli, args: &BuildArgs) -> Result<(Vec<registry::Reference>, Vec<CacheTo>)> {
    let pick = |flag: &Vec<String>, file: &Vec<String>| {
        if flag.is_empty() {
            file.clone()
        } else {
            flag.clone()
        }
    };
    let from = pick(&args.cache_from, &cli.config.cache_from)
        .iter()
        .map(|s| remote_cache::parse_cache_from(s))
        .collect::<Result<Vec<_>>>()?;
    let to = pick(&args.cache_to, &cli.config.cache_to)
        .iter()
        .map(|s| remote_cache::parse_cache_to(s))
        .collect::<Result<Vec<_>>>()?;
    Ok((from, to))
}

/// The references each registry output pushes to (by compression): its `name=`, else
/// every `-t` tag; an output with neither is a usage error.
fn push_targets(
    outputs: &[Output],
    tags: &[String],
) -> Result<BTreeMap<String, Vec<registry::Reference>>> {
    let mut out: BTreeMap<String, Vec<registry::Reference>> = BTreeMap::new();
    for o in outputs {
        let Output::Registry { name, compression } = o else {
            continue;
        };
        let names: Vec<&String> = match name {
            Some(n) => vec![n],
            None => tags.iter().collect(),
        };
        if names.is_empty() {
            return Err(Error::Usage(
                "--push / -o type=registry: name the image with -t REGISTRY/NAME[:TAG] or name="
                    .into(),
            ));
        }
        let list = out.entry(compression.to_string()).or_default();
        for n in names {
            let r = registry::Reference::parse(n)
                .map_err(|e| Error::Usage(format!("{n}: invalid image name: {e}")))?;
            if !list.contains(&r) {
                list.push(r);
            }
        }
    }
    Ok(out)
}

/// The configured size cap, applied once the build is done and its image delivered (the
/// image just built is the most recently used, so it is the last to go). A collection that
/// fails does not fail the build: it is reported as a warning.
fn collect_after_build(store: &Store, cap: u64, rep: &Reporter) {
    match crate::store::maintain::collect_over(store, cap) {
        Ok(None) => {}
        Ok(Some(r)) => {
            rep.info(&format!(
                "store over max_store_size: {}",
                super::pull::prune_summary(&r)
            ));
            if r.over_cap {
                rep.warn(&format!(
                    "tags and running builds alone hold {}, more than max_store_size",
                    crate::registry::human(r.kept_bytes)
                ));
            }
        }
        Err(e) => rep.warn(&format!("collecting the store failed: {e}")),
    }
}

/// The result on stdout: the image ID, or one flat JSON object of strings (Terraform's
/// `data "external"` accepts only that shape).
fn print_result(
    args: &BuildArgs,
    result: &BuildResult,
    image_id: &str,
    manifest: &Digest,
    pushed: &[registry::Pushed],
) {
    match args.format {
        // stdout stays the image ID alone; each push printed its digest on stderr.
        OutputFormat::Text => println!("{image_id}"),
        OutputFormat::Json => {
            let mut m = BTreeMap::new();
            m.insert("image_id", image_id.to_string());
            m.insert("config_digest", result.image.config.to_string());
            m.insert("manifest_digest", manifest.to_string());
            m.insert("tags", args.tags.join(","));
            m.insert("cache_key", result.cache_key.to_string());
            m.insert("all_cached", result.all_cached.to_string());
            if !pushed.is_empty() {
                m.insert("pushed", super::push::pushed_refs(pushed));
                m.insert("pushed_digest", pushed[0].digest.to_string());
            }
            m.insert(
                "steps_cached",
                format!(
                    "{}/{}",
                    result.steps.iter().filter(|s| s.cached).count(),
                    result.steps.len()
                ),
            );
            println!("{}", serde_json::to_string(&m).unwrap_or_default());
        }
    }
}

pub fn key(cli: &Cli, args: &BuildArgs, rep: &Reporter, cancel: &Cancel) -> Result<()> {
    let mut opts = options(cli, args)?;
    opts.registry.events = Some(rep.clone());
    let store = Store::open(&cli.store_root())?;
    let key = executor::key(&store, &opts, rep, cancel)?;
    match args.format {
        OutputFormat::Text => println!("{key}"),
        OutputFormat::Json => println!("{}", serde_json::json!({ "cache_key": key.to_string() })),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cairn_jobs_is_a_positive_number_or_unset() {
        assert_eq!(jobs(None).unwrap(), 0);
        assert_eq!(jobs(Some("")).unwrap(), 0);
        assert_eq!(jobs(Some("1")).unwrap(), 1);
        assert_eq!(jobs(Some(" 8 ")).unwrap(), 8);
        for bad in ["0", "-1", "many"] {
            let e = jobs(Some(bad)).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
            assert!(e.to_string().contains("CAIRN_JOBS"), "{e}");
        }
    }

    #[test]
    fn sizes_and_ulimits_as_docker_writes_them() {
        assert_eq!(size("--memory", "128m").unwrap(), 128 << 20);
        assert_eq!(size("--memory", "2G").unwrap(), 2 << 30);
        assert_eq!(size("--memory", "512kb").unwrap(), 512 << 10);
        assert_eq!(size("--memory", "1000").unwrap(), 1000);
        assert_eq!(size("--memory", "1000b").unwrap(), 1000);
        for bad in ["", "lots", "-1m", "0", "m"] {
            let e = size("--shm-size", bad).unwrap_err().to_string();
            assert!(e.contains("--shm-size"), "{bad}: {e}");
        }
        let u = ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        assert_eq!(ulimit("nproc=64").unwrap().hard, 64);
        assert_eq!(ulimit("core=-1").unwrap().soft, u64::MAX);
        assert!(ulimit("nofile=10:5").is_err());
        assert!(ulimit("nofile").is_err());
    }

    #[test]
    fn output_specs() {
        let gzip = OutputCompression {
            compression: Some(Compression::Gzip),
            ..Default::default()
        };
        assert_eq!(parse_output("type=docker").unwrap(), Output::Load);
        assert_eq!(
            parse_output("type=docker,dest=/tmp/x.tar").unwrap(),
            Output::DockerArchive("/tmp/x.tar".into(), OutputCompression::default())
        );
        assert_eq!(
            parse_output("type=oci,dest=out").unwrap(),
            Output::OciLayout("out".into(), gzip)
        );
        assert_eq!(
            parse_output(
                "type=oci,dest=out,compression=zstd,compression-level=19,force-compression=true"
            )
            .unwrap(),
            Output::OciLayout(
                "out".into(),
                OutputCompression {
                    compression: Some(Compression::Zstd),
                    level: Some(19),
                    force: true
                }
            )
        );
        assert_eq!(
            parse_output("type=docker,dest=x.tar,compression=gzip").unwrap(),
            Output::DockerArchive("x.tar".into(), gzip)
        );
        assert_eq!(
            parse_output("type=registry").unwrap(),
            Output::Registry {
                name: None,
                compression: Compression::Gzip
            }
        );
        assert_eq!(
            parse_output("type=image,name=r:5000/a:1,push=true,compression=zstd").unwrap(),
            Output::Registry {
                name: Some("r:5000/a:1".into()),
                compression: Compression::Zstd
            }
        );
        assert_eq!(
            parse_output("type=image,name=r:5000/a:1").unwrap(),
            Output::Load
        );
        assert!(parse_output("type=registry,push=maybe").is_err());
        assert!(parse_output("type=registry,name=UPPER:x:y").is_err());
        assert!(parse_output("type=registry,compression=lz4").is_err());
        assert!(parse_output("type=registry,bogus=1").is_err());
        assert!(parse_output("type=oci").is_err());
        assert!(parse_output("type=docker,bogus=1").is_err());
        let err = parse_output("type=oci,dest=o,compression=lz4").unwrap_err();
        assert!(
            err.to_string().contains("gzip, zstd or uncompressed"),
            "{err}"
        );
        assert!(parse_output("type=oci,dest=o,compression=gzip,compression-level=12").is_err());
    }

    #[test]
    fn a_push_only_fetches_layers_it_cannot_mount_or_must_recompress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = |name: &[u8], media_type: &str| crate::image::LayerDesc {
            digest: crate::Digest::of_bytes(name),
            size: 1,
            media_type: media_type.into(),
            diff_id: crate::Digest::of_bytes(b"diff"),
        };
        let cached = layer(b"cached", crate::layer::MEDIA_TYPE_TAR_ZSTD);
        let elsewhere = layer(b"elsewhere", crate::layer::MEDIA_TYPE_TAR_ZSTD);
        registry::remember_location(&store, &cached.digest, "reg:5000", "team/cache");
        registry::remember_location(&store, &elsewhere.digest, "other:5000", "x");
        let layers = vec![cached, elsewhere.clone()];
        let zstd = Output::Registry {
            name: None,
            compression: Compression::Zstd,
        };
        let mut targets = BTreeMap::new();
        targets.insert(
            "zstd".to_string(),
            vec![registry::Reference::parse("reg:5000/team/app:1").unwrap()],
        );
        let fetch = |outputs: &[Output], targets: &BTreeMap<_, _>| {
            layers_to_fetch(&store, outputs, targets, &layers)
        };
        assert_eq!(
            fetch(std::slice::from_ref(&zstd), &targets),
            vec![elsewhere]
        );
        // gzip needs the bytes to re-compress; a load needs every layer.
        let gzip = Output::Registry {
            name: None,
            compression: Compression::Gzip,
        };
        let mut gz_targets = targets.clone();
        gz_targets.insert("gzip".to_string(), targets["zstd"].clone());
        assert_eq!(fetch(&[gzip], &gz_targets), layers);
        assert_eq!(fetch(&[zstd, Output::Load], &targets), layers);
    }

    #[test]
    fn build_args_take_environment_when_bare() {
        std::env::set_var("CAIRN_TEST_BUILD_ARG", "from-env");
        let m = build_args(&[
            "A=1".into(),
            "CAIRN_TEST_BUILD_ARG".into(),
            "CAIRN_UNSET_XYZ".into(),
        ])
        .unwrap();
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            m.get("CAIRN_TEST_BUILD_ARG").map(String::as_str),
            Some("from-env")
        );
        assert!(!m.contains_key("CAIRN_UNSET_XYZ"));
        assert!(build_args(&["=x".into()]).is_err());
    }
}
