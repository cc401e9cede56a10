//! `cairn build` and `cairn key`: raw `docker build`-style flags turned into validated
//! [`BuildOptions`], the executor called, and the result handed to Docker or written out.
//! Results go to stdout (the image ID, or one flat JSON object with `--format json`); logs
//! go to stderr.

use super::{BuildArgs, Cli, CompressionArg, NetworkArg, OutputFormat, Progress, PullPolicy};
use crate::error::{Error, Result};
use crate::executor::{self, BuildOptions, BuildResult, Cancel, Mode, Reporter};
use crate::layer::Compression;
use crate::registry::{self, RegistryOptions};
use crate::sandbox::Network;
use crate::store::Store;
use crate::Platform;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Load,
    DockerArchive(PathBuf),
    OciLayout(PathBuf),
}

/// Parses `type=docker,dest=FILE` / `type=oci,dest=DIR` (and a bare path, as docker takes it).
pub fn parse_output(spec: &str) -> Result<Output> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some((k, _)) => {
                return Err(Error::Usage(format!(
                    "--output {spec}: unknown key {k:?} (expected type=, dest=)"
                )))
            }
            None if kind.is_none() && !part.is_empty() => {
                return Ok(Output::DockerArchive(PathBuf::from(part)));
            }
            None => {
                return Err(Error::Usage(format!(
                    "--output {spec}: expected type=...,dest=..."
                )))
            }
        }
    }
    match (kind.as_deref(), dest) {
        (Some("docker"), None) => Ok(Output::Load),
        (Some("docker") | Some("tar"), Some(d)) => Ok(Output::DockerArchive(d)),
        (Some("oci"), Some(d)) => Ok(Output::OciLayout(d)),
        (Some("oci"), None) => Err(Error::Usage(format!(
            "--output {spec}: type=oci needs dest=DIR"
        ))),
        (Some(other), _) => Err(Error::Usage(format!(
            "--output {spec}: unsupported type {other:?} (cairn writes type=docker and type=oci)"
        ))),
        (None, _) => Err(Error::Usage(format!("--output {spec}: missing type="))),
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
        let file = args.file.clone().unwrap_or_else(|| ctx.join("Dockerfile"));
        let text = executor::frontend::read_dockerfile(&file)?;
        (Some(ctx), file, text)
    };
    let platform = match &args.platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| Error::Usage(e.to_string()))?,
        None => Platform::host(),
    };
    let labels = args
        .labels
        .iter()
        .map(|l| key_value("--label", l))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(v.parse::<i64>().map_err(|_| {
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
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        platform,
        labels,
        no_cache: args.no_cache,
        pull: match (args.pull, cli.config.pull.as_deref()) {
            (Some(PullPolicy::Always), _) | (None, Some("always")) => registry::PullPolicy::Always,
            (Some(PullPolicy::Never), _) | (None, Some("never")) => registry::PullPolicy::Never,
            _ => registry::PullPolicy::Missing,
        },
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
            // Plain "pulling…" lines would break the one-object-per-line JSON stream.
            quiet: args.quiet || args.progress == Progress::Json,
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

fn reporter(args: &BuildArgs) -> Reporter {
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
    Reporter::new(mode, args.explain)
}

pub fn build(cli: &Cli, args: &BuildArgs, cancel: &Cancel) -> Result<()> {
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
    let opts = options(cli, args)?;
    let store = Store::open(&cli.store_root())?;
    let rep = reporter(args);
    let result = executor::build(&store, &opts, &rep, cancel)?;
    let mut image_id = result.image_id().to_string();
    for out in &outputs {
        match out {
            Output::Load => {
                rep.info("loading the image into Docker");
                image_id = crate::export::docker_load(&store, &result.image, &args.tags)?;
            }
            Output::DockerArchive(dest) => {
                let f = std::fs::File::create(dest).map_err(|e| Error::Input {
                    what: format!("cannot create {}", dest.display()),
                    source: e,
                })?;
                crate::export::write_docker_archive(
                    &store,
                    &result.image,
                    &args.tags,
                    std::io::BufWriter::new(f),
                )?;
            }
            Output::OciLayout(dest) => {
                crate::export::write_oci_layout(&store, &result.image, &args.tags, dest)?;
            }
        }
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &image_id).map_err(|e| Error::Input {
            what: format!("cannot write {}", f.display()),
            source: e,
        })?;
    }
    rep.emit(&executor::Event::Finished {
        image_id: &image_id,
        cache_key: &result.cache_key.to_string(),
        all_cached: result.all_cached,
    });
    print_result(args, &result, &image_id);
    Ok(())
}

/// The result on stdout: the image ID, or one flat JSON object of strings (Terraform's
/// `data "external"` accepts only that shape).
fn print_result(args: &BuildArgs, result: &BuildResult, image_id: &str) {
    match args.format {
        OutputFormat::Text => println!("{image_id}"),
        OutputFormat::Json => {
            let mut m = BTreeMap::new();
            m.insert("image_id", image_id.to_string());
            m.insert("config_digest", result.image.config.to_string());
            m.insert("manifest_digest", result.image.manifest.to_string());
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

pub fn key(cli: &Cli, args: &BuildArgs, cancel: &Cancel) -> Result<()> {
    let opts = options(cli, args)?;
    let store = Store::open(&cli.store_root())?;
    let rep = reporter(args);
    let key = executor::key(&store, &opts, &rep, cancel)?;
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
    fn output_specs() {
        assert_eq!(parse_output("type=docker").unwrap(), Output::Load);
        assert_eq!(
            parse_output("type=docker,dest=/tmp/x.tar").unwrap(),
            Output::DockerArchive("/tmp/x.tar".into())
        );
        assert_eq!(
            parse_output("type=oci,dest=out").unwrap(),
            Output::OciLayout("out".into())
        );
        assert!(parse_output("type=registry").is_err());
        assert!(parse_output("type=oci").is_err());
        assert!(parse_output("type=docker,bogus=1").is_err());
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
