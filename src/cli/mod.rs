//! The command line: clap definitions (raw arguments) turned into validated options and
//! handed to library calls. No build logic lives here; this module only maps outcomes to
//! exit codes and output streams (results on stdout, logs on stderr).

mod build;
pub mod config;
mod doctor;
pub mod helper;
mod parse;
mod pull;

use crate::error::{Error, ExitCode};
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

/// The pull policy for base images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PullPolicy {
    /// Always re-resolve tags; fail when the registry is unreachable.
    Always,
    /// Re-resolve tags when the registry is reachable, else use the stored digest.
    #[default]
    Missing,
    /// Never open a network connection.
    Never,
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
    pub platform: Option<String>,
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
    /// Ulimit of RUN steps, NAME=SOFT[:HARD] (repeatable).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Ignore file to use instead of CONTEXT/.dockerignore (Coder drops dot-files).
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// Output: type=docker,dest=FILE | type=oci,dest=DIR (default: --load).
    #[arg(short = 'o', long, value_name = "SPEC")]
    pub output: Vec<String>,
    /// Load the result into Docker (the default when no --output is given).
    #[arg(long)]
    pub load: bool,
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
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. ubuntu:24.04 or 127.0.0.1:5000/base@sha256:...
    pub reference: String,
    #[arg(long)]
    pub platform: Option<String>,
    /// When to contact the registry: `missing` re-resolves tags when the registry answers and
    /// falls back to the stored digest when it does not; `always` fails instead; `never`
    /// opens no connection.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, num_args = 0..=1, default_missing_value = "always")]
    pub pull: PullPolicy,
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
    pub platform: Option<String>,
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
    /// Remove what no cache entry or tag references (and old entries with --keep-duration).
    Prune {
        /// Keep cache entries used within this duration (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION")]
        keep_duration: Option<String>,
        /// Remove everything.
        #[arg(long)]
        all: bool,
    },
    /// Re-hash every blob and report bad ones.
    Verify {
        /// Remove bad blobs and the cache entries that reference them.
        #[arg(long)]
        repair: bool,
    },
}

impl Cli {
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

/// Runs the CLI and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.config = match config::Config::load() {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    cli.insecure_registries
        .extend(cli.config.insecure_registries.iter().cloned());
    // The token this process's build stops on; the signal handler owns the cancelling.
    let cancel = crate::executor::Cancel::new();
    if matches!(
        cli.command,
        Command::Build(_) | Command::Key(_) | Command::Pull(_)
    ) {
        watch_signals(cancel.clone());
    }
    let result = match &cli.command {
        Command::Build(args) => build::build(&cli, args, &cancel),
        Command::Key(args) => build::key(&cli, args, &cancel),
        Command::Pull(args) => pull::pull(&cli, args),
        Command::Parse(args) => parse::parse(args),
        Command::Inspect(args) => pull::inspect(&cli, args),
        Command::Cache(args) => pull::cache(&cli, args),
        Command::Doctor => doctor::doctor(&cli.store_root()),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "cairn", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("cannot write the man page", e)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// SIGINT/SIGTERM: stop the running step (its whole PID namespace), let the build unwind
/// and clean up, and exit with the interrupted code. A second signal, or a build that does
/// not unwind within ten seconds, exits at once (the store stays consistent: it only ever
/// renames complete files into place, and cleans temporary ones on the next open).
fn watch_signals(cancel: crate::executor::Cancel) {
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
                std::process::exit(ExitCode::Interrupted as i32);
            }
            eprintln!(
                "cairn: {} received: stopping the build",
                if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
            );
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(10));
                std::process::exit(ExitCode::Interrupted as i32);
            });
        }
    });
}

/// Prints an error on stderr (`cairn: error: ...`) and returns its exit code.
pub fn report(e: &Error) -> std::process::ExitCode {
    eprintln!("cairn: error: {e}");
    std::process::ExitCode::from(e.exit_code() as u8)
}
