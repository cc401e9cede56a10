//! The command line: clap definitions (raw arguments) turned into validated options and
//! handed to library calls. No build logic lives here; this module only maps outcomes to
//! exit codes and output streams (results on stdout, logs on stderr).

mod build;
/// The `--output` spec parser, public for the fuzz targets.
pub use build::{parse_output, Output};
pub mod config;
mod doctor;
pub mod helper;
mod parse;
mod pull;
mod push;

use crate::error::{Error, ExitCode};
use crate::platform::Platform;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// cairn — build container images from Dockerfiles without a daemon.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, after_help = ExitCode::TABLE)]
pub struct Cli {
    /// Store directory (default: $XDG_CACHE_HOME/cairn).
    #[arg(long, global = true, env = "CAIRN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Registries to reach over plain HTTP (localhost and 127.0.0.0/8 always are).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    #[command(subcommand)]
    pub command: Command,

    /// Settings from the config file (filled in by [`main`]).
    #[arg(skip)]
    pub config: config::Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (flags as `docker build`).
    Build(BuildArgs),
    /// Print the final cache key of a build without building.
    Key(BuildArgs),
    /// Pull an image into the store and print its manifest digest.
    Pull(PullArgs),
    /// Push an image from the store to a registry and print REF@DIGEST.
    Push(PushArgs),
    /// Parse a Dockerfile and print its stages and instructions.
    Parse(ParseArgs),
    /// Print a stored image's manifest and config as JSON.
    Inspect(InspectArgs),
    /// Look after the store: list, measure, prune, verify.
    Cache(CacheArgs),
    /// Check that builds can work here (namespaces, ids, store, Docker) and say how to fix what is missing.
    Doctor,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// The pull policy for base images, as `--pull` and the config file's `pull` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Always re-resolve tags; fail when the registry is unreachable.
    Always,
    /// Re-resolve tags when the registry is reachable, else use the stored digest.
    #[default]
    Missing,
    /// Never open a network connection.
    Never,
}

impl From<PullPolicy> for crate::registry::PullPolicy {
    fn from(p: PullPolicy) -> Self {
        match p {
            PullPolicy::Always => crate::registry::PullPolicy::Always,
            PullPolicy::Missing => crate::registry::PullPolicy::Missing,
            PullPolicy::Never => crate::registry::PullPolicy::Never,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Progress {
    #[default]
    Auto,
    Plain,
    Tty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum NetworkArg {
    #[default]
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CompressionArg {
    Gzip,
    #[default]
    Zstd,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context directory, or `-` to read a Dockerfile from stdin with no context.
    #[arg(default_value = ".")]
    pub context: String,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name and optionally a tag (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Set a build-time variable (K=V, or K to take it from the environment).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage and what it needs, not the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Add a label to the image (K=V, repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Ignore cache hits (every step runs).
    #[arg(long)]
    pub no_cache: bool,
    /// When to contact the registry for base images (default: missing; `--pull` alone: always).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always")]
    pub pull: Option<PullPolicy>,
    /// Network mode for RUN steps.
    #[arg(long, value_enum, default_value_t = NetworkArg::Default)]
    pub network: NetworkArg,
    /// Memory limit of each RUN step (e.g. 512m, 2g).
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// Memory plus swap limit of each RUN step; -1 for unlimited swap (default: twice --memory).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU CFS quota of each RUN step, in microseconds per period.
    #[arg(long, value_name = "USEC", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period of each RUN step, in microseconds.
    #[arg(long, value_name = "USEC")]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight) of each RUN step.
    #[arg(short = 'c', long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CPUs RUN steps may use (0-3, 0,1).
    #[arg(long, value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    /// Size of /dev/shm in RUN steps (default 64m).
    #[arg(long, value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// Ulimit of RUN steps, `NAME=SOFT[:HARD]` (repeatable).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Let RUN steps' fsync, fdatasync, sync, syncfs and sync_file_range reach the disk. By
    /// default they return success at once: a step's files become a layer that cairn itself
    /// writes durably, and a step cut short is run again, so per-file syncs (dpkg makes one
    /// for every file it unpacks) only cost time.
    #[arg(long, env = "CAIRN_KEEP_FSYNC")]
    pub keep_fsync: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Ignore file to use instead of CONTEXT/.dockerignore (Coder drops dot-files).
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// Output: `type=docker,dest=FILE` | `type=oci,dest=DIR`, with
    /// `compression=gzip|zstd|uncompressed`, `compression-level=N`, `force-compression=true`;
    /// or a push: `type=registry[,name=REF][,compression=gzip|zstd]` |
    /// `type=image,name=REF,push=true` (default: --load).
    #[arg(short = 'o', long, value_name = "SPEC")]
    pub output: Vec<String>,
    /// Load the result into Docker (the default when no --output is given).
    #[arg(long)]
    pub load: bool,
    /// Push the image to the registry each -t names (as `-o type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Read step results from a registry cache: type=registry,ref=REGISTRY/NAME (repeatable;
    /// default: the config file's cache_from).
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Write step results to a registry cache:
    /// `type=registry,ref=REGISTRY/NAME[,mode=min|max][,ignore-error=true|false]`
    /// (repeatable; default: the config file's cache_to).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Print only the image ID on stdout.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print each step's cache key, hit or miss, and what changed for a miss.
    #[arg(long)]
    pub explain: bool,
    /// Result format on stdout: text (the image ID) or one flat JSON object.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Compression of new layers in the store and outputs.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// A secret for `RUN --mount=type=secret`: id=ID,src=FILE or id=ID,env=VAR (repeatable).
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: default ($SSH_AUTH_SOCK) or ID=SOCKET.
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    pub ssh: Vec<String>,
    /// Grant an entitlement: network.host (RUN --network=host), security.insecure.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. ubuntu:24.04 or 127.0.0.1:5000/base@sha256:... (parsed and
    /// normalised here: a malformed one is a usage error before anything runs).
    pub reference: crate::registry::Reference,
    #[arg(long)]
    pub platform: Option<Platform>,
    /// When to contact the registry: `missing` re-resolves tags when the registry answers and
    /// falls back to the stored digest when it does not; `always` fails instead; `never`
    /// opens no connection.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always")]
    pub pull: Option<PullPolicy>,
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image: a tag a build wrote (`-t`), a pulled reference, or a manifest digest.
    pub image: String,
    /// Where to push it (default: IMAGE itself), e.g. registry.internal:5000/team/app:1.
    pub destination: Option<String>,
    /// Layer compression in the registry: gzip (what every reader takes), zstd or none;
    /// layers stored otherwise are re-compressed.
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd|none")]
    pub compression: String,
    /// Platform to push when IMAGE is a pulled multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Result format on stdout: text (REF@DIGEST) or one flat JSON object.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Dockerfile to parse.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A reference or manifest digest already in the store.
    pub reference: String,
    #[arg(long)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List stored images, cache entries and blobs with sizes.
    Ls,
    /// Print the store's disk usage by kind.
    Du,
    /// Remove what no cache entry or tag references (and old entries with --keep-duration,
    /// least recently used ones beyond --max-size).
    Prune {
        /// Keep cache entries used within this duration (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION")]
        keep_duration: Option<String>,
        /// Evict least recently used cache entries until blobs and unpacked layers fit in
        /// this size (e.g. 20GB, 512MiB); tags and running builds are never evicted.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Remove everything.
        #[arg(long)]
        all: bool,
        /// Prune the cache entries in this registry repository (a --cache-to ref) instead of
        /// the store: those written before --keep-duration, or all with --all.
        #[arg(long, value_name = "REGISTRY/NAME")]
        registry: Option<String>,
        /// Remove only the RUN cache mounts (`--mount=type=cache`), nothing else.
        #[arg(long, conflicts_with_all = ["all", "keep_duration", "max_size", "registry"])]
        mounts: bool,
    },
    /// Re-hash every blob, re-check unpacked layer directories, and report bad ones.
    Verify {
        /// Remove bad blobs, the cache entries that reference them, and unpacked layer
        /// directories that differ from their layer (the next build unpacks them again).
        #[arg(long)]
        repair: bool,
    },
}

impl Cli {
    /// The target platform of `build`, `key`, `pull` and `inspect` alike: the `--platform`
    /// flag, else the config file's `platform`, else the host's (as `docker build` and
    /// `docker pull` default), so a `cairn pull` finds what a later `--pull=never` build
    /// looks for.
    pub fn platform(&self, flag: Option<&Platform>) -> Platform {
        choose_platform(flag, self.config.platform.as_ref(), Platform::host())
    }

    /// The pull policy: the `--pull` flag, else the config file's `pull`, else `missing`.
    pub fn pull_policy(&self, flag: Option<PullPolicy>) -> crate::registry::PullPolicy {
        flag.or(self.config.pull).unwrap_or_default().into()
    }

    /// The store root: `--root`, `CAIRN_ROOT`, the config file's `root`, else
    /// `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`.
    pub fn store_root(&self) -> PathBuf {
        if let Some(r) = self.root.as_ref().or(self.config.root.as_ref()) {
            return r.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"));
        base.join("cairn")
    }
}

/// Flag over config file over host.
fn choose_platform(flag: Option<&Platform>, config: Option<&Platform>, host: Platform) -> Platform {
    flag.or(config).cloned().unwrap_or(host)
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.config = match config::Config::load() {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    cli.insecure_registries
        .extend(cli.config.insecure_registries.iter().cloned());
    // Build and key report through one sink, which also shows the signal note and the
    // error (the failed step's output on a terminal, an event in JSON mode).
    let rep = match &cli.command {
        Command::Build(args) | Command::Key(args) => Some(build::reporter(args)),
        _ => None,
    };
    // The token this process's build stops on; the signal handler owns the cancelling.
    let cancel = crate::executor::Cancel::new();
    if matches!(
        cli.command,
        Command::Build(_) | Command::Key(_) | Command::Pull(_)
    ) {
        watch_signals(cancel.clone(), rep.clone());
    }
    let result = match (&cli.command, &rep) {
        (Command::Build(args), Some(rep)) => build::build(&cli, args, rep, &cancel),
        (Command::Key(args), Some(rep)) => build::key(&cli, args, rep, &cancel),
        (Command::Build(_) | Command::Key(_), None) => unreachable!("a reporter is made above"),
        (Command::Pull(args), _) => pull::pull(&cli, args),
        (Command::Push(args), _) => push::push(&cli, args),
        (Command::Parse(args), _) => parse::parse(args),
        (Command::Inspect(args), _) => pull::inspect(&cli, args),
        (Command::Cache(args), _) => pull::cache(&cli, args),
        (Command::Doctor, _) => doctor::doctor(&cli.store_root()),
        (Command::Completions { shell }, _) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "cairn", &mut std::io::stdout());
            Ok(())
        }
        (Command::Man, _) => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("cannot write the man page", e)),
    };
    match (result, rep) {
        (Ok(()), rep) => {
            if let Some(rep) = rep {
                rep.close();
            }
            std::process::ExitCode::SUCCESS
        }
        (Err(e), rep) => conclude(rep.as_ref(), &e),
    }
}

/// Ends a failed command: the sink shows the error its way (the failed step's output on
/// a terminal, the last event in JSON mode), then `cairn: error: …` unless stderr is JSON.
fn conclude(rep: Option<&crate::events::Reporter>, e: &Error) -> std::process::ExitCode {
    if let Some(rep) = rep {
        rep.fail(e);
        if rep.mode() == crate::events::Mode::Json {
            return std::process::ExitCode::from(e.exit_code() as u8);
        }
    }
    report(e)
}

/// Exits with the interrupted code at once, after giving the sink a moment to take the
/// live view off the terminal and say why (it cannot hold the exit up).
fn exit_interrupted(rep: Option<crate::events::Reporter>) -> ! {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        conclude(rep.as_ref(), &Error::Interrupted);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
    std::process::exit(ExitCode::Interrupted as i32);
}

/// SIGINT/SIGTERM: stop the running step (its whole PID namespace), let the build unwind
/// and clean up, and exit with the interrupted code. A second signal, or a build that does
/// not unwind within ten seconds, exits at once (the store stays consistent: it only ever
/// renames complete files into place, and cleans temporary ones on the next open).
fn watch_signals(cancel: crate::executor::Cancel, rep: Option<crate::events::Reporter>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            cancel.cancel();
            if seen > 1 {
                exit_interrupted(rep.clone());
            }
            let note = format!(
                "cairn: {} received: stopping the build",
                if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
            );
            match &rep {
                Some(rep) => rep.info(&note),
                None => eprintln!("{note}"),
            }
            let rep = rep.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(10));
                exit_interrupted(rep);
            });
        }
    });
}

/// Prints an error on stderr (`cairn: error: ...`) and returns its exit code.
pub fn report(e: &Error) -> std::process::ExitCode {
    eprintln!("cairn: error: {e}");
    std::process::ExitCode::from(e.exit_code() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_is_flag_then_config_then_host() {
        let (amd, arm, s390) = (
            Platform::new("linux", "amd64", None),
            Platform::new("linux", "arm64", None),
            Platform::new("linux", "s390x", None),
        );
        assert_eq!(choose_platform(Some(&amd), Some(&arm), s390.clone()), amd);
        assert_eq!(choose_platform(None, Some(&arm), s390.clone()), arm);
        assert_eq!(choose_platform(None, None, s390.clone()), s390);
    }

    #[test]
    fn every_command_defaults_to_the_same_platform_and_policy() {
        let mut cli = Cli::parse_from(["cairn", "pull", "x"]);
        assert_eq!(
            cli.platform(None),
            Platform::host(),
            "pull defaults to the host"
        );
        assert_eq!(cli.pull_policy(None), crate::registry::PullPolicy::Missing);
        cli.config.platform = Some(Platform::new("linux", "arm64", None));
        cli.config.pull = Some(PullPolicy::Never);
        assert_eq!(cli.platform(None), Platform::new("linux", "arm64", None));
        assert_eq!(cli.pull_policy(None), crate::registry::PullPolicy::Never);
        assert_eq!(
            cli.pull_policy(Some(PullPolicy::Always)),
            crate::registry::PullPolicy::Always
        );
        let Command::Pull(args) =
            &Cli::parse_from(["cairn", "pull", "--platform", "linux/arm64", "x"]).command
        else {
            panic!("a pull command")
        };
        assert_eq!(args.platform, Some(Platform::new("linux", "arm64", None)));
        assert!(Cli::try_parse_from(["cairn", "pull", "--platform", "linux", "x"]).is_err());
    }
}
