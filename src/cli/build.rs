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
use crate::sandbox::Network;
use crate::store::Store;
use crate::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Load,
    DockerArchive(PathBuf, OutputCompression),
    OciLayout(PathBuf, OutputCompression),
}

/// Parses `type=docker,dest=FILE` / `type=oci,dest=DIR` (and a bare path, as docker takes it),
/// with BuildKit's `compression=`, `compression-level=` and `force-compression=`. OCI
/// layouts default to gzip layers, which every reader takes; docker-archives to the
/// layers as stored, zstd ones as plain tar, which every engine loads.
pub fn parse_output(spec: &str) -> Result<Output> {
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
        // Decided once here: every step, layer and unpack of the build uses this one.
        privilege: crate::userns::Privilege::detect(),
    })
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
    if outputs.is_empty() || (args.load && !outputs.contains(&Output::Load)) {
        outputs.push(Output::Load);
    }
    for t in &args.tags {
        registry::Reference::parse(t)
            .map_err(|e| Error::Usage(format!("-t {t}: invalid image name: {e}")))?;
    }
    let mut opts = options(cli, args)?;
    opts.registry.events = Some(rep.clone());
    let plain = Store::open(&cli.store_root())?;
    // Everything this build uses stays pinned against collections until it is done.
    let store = plain.leased();
    let result = executor::build(&store, &opts, rep, cancel)?;
    let mut image_id = result.image_id().to_string();
    // The manifest as the first archive or layout holds it (its layers may be compressed
    // otherwise than in the store), else as stored.
    let mut manifest = None;
    for out in &outputs {
        let written = match out {
            Output::Load => {
                // scripts/lib/bench.py times the load from this line.
                rep.info("loading the image into Docker");
                image_id =
                    crate::export::docker_load_reporting(&store, &result.image, &args.tags, rep)?;
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
    print_result(args, &result, &image_id, &manifest);
    Ok(())
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
fn print_result(args: &BuildArgs, result: &BuildResult, image_id: &str, manifest: &Digest) {
    match args.format {
        OutputFormat::Text => println!("{image_id}"),
        OutputFormat::Json => {
            let mut m = BTreeMap::new();
            m.insert("image_id", image_id.to_string());
            m.insert("config_digest", result.image.config.to_string());
            m.insert("manifest_digest", manifest.to_string());
            m.insert("tags", args.tags.join(","));
            m.insert("cache_key", result.cache_key.to_string());
            m.insert("all_cached", result.all_cached.to_string());
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
        assert!(parse_output("type=registry").is_err());
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
