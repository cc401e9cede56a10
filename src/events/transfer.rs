//! [`Transfer`]: bytes moving — a blob pulled or pushed, a layer written, an image loaded —
//! as one handle the mover updates; the sink turns it into a byte bar on a terminal,
//! `transfer` events in JSON (progress at most once a second) and start/done lines in
//! plain text, and adds its bytes to the summary.

use super::{secs, Event, Mode, Phase, Reporter, TransferKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A byte transfer in flight, from [`Reporter::transfer`]. Dropping it without
/// [`Transfer::finish`] (an error) removes its line from the view without a `done` event.
pub struct Transfer {
    rep: Reporter,
    kind: TransferKind,
    id: String,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    last_report: Mutex<Instant>,
    bar: Option<indicatif::ProgressBar>,
}

impl Transfer {
    /// A transfer reported through `rep`, drawn as `bar` in the live view (start and done
    /// events otherwise).
    pub(super) fn start(
        rep: Reporter,
        kind: TransferKind,
        id: &str,
        total: Option<u64>,
        bar: Option<indicatif::ProgressBar>,
    ) -> Transfer {
        let t = Transfer {
            rep,
            kind,
            id: id.to_string(),
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_report: Mutex::new(Instant::now()),
            bar,
        };
        if t.bar.is_none() {
            t.send(Phase::Start, 0);
        }
        t
    }

    /// `n` more bytes moved.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.rep.inner.mode == Mode::Json => {
                let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= Duration::from_secs(1) {
                    *last = Instant::now();
                    drop(last);
                    self.send(Phase::Progress, done);
                }
            }
            None => {}
        }
    }

    /// The transfer restarted from byte 0.
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The transfer completed having moved `bytes` in all (for work whose size is known
    /// only at its end, such as a layer: compressed in another process, stored at once).
    pub fn finish_at(self, bytes: u64) {
        let before = self.done.swap(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes.saturating_sub(before));
        }
        self.finish();
    }

    /// The transfer completed: its bytes count towards the summary.
    pub fn finish(self) {
        let done = self.bytes();
        self.rep.inner.bytes[self.kind.index()].fetch_add(done, Ordering::Relaxed);
        match (&self.bar, &self.rep.inner.view) {
            (Some(bar), Some(view)) => {
                view.transfer_done(bar, self.kind, &self.id, done, self.started.elapsed())
            }
            _ => self.send(Phase::Done, done),
        }
    }

    fn send(&self, phase: Phase, bytes: u64) {
        self.rep.emit(&Event::Transfer {
            kind: self.kind,
            id: &self.id,
            phase,
            bytes,
            total: self.total,
            seconds: secs(self.started.elapsed()),
        });
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
