//! [`Reporter`]: the one sink for everything a build tells the user — step start, end,
//! cache hit and why a step missed, the output of a running step, byte progress of pulls,
//! layer writes, loads and pushes, warnings, errors and the closing summary. Every module
//! reports through it, so `--progress=json` really is one JSON event per stderr line and
//! the terminal view sees every byte it has to draw around.
//!
//! Four renderings of the same [`Event`]s: `plain` (one line per event, no escape
//! sequences, no carriage returns: what Terraform's `local-exec` and Coder read line by
//! line), `json` (one object per line), `tty` (a live view in the spirit of BuildKit's,
//! drawn by indicatif in `events/tty.rs`) and `quiet`. Results never go here: stdout
//! carries only the image ID or the `--format json` object.

mod human;
mod transfer;
mod tty;

pub use transfer::Transfer;

use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Human-readable lines, no escape sequences.
    Plain,
    /// The live terminal view (plain lines with step timings when stderr is no terminal).
    Tty,
    /// One JSON object per line.
    Json,
    /// Nothing but errors.
    Quiet,
}

impl Mode {
    /// `auto`: the live view when stderr is a terminal, `TERM` is not `dumb` and `NO_COLOR`
    /// is unset; plain lines otherwise.
    pub fn auto() -> Mode {
        Mode::detect_from(
            std::io::stderr().is_terminal(),
            std::env::var("TERM").ok().as_deref(),
            no_color(),
        )
    }

    /// The decision behind [`Mode::auto`], without the environment. `NO_COLOR` asks for
    /// output without escape sequences, which the live view cannot honour (it moves the
    /// cursor), so it picks plain lines; `--progress=tty` still draws the view, uncoloured.
    pub fn detect_from(stderr_is_terminal: bool, term: Option<&str>, no_color: bool) -> Mode {
        match (stderr_is_terminal, term) {
            (false, _) | (_, Some("dumb")) => Mode::Plain,
            _ if no_color => Mode::Plain,
            _ => Mode::Tty,
        }
    }
}

/// `NO_COLOR` set to anything but the empty string (<https://no-color.org>).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// What the live view draws: how many output lines of a running step, and whether in colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtyOptions {
    /// Last lines of output shown under each running step.
    pub log_lines: usize,
    /// Colour (off with `NO_COLOR`).
    pub color: bool,
}

impl TtyOptions {
    /// Lines shown per running step when `CAIRN_TTY_LOG_LINES` does not say.
    pub const DEFAULT_LOG_LINES: usize = 6;

    /// From `CAIRN_TTY_LOG_LINES` (a number; 0 hides step output) and `NO_COLOR`.
    pub fn from_env() -> TtyOptions {
        TtyOptions::from_values(
            std::env::var("CAIRN_TTY_LOG_LINES").ok().as_deref(),
            no_color(),
        )
    }

    /// [`TtyOptions::from_env`] without the environment; a value that is no number (or
    /// an absurd one) falls back to the default rather than failing a build.
    pub fn from_values(log_lines: Option<&str>, no_color: bool) -> TtyOptions {
        let log_lines = log_lines
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n <= 100)
            .unwrap_or(Self::DEFAULT_LOG_LINES);
        TtyOptions {
            log_lines,
            color: !no_color,
        }
    }
}

impl Default for TtyOptions {
    fn default() -> Self {
        TtyOptions {
            log_lines: Self::DEFAULT_LOG_LINES,
            color: true,
        }
    }
}

/// What moves bytes: each has its own line in the view and its own total in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// A base image blob from a registry.
    Pull,
    /// A new layer being written into the store.
    Layer,
    /// The image archive streamed into Docker.
    Load,
    /// A blob sent to a registry.
    Push,
    /// An `ADD <url>` source fetched.
    Download,
}

impl TransferKind {
    /// The verb while it runs and once it is done (`pulling` / `pulled `, aligned).
    fn verbs(self) -> (&'static str, &'static str) {
        match self {
            TransferKind::Pull => ("pulling", "pulled "),
            TransferKind::Layer => ("writing layer", "wrote layer"),
            TransferKind::Load => ("loading", "loaded "),
            TransferKind::Push => ("pushing", "pushed "),
            TransferKind::Download => ("downloading", "downloaded "),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Progress,
    Done,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A step is about to be looked up / run.
    Step {
        step: usize,
        total: usize,
        stage: &'a str,
        text: &'a str,
        key: &'a str,
        cached: bool,
    },
    /// Why a step missed the cache, compared with the last build of this Dockerfile.
    Explain { step: usize, reasons: &'a [String] },
    /// Output of a running step.
    Output { step: usize, line: &'a str },
    /// A step finished.
    Done {
        step: usize,
        seconds: f64,
        stages: &'a [(String, f64)],
    },
    /// A running step was stopped because a step of another stage failed (BuildKit's
    /// `CANCELED`); that failure is told by `error`. A step the user interrupts is the
    /// failure itself, and says nothing here.
    Canceled { step: usize },
    /// A general message (resolving a base, waiting for a lock, loading).
    Info { message: &'a str },
    /// Something the user should know that does not stop the build.
    Warning { message: &'a str },
    /// Bytes moving: a pull, a layer write, a load or a push. `progress` events are sent
    /// at most once a second per transfer.
    Transfer {
        kind: TransferKind,
        id: &'a str,
        phase: Phase,
        bytes: u64,
        total: Option<u64>,
        seconds: f64,
    },
    /// Where the image went (`docker`, an archive path, an OCI layout).
    Exported { dest: &'a str },
    /// The build finished.
    Finished {
        image_id: &'a str,
        cache_key: &'a str,
        all_cached: bool,
    },
    /// The closing tally, sent after `finished`.
    Summary {
        steps: usize,
        cached: usize,
        seconds: f64,
        pulled: u64,
        written: u64,
        loaded: u64,
        pushed: u64,
        downloaded: u64,
    },
    /// The build failed; the same message follows on the last line as `cairn: error:`
    /// except in JSON mode, where this is the last line.
    Error { message: &'a str, exit_code: u8 },
}

/// Counts for the closing summary.
#[derive(Debug, Default)]
struct Tally {
    steps: usize,
    cached: usize,
    dests: Vec<String>,
}

struct Inner {
    mode: Mode,
    explain: bool,
    view: Option<tty::View>,
    /// Where lines go when there is no live view (stderr, or a buffer in tests).
    out: Mutex<Box<dyn Write + Send>>,
    tally: Mutex<Tally>,
    bytes: [AtomicU64; 5],
    started: Instant,
}

/// Sends events to stderr in the chosen [`Mode`]. Cheap to clone (the clones share one
/// sink), and shareable across threads: pulls report from several at once.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("mode", &self.inner.mode)
            .field("explain", &self.inner.explain)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter on stderr; the live view takes its options from the environment.
    pub fn new(mode: Mode, explain: bool) -> Reporter {
        Reporter::with_options(mode, explain, TtyOptions::from_env())
    }

    /// A reporter on stderr with explicit live-view options. `Tty` draws the live view
    /// only when stderr is a terminal; otherwise it writes plain lines with step timings.
    pub fn with_options(mode: Mode, explain: bool, tty: TtyOptions) -> Reporter {
        let view = (mode == Mode::Tty && std::io::stderr().is_terminal())
            .then(|| tty::View::new(tty, explain));
        Reporter::build(mode, explain, view, Box::new(std::io::stderr()))
    }

    /// A reporter writing its lines into `out` (for tests of the plain and JSON forms).
    pub fn to_writer(mode: Mode, explain: bool, out: Box<dyn Write + Send>) -> Reporter {
        Reporter::build(mode, explain, None, out)
    }

    /// A reporter that shows nothing.
    pub fn quiet() -> Reporter {
        Reporter::to_writer(Mode::Quiet, false, Box::new(std::io::sink()))
    }

    fn build(
        mode: Mode,
        explain: bool,
        view: Option<tty::View>,
        out: Box<dyn Write + Send>,
    ) -> Reporter {
        Reporter {
            inner: Arc::new(Inner {
                mode,
                explain,
                view,
                out: Mutex::new(out),
                tally: Mutex::new(Tally::default()),
                bytes: Default::default(),
                started: Instant::now(),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Whether `--explain` asked for keys, reasons and where hits came from.
    pub fn explaining(&self) -> bool {
        self.inner.explain
    }

    /// Whether the live view is drawing (so nothing else may write to stderr).
    pub fn is_live(&self) -> bool {
        self.inner.view.is_some()
    }

    /// Emits one event.
    pub fn emit(&self, ev: &Event<'_>) {
        self.count(ev);
        if let Some(view) = &self.inner.view {
            view.event(ev);
            if let Event::Finished { image_id, .. } = ev {
                view.summary(&self.summary_lines(image_id));
            }
            return;
        }
        // The event's lines are rendered first and written with one call: stderr is
        // unbuffered, and a formatted line would otherwise reach it in pieces (a dozen
        // system calls per line, and lines another writer to the same pipe could split).
        let mut buf = Vec::with_capacity(128);
        let _ = match self.inner.mode {
            Mode::Quiet => Ok(()),
            Mode::Json => json_line(&mut buf, ev, self.inner.started.elapsed()),
            Mode::Plain | Mode::Tty => human::write(
                &mut buf,
                ev,
                self.inner.mode == Mode::Tty,
                self.inner.explain,
            ),
        };
        if let (Mode::Json, Event::Finished { .. }) = (self.inner.mode, ev) {
            let _ = json_line(
                &mut buf,
                &self.summary_event(),
                self.inner.started.elapsed(),
            );
        }
        if buf.is_empty() {
            return;
        }
        let mut out = self.inner.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stderr must not fail the build; the result is on stdout.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
    }

    /// Emits an info line.
    pub fn info(&self, message: &str) {
        self.emit(&Event::Info { message });
    }

    /// Emits a warning (shown as `warning: …` in plain lines).
    pub fn warn(&self, message: &str) {
        self.emit(&Event::Warning { message });
    }

    /// Records where the image went, for the summary.
    pub fn exported(&self, dest: &str) {
        self.emit(&Event::Exported { dest });
    }

    /// Reports a failed build: the live view prints the failed step's output (bounded,
    /// with the path of a log holding all of it) and goes away; JSON mode writes the error
    /// event. The caller still prints `cairn: error: …` (except in JSON mode).
    pub fn fail(&self, e: &crate::Error) {
        let message = e.to_string();
        self.emit(&Event::Error {
            message: &message,
            exit_code: e.exit_code() as u8,
        });
    }

    /// The command is over: steps still drawn as running (a `cairn key` never runs them)
    /// collapse to one line each and the live area goes.
    pub fn close(&self) {
        if let Some(view) = &self.inner.view {
            view.close();
        }
    }

    /// Starts a byte transfer of `total` bytes (when known) named `id`.
    pub fn transfer(&self, kind: TransferKind, id: &str, total: Option<u64>) -> Transfer {
        let bar = self
            .inner
            .view
            .as_ref()
            .map(|v| v.transfer(kind, id, total));
        Transfer::start(self.clone(), kind, id, total, bar)
    }

    fn count(&self, ev: &Event<'_>) {
        let mut t = self.inner.tally.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Step { cached, .. } => {
                t.steps += 1;
                t.cached += usize::from(*cached);
            }
            Event::Exported { dest } => t.dests.push(dest.to_string()),
            _ => {}
        }
    }

    fn bytes(&self, kind: TransferKind) -> u64 {
        self.inner.bytes[kind.index()].load(Ordering::Relaxed)
    }

    fn summary_event(&self) -> Event<'static> {
        let t = self.inner.tally.lock().unwrap_or_else(|p| p.into_inner());
        Event::Summary {
            steps: t.steps,
            cached: t.cached,
            seconds: secs(self.inner.started.elapsed()),
            pulled: self.bytes(TransferKind::Pull),
            written: self.bytes(TransferKind::Layer),
            loaded: self.bytes(TransferKind::Load),
            pushed: self.bytes(TransferKind::Push),
            downloaded: self.bytes(TransferKind::Download),
        }
    }

    /// The closing summary of the live view, one line per fact.
    fn summary_lines(&self, image_id: &str) -> Vec<String> {
        let t = self.inner.tally.lock().unwrap_or_else(|p| p.into_inner());
        human::summary(&human::SummaryFacts {
            steps: t.steps,
            cached: t.cached,
            seconds: secs(self.inner.started.elapsed()),
            bytes: [
                ("pulled", self.bytes(TransferKind::Pull)),
                ("written", self.bytes(TransferKind::Layer)),
                ("loaded", self.bytes(TransferKind::Load)),
                ("pushed", self.bytes(TransferKind::Push)),
                ("downloaded", self.bytes(TransferKind::Download)),
            ],
            image_id,
            dests: &t.dests,
        })
    }
}

/// An event as a JSON line carries when it happened: seconds since the reporter started
/// (steps of parallel stages interleave; this says which overlapped).
#[derive(Serialize)]
struct Stamped<'e, 'a> {
    #[serde(flatten)]
    event: &'e Event<'a>,
    time: f64,
}

fn json_line(w: &mut dyn Write, ev: &Event<'_>, time: Duration) -> std::io::Result<()> {
    let stamped = Stamped {
        event: ev,
        time: secs(time),
    };
    let mut line = serde_json::to_vec(&stamped).map_err(std::io::Error::from)?;
    line.push(b'\n');
    // One write per line, so lines from several threads never interleave.
    w.write_all(&line)
}

/// Seconds as f64 with millisecond precision, for events.
pub fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// A byte count for people, in IEC units (`512 B`, `1.5 KiB`, `3.2 MiB`), as every cairn
/// command prints sizes (indicatif's byte keys use the same units).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests;
