//! The live terminal view, driven in a real pseudo-terminal: cairn runs inside a private
//! tmux server (120×30), and the tests read the screen as a user would see it — during a
//! long RUN and after it — and, through `pipe-pane`, the raw bytes cairn wrote.

mod common;

use common::registry::Registry;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a screen may take to show what a test waits for before the test gives up
/// (a hang, not a speed check: the builds here take seconds).
const PATIENCE: Duration = Duration::from_secs(180);

/// A tmux server of our own (its own socket, no user config) running one command.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `script` (a shell script) in a 120×30 terminal. It waits for [`Tmux::go`]
    /// before it runs, so a raw capture can be attached first.
    fn start(script: &str) -> Tmux {
        let dir = common::tempdir();
        let run = dir.path().join("run.sh");
        fs::write(
            &run,
            format!(
                // The shell outlives a Ctrl-C meant for cairn (a trap with a command is
                // reset to the default in the children, so cairn still gets SIGINT).
                "trap 'true' INT\nwhile [ ! -e {go} ]; do sleep 0.05; done\n{script}\necho \"EXIT=$?\"\nsleep 3600\n",
                go = dir.path().join("go").display()
            ),
        )
        .unwrap();
        let t = Tmux { dir };
        t.tmux(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            "sh",
            run.to_str().unwrap(),
        ]);
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new(common::which("tmux"))
            .arg("-S")
            .arg(self.socket())
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Records every byte the pane receives into the returned file.
    fn record(&self) -> PathBuf {
        let raw = self.dir.path().join("raw");
        self.tmux(&["pipe-pane", "-o", &format!("cat > {}", raw.display())]);
        raw
    }

    /// Lets the script run.
    fn go(&self) {
        fs::write(self.dir.path().join("go"), "").unwrap();
    }

    /// The visible screen, one string per row.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// The screen and everything that scrolled off it.
    fn history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-"])
    }

    /// Polls the screen until `ok` holds, and returns that screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the screen never showed {what}:\n{}",
                self.history()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The raw bytes recorded into `raw`, once they include the command's end.
    fn raw(&self, raw: &Path) -> String {
        let start = Instant::now();
        loop {
            let bytes = fs::read(raw).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if text.contains("EXIT=") {
                return text;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the raw capture never ended: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the command to end; returns its exit status and the whole history.
    fn finish(&self) -> (i32, String) {
        let s = self.wait_for("the command's end", |s| s.contains("EXIT="));
        let code = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("EXIT="))
            .and_then(|c| c.parse().ok())
            .expect("EXIT=N");
        (code, self.history())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("kill-server")
            .output();
    }
}

/// A context directory holding `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = common::tempdir();
    fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

/// The shell line that builds `ctx` with a private store, into an OCI layout.
fn build_line(root: &Path, ctx: &Path, env: &str, flags: &str) -> String {
    format!(
        "env CAIRN_ROOT={root} {env} {cairn} build {ctx} -o type=oci,dest={root}/out {flags}",
        root = root.display(),
        cairn = common::cairn_bin().display(),
        ctx = ctx.display(),
    )
}

/// The seconds shown at the end of the running step's line that contains `text`.
fn timer(screen: &str, text: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains(text))?;
    let last = line.split_whitespace().last()?;
    last.strip_suffix('s')?.parse().ok()
}

#[test]
fn a_long_run_shows_a_live_timer_and_a_bounded_window_then_collapses() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "tty/busybox:1");
    let root = common::tempdir();
    let long = "RUN for i in 1 2 3 4 5 6 7 8 9; do echo line-$i; done; sleep 5; echo slept";
    let ctx = context(&format!(
        "FROM {}/tty/busybox:1\nRUN echo quick-step | tee /quick\n{long}\nLABEL finished=yes\n",
        reg.addr
    ));
    let t = Tmux::start(&build_line(
        root.path(),
        ctx.path(),
        "CAIRN_TTY_LOG_LINES=3",
        "",
    ));
    t.go();

    // While the long step runs: its last three lines, never a fourth.
    let during = t.wait_for("the long step's last output line", |s| s.contains("line-9"));
    for shown in ["line-7", "line-8", "line-9"] {
        assert!(during.contains(shown), "{shown} missing:\n{during}");
    }
    for hidden in ["line-1", "line-6"] {
        assert!(!during.contains(hidden), "{hidden} shown:\n{during}");
    }
    // The step before it is one line, DONE with its time; its output is gone.
    let quick: Vec<&str> = during
        .lines()
        .filter(|l| l.contains("echo quick-step"))
        .collect();
    assert_eq!(quick.len(), 1, "{during}");
    assert!(quick[0].contains(" DONE "), "{during}");
    assert!(
        !during.lines().any(|l| l.trim() == "quick-step"),
        "{during}"
    );

    // The timer moves while the step prints nothing.
    let first = timer(&during, "RUN for i").unwrap_or_else(|| panic!("no timer:\n{during}"));
    let later = t.wait_for("the timer advancing", |s| {
        timer(s, "RUN for i").is_some_and(|now| now > first) || s.contains("EXIT=")
    });
    assert!(
        timer(&later, "RUN for i").is_some_and(|now| now > first),
        "the timer stayed at {first}s until the step ended:\n{later}"
    );

    let (code, after) = t.finish();
    assert_eq!(code, 0, "{after}");
    // Every step is one line; no output window is left behind.
    for text in ["RUN echo quick-step", "RUN for i in", "LABEL finished=yes"] {
        let lines: Vec<&str> = after.lines().filter(|l| l.contains(text)).collect();
        assert_eq!(lines.len(), 1, "{text}:\n{after}");
    }
    let line = after.lines().find(|l| l.contains("RUN for i in")).unwrap();
    let took: f64 = line
        .split(" DONE ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no DONE time: {line}"));
    assert!(took >= 5.0, "the step slept 5s but says {took}s: {line}");
    for gone in ["line-9", "slept"] {
        assert!(
            !after.lines().any(|l| l.trim() == gone),
            "{gone} left on screen:\n{after}"
        );
    }
    // The first step's layer, with its size.
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("wrote layer of step 1 (") && l.contains(" B) in ")),
        "{after}"
    );
    // The closing summary.
    assert!(after.contains("3 steps: 3 run, 0 cached"), "{after}");
    assert!(after.contains("pulled"), "{after}");
    assert!(after.contains("image sha256:"), "{after}");

    // Again: every step CACHED, one line each.
    let t = Tmux::start(&build_line(root.path(), ctx.path(), "", ""));
    t.go();
    let (code, again) = t.finish();
    assert_eq!(code, 0, "{again}");
    assert_eq!(
        again.lines().filter(|l| l.contains(" CACHED ")).count(),
        3,
        "{again}"
    );
    assert!(again.contains("3 steps: 0 run, 3 cached"), "{again}");
}

#[test]
fn a_failed_step_shows_its_output_its_log_and_the_dockerfile_line() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "tty/busybox:2");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/tty/busybox:2\nLABEL a=b\nRUN for i in $(seq 1 250); do echo out-$i; done; exit 3\n",
        reg.addr
    ));
    let t = Tmux::start(&build_line(root.path(), ctx.path(), "", ""));
    t.go();
    let (code, after) = t.finish();
    assert_eq!(code, 3, "{after}");
    assert!(after.contains("ERROR"), "{after}");
    // The last 200 lines are shown; the 50 before them are in the log file it names.
    assert!(after.contains("out-250"), "{after}");
    assert!(after.contains("out-51\n"), "{after}");
    assert!(!after.contains("out-50\n"), "{after}");
    let log = after
        .lines()
        .find_map(|l| l.split("the whole output is in ").nth(1))
        .unwrap_or_else(|| panic!("no log file named:\n{after}"));
    let whole = fs::read_to_string(log.trim()).unwrap();
    let _ = fs::remove_file(log.trim());
    assert_eq!(whole.lines().count(), 250);
    assert!(whole.starts_with("out-1\nout-2\n"), "{whole}");
    assert!(after.contains("Dockerfile:3"), "{after}");
}

/// On a terminal, `NO_COLOR` with `auto` and `--progress=plain` both mean no escape
/// sequences at all in what cairn writes.
#[test]
fn no_color_and_plain_write_no_escape_sequences_on_a_terminal() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nLABEL a=b\nLABEL c=d\n");
    for (env, flags) in [("NO_COLOR=1", ""), ("", "--progress=plain")] {
        let t = Tmux::start(&build_line(root.path(), ctx.path(), env, flags));
        let raw = t.record();
        t.go();
        let (code, after) = t.finish();
        assert_eq!(code, 0, "{after}");
        assert!(after.contains("LABEL c=d"), "{after}");
        let shown = t.raw(&raw);
        // The pane's own output (cairn's lines, the EXIT marker) is all there is.
        assert!(shown.contains("LABEL c=d"), "{shown:?}");
        assert!(!shown.contains('\x1b'), "{env} {flags}: {shown:?}");
    }
}

/// The live view itself is colourful and moves the cursor: the raw capture above is
/// not empty of escapes by accident.
#[test]
fn the_live_view_does_draw_on_a_terminal() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let t = Tmux::start(&build_line(root.path(), ctx.path(), "", ""));
    let raw = t.record();
    t.go();
    let (code, after) = t.finish();
    assert_eq!(code, 0, "{after}");
    assert!(after.contains("1 steps: 1 run, 0 cached"), "{after}");
    let shown = t.raw(&raw);
    assert!(shown.contains('\x1b'), "{shown:?}");
}

/// `docker load` shows its bytes and speed, and the summary says where the image went.
#[test]
fn a_load_shows_its_bytes_and_the_summary_names_the_tag() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "tty/busybox:3");
    let root = common::tempdir();
    let tag = "cairn-test/tty:load";
    let ctx = context(&format!(
        "FROM {}/tty/busybox:3\nRUN echo to-load > /f\n",
        reg.addr
    ));
    let line = format!(
        "env CAIRN_ROOT={root} {cairn} build {ctx} -t {tag}",
        root = root.path().display(),
        cairn = common::cairn_bin().display(),
        ctx = ctx.path().display(),
    );
    let t = Tmux::start(&line);
    t.go();
    let (code, after) = t.finish();
    let _ = Command::new("docker").args(["rmi", tag]).output();
    assert_eq!(code, 0, "{after}");
    let loaded = after
        .lines()
        .find(|l| l.starts_with("loaded "))
        .unwrap_or_else(|| panic!("no load line:\n{after}"));
    assert!(loaded.contains("tty:load"), "{loaded}");
    assert!(
        loaded.contains(" MiB)") || loaded.contains(" KiB)"),
        "{loaded}"
    );
    assert!(loaded.contains("/s"), "{loaded}");
    // The summary's bytes line: "1.3 MB pulled, …, 2.9 MB loaded".
    assert!(
        after
            .lines()
            .any(|l| l.contains(" pulled, ") && l.trim_end().ends_with(" loaded")),
        "{after}"
    );
    assert!(after.contains(&format!("-> docker ({tag})")), "{after}");
}

/// A line wider than the terminal stays one row, and a resize mid-step redraws the view
/// to the new width instead of leaving torn rows behind.
#[test]
fn long_lines_and_a_resize_do_not_garble_the_view() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "tty/busybox:4");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/tty/busybox:4\nRUN printf 'wide-%0300d-end\\n' 7; echo second; sleep 4\n",
        reg.addr
    ));
    let t = Tmux::start(&build_line(root.path(), ctx.path(), "", ""));
    t.go();
    let during = t.wait_for("the wide line", |s| {
        s.lines().any(|l| l.starts_with("  wide-0000")) && s.lines().any(|l| l == "  second")
    });
    let rows: Vec<&str> = during.lines().filter(|l| l.contains("0000")).collect();
    assert_eq!(rows.len(), 1, "a wide line took several rows:\n{during}");
    assert!(!rows[0].contains("-end"), "not cut at the edge:\n{during}");

    t.tmux(&["resize-window", "-x", "70", "-y", "30"]);
    let narrow = t.wait_for("the view at 70 columns", |s| {
        s.lines()
            .find(|l| l.contains("RUN printf"))
            .is_some_and(|l| l.chars().count() <= 70 && l.trim_end().ends_with('s'))
    });
    for l in narrow.lines() {
        assert!(
            l.chars().count() <= 70,
            "row wider than the terminal: {l:?}"
        );
    }
    assert_eq!(
        narrow.lines().filter(|l| l.contains("RUN printf")).count(),
        1,
        "{narrow}"
    );
    let (code, _) = t.finish();
    // The screen as it is now (the scrollback keeps the screen from before the resize, as
    // the terminal moved it there when the view was drawn again).
    let after = t.screen();
    assert_eq!(code, 0, "{after}");
    assert_eq!(
        after.lines().filter(|l| l.contains("RUN printf")).count(),
        1,
        "{after}"
    );
    assert!(!after.contains("0000"), "the window stayed:\n{after}");
}

/// Ctrl-C during a step: the build stops with 130, the step's output is shown once, and
/// the live area is gone (the shell's next line starts on a clean row).
#[test]
fn ctrl_c_leaves_the_terminal_clean() {
    common::require_root();
    let reg = Registry::start();
    common::images::push_busybox(&reg, "tty/busybox:5");
    let root = common::tempdir();
    let ctx = context(&format!(
        "FROM {}/tty/busybox:5\nRUN echo before-the-wait; sleep 300\n",
        reg.addr
    ));
    // After cairn, the terminal's `^C` echo setting, as stty prints it.
    let t = Tmux::start(&format!(
        "{}\nrc=$?; stty -a | grep -o -- '-*echoctl' | sed 's/^/SETTING /'; (exit $rc)",
        build_line(root.path(), ctx.path(), "", "")
    ));
    t.go();
    t.wait_for("the step running", |s| {
        s.lines().any(|l| l.trim() == "before-the-wait")
    });
    t.tmux(&["send-keys", "C-c"]);
    let (code, after) = t.finish();
    assert_eq!(code, 130, "{after}");
    assert!(after.contains("SIGINT received"), "{after}");
    assert!(after.contains("ERROR"), "{after}");
    // The output appears once (in the failure report), not also in a stale window.
    assert_eq!(
        after
            .lines()
            .filter(|l| l.ends_with("before-the-wait") && !l.contains("RUN"))
            .count(),
        1,
        "{after}"
    );
    // cairn turned the `^C` echo off while it drew, and on again.
    assert!(after.contains("SETTING echoctl"), "{after}");
    // No spinner row left behind, and the marker the shell printed after cairn starts
    // its own row.
    assert!(
        !after
            .lines()
            .any(|l| l.trim_end().ends_with('s') && l.contains("RUN echo") && !l.contains("ERROR")),
        "{after}"
    );
    assert!(after.lines().any(|l| l.starts_with("EXIT=130")), "{after}");
}

/// A build started in the background of an interactive shell (`cairn build … &`) must not
/// touch the terminal's settings: the kernel stops a background job that tries (SIGTTOU),
/// and the build would hang there.
#[test]
fn a_background_build_is_not_stopped_by_the_terminal() {
    let root = common::tempdir();
    let ctx = context("FROM scratch\nLABEL a=b\n");
    // `set -m`: job control, so the build gets a process group of its own, as in a shell.
    let t = Tmux::start(&format!(
        "set -m\n{} &\nwait $!",
        build_line(root.path(), ctx.path(), "", "--progress=tty")
    ));
    t.go();
    let (code, after) = t.finish();
    assert_eq!(code, 0, "{after}");
    assert!(after.contains("1 steps: 1 run, 0 cached"), "{after}");
}
