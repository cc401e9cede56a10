//! [`Progress`]: what a pull tells the user on stderr — an indicatif bar per blob on a
//! terminal, one plain line per blob otherwise, nothing when quiet.

use crate::digest::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Progress {
        let tty = !quiet && std::io::stderr().is_terminal();
        Progress {
            multi: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
        }
    }

    /// Reports the start of one blob download.
    pub(crate) fn blob(&self, d: &Digest, size: u64) -> BlobProgress {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            b.set_prefix(d.short().to_string());
            b
        });
        if bar.is_none() && !self.quiet {
            eprintln!("pulling {} ({})", d.short(), human(size));
        }
        BlobProgress {
            bar,
            plain: !self.quiet,
            label: d.short().to_string(),
            done: AtomicU64::new(0),
            size,
            start: Instant::now(),
        }
    }

    /// A one-line message (a warning, a resolution) that does not tear the bars.
    pub(crate) fn note(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}

pub(crate) struct BlobProgress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    done: AtomicU64,
    size: u64,
    start: Instant,
}

impl BlobProgress {
    pub(crate) fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// The download restarted from byte 0.
    pub(crate) fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    pub(crate) fn finish(self) {
        match &self.bar {
            Some(b) => b.finish(),
            None if self.plain => eprintln!(
                "pulled  {} ({}) in {:.1}s",
                self.label,
                human(self.size),
                self.start.elapsed().as_secs_f64()
            ),
            None => {}
        }
    }
}

/// A byte count for people, in IEC units (`512 B`, `1.5 KiB`, `3.2 MiB`): the one helper
/// every command uses, so a size reads the same in `cairn pull`, `cairn cache` and
/// `cairn doctor`.
pub fn human(n: u64) -> String {
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
mod tests {
    use super::human;

    #[test]
    fn sizes_are_iec() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(2 << 40), "2.0 TiB");
    }
}
