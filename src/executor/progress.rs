//! [`Reporter`]: where build events go. Plain mode writes ANSI-free lines to stderr (what
//! Terraform's `local-exec` captures line by line); JSON mode writes one event object per
//! line; TTY mode adds per-step timings on an interactive terminal. Results never go here:
//! stdout carries only the image ID or the `--format json` object.

use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Human-readable lines, no escape sequences.
    Plain,
    /// Human-readable, for a terminal (same lines; timings aligned).
    Tty,
    /// One JSON object per line.
    Json,
    /// Nothing but errors.
    Quiet,
}

impl Mode {
    /// `auto`: TTY when stderr is a terminal, plain otherwise.
    pub fn auto() -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
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
    /// A general message (pulling, loading, warnings).
    Info { message: &'a str },
    /// The build finished.
    Finished {
        image_id: &'a str,
        cache_key: &'a str,
        all_cached: bool,
    },
}

/// Sends events to stderr in the chosen [`Mode`].
pub struct Reporter {
    mode: Mode,
    explain: bool,
}

impl Reporter {
    pub fn new(mode: Mode, explain: bool) -> Reporter {
        Reporter { mode, explain }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether `--explain` asked for keys and reasons.
    pub fn explaining(&self) -> bool {
        self.explain
    }

    /// Emits one event.
    pub fn emit(&self, ev: &Event<'_>) {
        let mut err = std::io::stderr().lock();
        // A closed stderr must not fail the build; the result is on stdout.
        let _ = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Json => serde_json::to_writer(&mut err, ev)
                .map_err(std::io::Error::from)
                .and_then(|_| writeln!(err)),
            Mode::Plain | Mode::Tty => self.human(&mut err, ev),
        };
    }

    fn human(&self, w: &mut impl Write, ev: &Event<'_>) -> std::io::Result<()> {
        match ev {
            Event::Step {
                step,
                total,
                stage,
                text,
                key,
                cached,
            } => {
                writeln!(w, "#{step} [{stage} {step}/{total}] {text}")?;
                if self.explain {
                    writeln!(w, "#{step} key {key}")?;
                }
                if *cached {
                    writeln!(w, "#{step} CACHED")?;
                }
                Ok(())
            }
            Event::Explain { step, reasons } => {
                for r in reasons.iter() {
                    writeln!(w, "#{step} miss: {r}")?;
                }
                Ok(())
            }
            Event::Output { step, line } => writeln!(w, "#{step} {line}"),
            Event::Done {
                step,
                seconds,
                stages,
            } => {
                if self.mode == Mode::Tty && !stages.is_empty() {
                    let parts: Vec<String> =
                        stages.iter().map(|(n, s)| format!("{n} {s:.2}s")).collect();
                    writeln!(w, "#{step} DONE {seconds:.1}s ({})", parts.join(", "))
                } else {
                    writeln!(w, "#{step} DONE {seconds:.1}s")
                }
            }
            Event::Info { message } => writeln!(w, "{message}"),
            Event::Finished {
                image_id,
                all_cached,
                ..
            } => writeln!(
                w,
                "built {image_id}{}",
                if *all_cached {
                    " (all steps cached)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Emits an info line.
    pub fn info(&self, message: &str) {
        self.emit(&Event::Info { message });
    }
}

/// Seconds as f64 with millisecond precision, for events.
pub fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}
