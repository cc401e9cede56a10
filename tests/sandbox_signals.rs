//! Stopping a step from outside (what the CLI's SIGINT/SIGTERM handler does through
//! `kill_running`) and the cost of a sandbox. A separate test binary: `kill_running` kills
//! every step of the process, so nothing else may run beside it.

mod common;
#[path = "sandbox_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

/// `kill_running` kills every step of this process: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kill_running_ends_every_process_of_the_step_and_cleans_up() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = Step::busybox();
    let started = Instant::now();
    let killer = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(1500));
        cairn::sandbox::kill_running();
    });
    let (code, out) = t.run("sleep 600 & sleep 601 & echo running; wait");
    killer.join().unwrap();
    assert_eq!(code, 128 + 9, "{out}");
    assert!(out.contains("running"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 60[01]"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "stray: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sandbox-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&t.dir.path().display().to_string()),
        "a mount leaked to the host"
    );
}

/// Twenty sandboxes in a row each run `true` and exit 0; the time each took is printed as a
/// figure (timing targets live in `scripts/bench`, not in tests).
#[test]
fn twenty_sandboxes_in_a_row_run_true() {
    common::require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = Step::busybox();
    t.run_argv(&["/bin/true"]);
    std::thread::sleep(Duration::from_millis(300));
    let n = 20;
    let cpu_before = cpu_ticks("self");
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(t.run_argv(&["/bin/true"]).0, 0);
    }
    let each = started.elapsed() / n;
    // The helpers are reaped in the background; let them finish before counting.
    std::thread::sleep(Duration::from_millis(500));
    let cpu = (cpu_ticks("self") - cpu_before) as f64 * 1000.0 / ticks_per_second() / n as f64;
    eprintln!(
        "BENCH sandbox for `true`: {each:?} wall, {cpu:.1} ms CPU per step (debug build, mean of {n}, load {})",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?")
    );
}

fn ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}
