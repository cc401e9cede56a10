//! [`View`]: the live terminal view, in the spirit of BuildKit's. Each running step is a
//! line with a live timer and, under it, a small window with its last output lines;
//! pulls and loads are byte bars with throughput. Whatever is final — a finished step
//! collapsed to one line (`#3 DONE 12.4s …`, `#3 CACHED …`), a warning, a finished
//! transfer — is printed above the live area and scrolls away like ordinary output.
//!
//! indicatif draws the live area (it measures the terminal on every draw, so a resize
//! re-wraps nothing: `wide_msg` truncates each line to the current width); this module
//! only decides what the lines say. Output lines are cleaned of control characters
//! before they are drawn, so a program's colours or carriage returns cannot move the
//! cursor under indicatif's feet. No raw mode and no hidden cursor; the one terminal
//! setting touched is the `^C` echo (`ECHOCTL`), off while the view lives — the echo
//! would land in the live area and shift it a row, leaving a stale copy behind — and put
//! back when the view goes, however the build ends.

use super::human::plain_text;
use super::{human_size, Event, TransferKind, TtyOptions};
use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, WeakProgressBar,
};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Output lines of a running step kept in memory for the failure report; a failed step
/// with more has its whole output in a log file, named in the report.
const KEEP_LINES: usize = 200;

/// Longest output line kept (longer ones are cut; the log file has them whole).
const MAX_LINE: usize = 2000;

/// Final lines remembered for a redraw after a resize.
const RECENT_LINES: usize = 200;

/// How often the terminal's size is looked at.
const RESIZE_POLL: Duration = Duration::from_millis(200);

pub(super) struct View {
    multi: MultiProgress,
    shared: Arc<Shared>,
    opts: TtyOptions,
    explain: bool,
    state: Mutex<BTreeMap<usize, Running>>,
    /// The terminal settings to restore (`^C` echo) when the view goes.
    saved: Mutex<Option<nix::sys::termios::Termios>>,
}

/// A step that has started and not finished.
struct Running {
    /// `[stage-0 3/9] RUN …`
    title: String,
    /// The stage it belongs to: steps of parallel stages run side by side.
    stage: String,
    started: Instant,
    header: ProgressBar,
    window: Vec<ProgressBar>,
    /// The last `log_lines` lines, shown in the window.
    tail: VecDeque<String>,
    /// The last [`KEEP_LINES`] lines, for the failure report.
    kept: VecDeque<String>,
    lines: usize,
    /// Every line, in case the step fails with more than [`KEEP_LINES`].
    log: Option<tempfile::NamedTempFile>,
}

impl View {
    pub(super) fn new(opts: TtyOptions, explain: bool) -> View {
        if !opts.color {
            console::set_colors_enabled_stderr(false);
            console::set_colors_enabled(false);
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let shared = Arc::new(Shared {
            multi: multi.clone(),
            recent: Mutex::new(VecDeque::new()),
            bars: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::spawn(move || watch_size(weak));
        View {
            multi,
            shared,
            opts,
            explain,
            state: Mutex::new(BTreeMap::new()),
            saved: Mutex::new(quiet_ctrl_c()),
        }
    }

    pub(super) fn event(&self, ev: &Event<'_>) {
        let mut running = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Step {
                step,
                total,
                stage,
                text,
                key,
                cached,
            } => {
                // A step of this stage that never said DONE (keyed only, not run) is
                // final now; other stages' steps run on beside it.
                let ended: Vec<usize> = running
                    .iter()
                    .filter(|(_, r)| r.stage == *stage)
                    .map(|(n, _)| *n)
                    .collect();
                for n in ended {
                    if let Some(r) = running.remove(&n) {
                        self.collapse(r, &format!("#{n}"));
                    }
                }
                let title = format!("[{stage} {step}/{total}] {text}");
                if *cached {
                    self.println(&format!("#{step} {} {title}", self.paint("CACHED", "cyan")));
                } else {
                    running.insert(*step, self.start(*step, title, stage));
                }
                if self.explain {
                    self.println(&format!("#{step} key {key}"));
                }
            }
            Event::Explain { step, reasons } if self.explain => {
                for r in reasons.iter() {
                    self.println(&format!("#{step} miss: {r}"));
                }
            }
            Event::Explain { .. } => {}
            Event::Output { step, line } => match running.get_mut(step) {
                Some(r) => self.output(r, line),
                None => self.println(&format!("#{step} {}", plain_text(line))),
            },
            Event::Done { step, seconds, .. } => {
                let done = format!(
                    "#{step} {}",
                    self.paint(&format!("DONE {seconds:.1}s"), "blue")
                );
                match running.remove(step) {
                    Some(r) => self.collapse(r, &done),
                    None => self.println(&done),
                }
            }
            Event::Canceled { step } => {
                let canceled = format!("#{step} {}", self.paint("CANCELED", "yellow"));
                match running.remove(step) {
                    Some(r) => self.collapse(r, &canceled),
                    None => self.println(&canceled),
                }
            }
            Event::Info { message } => self.println(message),
            Event::Warning { message } => {
                self.println(&self.paint(&format!("warning: {message}"), "yellow"))
            }
            // Transfers with a bar report through `transfer_done`; these are none of ours.
            Event::Transfer { .. } | Event::Exported { .. } | Event::Summary { .. } => {}
            Event::Finished { .. } => {
                drop(running);
                self.close();
            }
            Event::Error { .. } => {
                let failed = std::mem::take(&mut *running);
                drop(running);
                self.fail(failed);
            }
        }
    }

    /// The header line of a new running step: spinner, number, title, live timer.
    fn start(&self, step: usize, title: String, stage: &str) -> Running {
        let style = ProgressStyle::with_template("{spinner:.cyan} #{prefix} {wide_msg} {secs}")
            .expect("static template")
            .with_key("secs", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
            });
        let header = self.add(None, ProgressBar::new_spinner().with_style(style));
        header.set_prefix(step.to_string());
        header.set_message(title.clone());
        // The timer must move while a step prints nothing.
        header.enable_steady_tick(Duration::from_millis(100));
        Running {
            title,
            stage: stage.to_string(),
            started: Instant::now(),
            header,
            window: Vec::new(),
            tail: VecDeque::new(),
            kept: VecDeque::new(),
            lines: 0,
            log: None,
        }
    }

    /// One more output line of a running step: into its window, its memory and its log.
    fn output(&self, r: &mut Running, line: &str) {
        let mut text = plain_text(line);
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        r.lines += 1;
        if r.log.is_none() {
            r.log = tempfile::Builder::new()
                .prefix("cairn-step-")
                .suffix(".log")
                .tempfile()
                .ok();
        }
        if let Some(f) = &mut r.log {
            // The log is a courtesy: a full /tmp must not fail the build.
            let _ = writeln!(f, "{}", plain_text(line));
        }
        push_bounded(&mut r.kept, text.clone(), KEEP_LINES);
        let n = self.opts.log_lines;
        if n == 0 {
            return;
        }
        push_bounded(&mut r.tail, text, n);
        while r.window.len() < r.tail.len() {
            let after = r.window.last().unwrap_or(&r.header).clone();
            let style = ProgressStyle::with_template("  {wide_msg:.dim}").expect("static template");
            let bar = self.add(Some(&after), ProgressBar::new_spinner().with_style(style));
            r.window.push(bar);
        }
        for (bar, text) in r.window.iter().zip(&r.tail) {
            bar.set_message(text.clone());
        }
    }

    /// Takes a step's lines out of the live area and prints `line` in their place.
    fn collapse(&self, r: Running, line: &str) {
        self.clear_step(&r);
        self.println(&format!("{line} {}", r.title));
    }

    fn clear_step(&self, r: &Running) {
        for b in r.window.iter().chain(std::iter::once(&r.header)) {
            b.finish_and_clear();
            self.multi.remove(b);
        }
    }

    /// The build failed: the running step's output (its last [`KEEP_LINES`] lines, and
    /// where the rest is), then the live area goes. The CLI prints the error after this.
    fn fail(&self, failed: BTreeMap<usize, Running>) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.restore_terminal();
        for r in failed.values() {
            self.clear_step(r);
        }
        let _ = self.multi.clear();
        let mut err = std::io::stderr().lock();
        for (n, r) in failed {
            let secs = r.started.elapsed().as_secs_f64();
            let head = self.paint(&format!("ERROR after {secs:.1}s"), "red");
            let _ = writeln!(err, "#{n} {head} {}", r.title);
            let earlier = r.lines - r.kept.len();
            if earlier > 0 {
                let whole = match r.log.map(|f| f.keep()) {
                    Some(Ok((_, path))) => {
                        format!("; the whole output is in {}", path.display())
                    }
                    _ => String::new(),
                };
                let _ = writeln!(err, "#{n} … {earlier} earlier lines{whole}");
            }
            for line in &r.kept {
                let _ = writeln!(err, "#{n} {line}");
            }
        }
    }

    /// A byte bar for a transfer, in the live area until it finishes.
    pub(super) fn transfer(&self, kind: TransferKind, id: &str, total: Option<u64>) -> ProgressBar {
        let template = match (total, kind) {
            (Some(_), _) => "{prefix} [{bar:25}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            // A layer's size is known only once it is stored: its line says so then.
            (None, TransferKind::Layer) => "{prefix} {spinner}",
            (None, _) => "{prefix} {spinner} {bytes} {binary_bytes_per_sec}",
        };
        let style = ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> ");
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let bar = self.add(None, bar.with_style(style));
        bar.set_prefix(format!("{} {id}", kind.verbs().0));
        if total.is_none() {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        bar
    }

    /// A transfer is complete: its bar goes, one line with its size and speed stays.
    pub(super) fn transfer_done(
        &self,
        bar: &ProgressBar,
        kind: TransferKind,
        id: &str,
        bytes: u64,
        took: Duration,
    ) {
        bar.finish_and_clear();
        self.multi.remove(bar);
        let secs = took.as_secs_f64();
        let rate = if secs > 0.0 {
            format!(", {}/s", human_size((bytes as f64 / secs) as u64))
        } else {
            String::new()
        };
        self.println(&format!(
            "{} {id} ({}) in {secs:.1}s{rate}",
            kind.verbs().1,
            human_size(bytes)
        ));
    }

    /// Collapses what still runs and clears the live area.
    pub(super) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.restore_terminal();
        let running = std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()));
        for (n, r) in running {
            self.collapse(r, &format!("#{n}"));
        }
        let _ = self.multi.clear();
    }

    /// The closing summary, after the live area is gone.
    pub(super) fn summary(&self, lines: &[String]) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.restore_terminal();
        let _ = self.multi.clear();
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(err, "{}", self.paint(l, "green"));
        }
    }

    /// Adds a bar to the live area (after `after`, else at the end), known to the redraw
    /// after a resize.
    fn add(&self, after: Option<&ProgressBar>, bar: ProgressBar) -> ProgressBar {
        let bar = match after {
            Some(a) => self.multi.insert_after(a, bar),
            None => self.multi.add(bar),
        };
        let mut bars = self.shared.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.retain(|b| b.upgrade().is_some_and(|b| !b.is_finished()));
        bars.push(bar.downgrade());
        bar
    }

    /// Prints a final line above the live area.
    fn println(&self, line: &str) {
        self.shared.println(line);
    }

    fn paint(&self, text: &str, color: &str) -> String {
        if !self.opts.color {
            return text.to_string();
        }
        console::Style::from_dotted_str(color)
            .for_stderr()
            .apply_to(text)
            .to_string()
    }
}

impl Drop for View {
    /// However the build ends, the live area does not stay behind.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.restore_terminal();
        let _ = self.multi.clear();
    }
}

impl View {
    fn restore_terminal(&self) {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Moved to the background meanwhile (Ctrl-Z, bg): changing the terminal would stop
        // us with SIGTTOU, and the shell put its own settings back when it took the
        // terminal.
        if let Some(t) = saved.filter(|_| in_foreground()) {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stderr(),
                nix::sys::termios::SetArg::TCSANOW,
                &t,
            );
        }
    }
}

/// Whether this process group owns the terminal (a background job that changed terminal
/// settings would be stopped with SIGTTOU).
fn in_foreground() -> bool {
    nix::unistd::tcgetpgrp(std::io::stderr()).is_ok_and(|fg| fg == nix::unistd::getpgrp())
}

/// Turns off the terminal's `^C` echo; returns the settings to put back. Not for a
/// background job: it gets no `^C`, and may not change the terminal.
fn quiet_ctrl_c() -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    if !in_foreground() {
        return None;
    }
    let saved = tcgetattr(std::io::stderr()).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHOCTL);
    tcsetattr(std::io::stderr(), SetArg::TCSANOW, &quiet).ok()?;
    Some(saved)
}

/// What the view and its resize watcher share.
struct Shared {
    multi: MultiProgress,
    /// The last final lines printed, to lay out again after a resize.
    recent: Mutex<VecDeque<String>>,
    /// Every bar of the live area (finished ones are pruned as new ones come).
    bars: Mutex<Vec<WeakProgressBar>>,
    closed: AtomicBool,
}

impl Shared {
    /// Prints a final line above the live area, cut to the terminal's width (indicatif
    /// would otherwise count one line where the terminal shows two).
    fn println(&self, line: &str) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            push_bounded(&mut recent, line.to_string(), RECENT_LINES);
        }
        let width = console::Term::stderr().size().1 as usize;
        let _ = self
            .multi
            .println(console::truncate_str(line, width.max(20), "…"));
    }

    /// The terminal changed size. Terminals re-wrap (or cut) what is on screen, so the
    /// rows indicatif drew no longer are where it thinks: draw everything again from a
    /// clean screen — the recent final lines at the new width, then every bar, each
    /// rendered anew (indicatif reuses a bar's last rendering until it changes).
    fn redraw(&self, rows: usize, cols: usize) {
        let bars: Vec<ProgressBar> = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(WeakProgressBar::upgrade)
            .filter(|b| !b.is_finished())
            .collect();
        if bars.is_empty() {
            // Only final lines on screen: the terminal's own re-wrap is right for them.
            return;
        }
        let recent: Vec<String> = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let keep = rows.saturating_sub(bars.len() + 1).min(recent.len());
            recent.iter().skip(recent.len() - keep).cloned().collect()
        };
        self.multi.suspend(|| {
            let term = console::Term::stderr();
            let _ = term.clear_screen();
            for l in &recent {
                let _ = term.write_line(&console::truncate_str(l, cols.max(20), "…"));
            }
        });
        for b in bars {
            b.tick();
        }
    }
}

/// Watches the terminal's size while the view lives; redraws it on a change.
fn watch_size(shared: Weak<Shared>) {
    let term = console::Term::stderr();
    let mut last = term.size();
    loop {
        std::thread::sleep(RESIZE_POLL);
        let Some(s) = shared.upgrade() else { return };
        if s.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = term.size();
        if now != last {
            last = now;
            s.redraw(now.0 as usize, now.1 as usize);
        }
    }
}

fn push_bounded(q: &mut VecDeque<String>, s: String, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(step: usize, stage: &'a str) -> Event<'a> {
        Event::Step {
            step,
            total: 9,
            stage,
            text: "RUN work",
            key: "sha256:k",
            cached: false,
        }
    }

    fn running(view: &View) -> Vec<usize> {
        view.state.lock().unwrap().keys().copied().collect()
    }

    /// Steps of parallel stages run side by side in the view: a new step ends only an
    /// unfinished step of its own stage (`cairn key` never says DONE), and a canceled
    /// sibling leaves the view without being reported as the failure.
    #[test]
    fn steps_of_different_stages_stay_on_screen_together() {
        let view = View::new(
            TtyOptions {
                log_lines: 2,
                color: false,
            },
            false,
        );
        view.event(&step(1, "a"));
        view.event(&step(2, "b"));
        view.event(&Event::Output { step: 1, line: "x" });
        assert_eq!(running(&view), [1, 2]);
        // Stage a's next step: its unfinished one is final, b's runs on.
        view.event(&step(3, "a"));
        assert_eq!(running(&view), [2, 3]);
        view.event(&Event::Done {
            step: 3,
            seconds: 0.1,
            stages: &[],
        });
        assert_eq!(running(&view), [2]);
        view.event(&Event::Canceled { step: 2 });
        assert!(running(&view).is_empty());
        view.close();
    }
}
