//! [`run`]: the parent's side of a step. It prepares the [`Staging`] directory, starts the
//! broker's helper with a [`RunJob`], writes its id maps when asked, streams the step's
//! output and collects how it ended. When overlayfs cannot be mounted it runs the step once
//! more on a copied root and writes the difference into the upper directory
//! ([`super::fallback`]), so callers see the same result either way. Warnings go to the
//! caller's `warn` sink.

use super::cgroup::Cgroup;
use super::child::{ChildSpec, RunJob};
use super::copyroot;
use super::mounts::RootSource;
use super::net::UserNet;
use super::staging::Staging;
use super::Network;
use super::{resolve_user, Error, RunSpec};
use crate::overlay;
use crate::userns::{write_maps, Helper, Privilege, Report, GO};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, Read, Write};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Running steps: `(helper pid, the step's PID 1 once known, its kill group)`, for
/// [`kill_running`] and [`kill_group`].
static RUNNING: Mutex<Vec<(i32, Option<i32>, u64)>> = Mutex::new(Vec::new());

/// Kill groups that [`kill_group`] ended: a step of one registering later is killed at once.
static KILLED_GROUPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

thread_local! {
    /// The kill group of the steps this thread starts (0: none), set by [`enter_group`].
    static GROUP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Kills every running step: its PID 1, so that the kernel kills everything else in its
/// PID namespace and the helper reports `128 + 9`; a step still being set up loses its
/// helper instead (then `run` fails). For the CLI's SIGINT/SIGTERM handler.
pub fn kill_running() {
    let running = RUNNING.lock().map(|p| p.clone()).unwrap_or_default();
    for (helper, init, _) in running {
        let _ = kill(Pid::from_raw(init.unwrap_or(helper)), Signal::SIGKILL);
    }
}

/// A fresh kill group: one build's steps, which [`kill_group`] stops without touching the
/// steps of another build in the same process (builds run their stages on several threads).
pub fn new_group() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Steps this thread starts while the guard lives belong to `group`.
pub fn enter_group(group: u64) -> GroupGuard {
    GroupGuard(GROUP.with(|g| g.replace(group)))
}

/// Puts the thread's previous kill group back on drop.
pub struct GroupGuard(u64);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        GROUP.with(|g| g.set(self.0));
    }
}

/// Kills the running steps of `group` as [`kill_running`] kills all, and every step of it
/// that starts later (a thread between its last check and its step must not run it).
pub fn kill_group(group: u64) {
    let running = match RUNNING.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    if let Ok(mut k) = KILLED_GROUPS.lock() {
        k.push(group);
    }
    for (helper, init, _) in running.iter().filter(|e| e.2 == group) {
        let _ = kill(Pid::from_raw(init.unwrap_or(*helper)), Signal::SIGKILL);
    }
}

/// How [`run_with`] assembles the step's root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RootMode {
    /// Overlayfs, falling back to a copy when it cannot be mounted.
    #[default]
    Auto,
    /// Always the copy-based root (for tests, and machines where overlayfs misbehaves).
    Copy,
    /// Overlayfs or fail (for tests).
    Overlay,
}

/// Runs one step with `privilege`'s id maps and returns its exit code (128 + signal when
/// killed). `Err` only when the sandbox itself fails. `output` receives the step's stdout
/// and stderr as they come; `warn` what the user should know (each warning at most once
/// per process), which is never printed here. `CAIRN_NO_OVERLAY=1` in the environment
/// forces the copy-based root.
pub fn run(
    spec: &RunSpec,
    privilege: &Privilege,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
) -> Result<i32, Error> {
    run_outcome(spec, privilege, output, warn).map(|o| o.code)
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (128 + signal when killed).
    pub code: i32,
    /// The resource limit that stopped the step, in words naming its flag, if one did.
    pub limit: Option<String>,
}

/// [`run`], also saying which resource limit stopped the step (if one did).
pub fn run_outcome(
    spec: &RunSpec,
    privilege: &Privilege,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
) -> Result<Outcome, Error> {
    let mode = match std::env::var_os("CAIRN_NO_OVERLAY") {
        Some(v) if !v.is_empty() && v != "0" => RootMode::Copy,
        _ => RootMode::Auto,
    };
    run_with_outcome(spec, privilege, mode, output, warn)
}

/// [`run`] with the root's assembly chosen explicitly.
pub fn run_with(
    spec: &RunSpec,
    privilege: &Privilege,
    mode: RootMode,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
) -> Result<i32, Error> {
    run_with_outcome(spec, privilege, mode, output, warn).map(|o| o.code)
}

/// [`run_with`], also saying which resource limit stopped the step (if one did).
pub fn run_with_outcome(
    spec: &RunSpec,
    privilege: &Privilege,
    mode: RootMode,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
) -> Result<Outcome, Error> {
    if let Some(w) = privilege.warning() {
        static WARN: std::sync::Once = std::sync::Once::new();
        WARN.call_once(|| warn(w));
    }
    let mut limit = None;
    let result = run_once(spec, privilege, mode, output, warn, &mut limit);
    open_work_dir(&spec.work);
    result.map(|code| Outcome { code, limit })
}

/// Overlayfs leaves `work/work` with mode 000; the owner may open it again, so that a
/// plain recursive removal of the step's directories works.
fn open_work_dir(work: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(work) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
            }
        }
    }
}

/// One run of a step, in the requested root mode.
fn run_once(
    spec: &RunSpec,
    privilege: &Privilege,
    mode: RootMode,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
    limit: &mut Option<String>,
) -> Result<i32, Error> {
    if spec.argv.is_empty() {
        return Err(Error::Message("empty command".into()));
    }
    if !spec.workdir.starts_with('/') {
        return Err(Error::Message(format!(
            "working directory {:?} is not absolute",
            spec.workdir
        )));
    }
    let (uid, gid, groups) = resolve_user(&spec.lowers, &spec.user)?;
    let staging = Staging::new(spec, privilege)?;
    let mut lowers = spec.lowers.clone();
    lowers.push(staging.top_layer());
    let upper = std::path::absolute(&spec.upper)?;
    let work = std::path::absolute(&spec.work)?;
    let options = overlay::mount_options(&staging.link_lowers(&lowers)?, &upper, &work, true)?;
    let mut child = ChildSpec {
        run: spec.clone(),
        root: staging.root(),
        source: RootSource::Overlay(options),
        etc_files: staging.etc_files(),
        staging: staging.path().to_path_buf(),
        uid,
        gid,
        groups,
        home: super::user::home_of(&spec.lowers, uid),
    };
    if mode != RootMode::Copy {
        match attempt(&child, privilege, output, warn, limit)? {
            Report::NoOverlay(why) if mode == RootMode::Overlay => {
                return Err(Error::Message(format!("sandbox: {why}")))
            }
            Report::NoOverlay(why) => {
                static WARN: std::sync::Once = std::sync::Once::new();
                WARN.call_once(|| {
                    warn(&format!(
                        "overlayfs unavailable ({why}); RUN steps use a slower copy-based root"
                    ))
                });
            }
            Report::Exit(code) => return Ok(code),
            other => {
                return Err(Error::Message(format!(
                    "unexpected sandbox report {other:?}"
                )))
            }
        }
    }
    let copy = staging.copy_dir();
    let snapshot = staging.path().join("snapshot.json");
    copyroot::make_as_owner(privilege, &lowers, &copy, &snapshot)?;
    child.source = RootSource::Bind(copy.clone());
    let report = attempt(&child, privilege, output, warn, limit)?;
    copyroot::changes_as_owner(privilege, &snapshot, &copy, &spec.upper)?;
    match report {
        Report::Exit(code) => Ok(code),
        other => Err(Error::Message(format!(
            "unexpected sandbox report {other:?}"
        ))),
    }
}

/// The step's cgroup, or `None` with a warning (once per process) saying why its limits
/// cannot be applied here.
fn step_cgroup(spec: &ChildSpec, warn: &mut dyn FnMut(&str)) -> Option<Arc<Cgroup>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "cairn-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    match Cgroup::create(&name, &spec.run.limits) {
        Ok(c) => Some(Arc::new(c)),
        Err(why) => {
            static WARN: std::sync::Once = std::sync::Once::new();
            WARN.call_once(|| {
                warn(&format!(
                    "RUN steps run without resource limits (memory, CPU, pids): {why} (limits need root, or a cgroup v2 tree delegated to this user)"
                ))
            });
            None
        }
    }
}

/// Runs the helper once; returns `Exit` or `NoOverlay`, or the failure as an error. A
/// resource limit that stopped the step is put in `limit` and told in its output.
fn attempt(
    spec: &ChildSpec,
    privilege: &Privilege,
    output: &mut dyn FnMut(&[u8]),
    warn: &mut dyn FnMut(&str),
    limit: &mut Option<String>,
) -> Result<Report, Error> {
    let cgroup = step_cgroup(spec, warn);
    let helper = Helper::spawn(&RunJob(Box::new(spec.clone())), true);
    let mut helper = match helper {
        Ok(h) => h,
        Err(e) => {
            if let Some(c) = cgroup.and_then(|c| Arc::try_unwrap(c).ok()) {
                c.remove();
            }
            return Err(e.into());
        }
    };
    let _registered = Registered::new(helper.pid() as i32);
    let (stderr, stdin, pid) = (helper.stderr, helper.stdin, helper.child.id());
    let privilege = privilege.clone();
    let net = (spec.run.network == Network::Default).then(|| spec.staging.clone());
    let cg = cgroup.clone();
    let control = std::thread::spawn(move || {
        control_loop(
            stderr,
            stdin,
            pid,
            &privilege,
            net.as_deref(),
            cg.as_deref(),
        )
    });
    let mut stdout = helper.stdout.take().expect("captured stdout");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mut reports = control
        .join()
        .unwrap_or_else(|_| vec![Report::Failed("control thread panicked".into())]);
    if let Some(cg) = cgroup.and_then(|c| Arc::try_unwrap(c).ok()) {
        *limit = cg.verdict();
        if let Some(why) = limit.as_deref() {
            output(format!("cairn: {why}\n").as_bytes());
        }
        if reports.iter().any(|r| matches!(r, Report::Exit(_))) {
            // The step's PID 1 is reaped: the helper leaves the cgroups (its exit, tearing
            // down the mount namespace, is slow), which go now; it is reaped below.
            cg.release(pid);
            cg.remove();
        } else {
            let status = helper.child.wait()?;
            cg.remove();
            return conclude(reports_without_warnings(reports, warn), Some(status));
        }
    }
    reports = reports_without_warnings(reports, warn);
    if reports.iter().any(|r| matches!(r, Report::Exit(_))) {
        // The step is over (its PID 1 is reaped, so is everything it started) but the
        // helper's exit still tears down its mount namespace, which costs tens of
        // milliseconds of RCU grace periods: reap it in the background.
        let mut child = helper.child;
        std::thread::spawn(move || child.wait());
        return conclude(reports, None);
    }
    let status = helper.child.wait()?;
    conclude(reports, Some(status))
}

/// Passes the warnings among `reports` on to `warn`.
fn reports_without_warnings(mut reports: Vec<Report>, warn: &mut dyn FnMut(&str)) -> Vec<Report> {
    reports.retain(|r| match r {
        Report::Warning(w) => {
            warn(w);
            false
        }
        _ => true,
    });
    reports
}

/// Reads the helper's reports, answering the user-namespace one with the maps (and, when
/// `net` names the staging directory, connecting the step's network before it goes on).
/// The step's network stays up until the helper closes its end.
fn control_loop(
    stderr: impl BufRead,
    mut stdin: ChildStdin,
    pid: u32,
    privilege: &Privilege,
    net: Option<&std::path::Path>,
    cgroup: Option<&Cgroup>,
) -> Vec<Report> {
    let mut reports = Vec::new();
    let mut _user_net = None;
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        let report = Report::parse(&line);
        match &report {
            Report::Userns => {
                let answer = write_maps(pid, privilege).map_err(|e| e.to_string());
                let answer = answer.and_then(|()| cgroup.map_or(Ok(()), |c| c.add(pid)));
                let answer = answer.and_then(|()| match net {
                    Some(dir) => UserNet::start(pid, dir)
                        .map(|n| {
                            // In the step's cgroup, a network stack that outlives a killed
                            // cairn is swept with it by the next run.
                            if let Some(c) = cgroup {
                                let _ = c.add(n.pid());
                            }
                            _user_net = Some(n)
                        })
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                });
                let go = if answer.is_ok() { GO } else { "abort" };
                let _ = writeln!(stdin, "{go}");
                if let Err(e) = answer {
                    reports.push(Report::Failed(e));
                }
            }
            Report::Init(p) => {
                if let Ok(mut running) = RUNNING.lock() {
                    for entry in running.iter_mut().filter(|e| e.0 == pid as i32) {
                        entry.1 = Some(*p);
                    }
                }
            }
            _ => reports.push(report),
        }
    }
    reports
}

/// The first failure (or overlay refusal) wins over the exit code the helper saw.
fn conclude(
    reports: Vec<Report>,
    status: Option<std::process::ExitStatus>,
) -> Result<Report, Error> {
    let mut exit = None;
    for r in reports {
        match r {
            Report::Failed(why) => return Err(Error::Message(format!("sandbox: {why}"))),
            Report::NoOverlay(why) => return Ok(Report::NoOverlay(why)),
            Report::Exit(code) => exit = Some(code),
            _ => {}
        }
    }
    exit.map(Report::Exit).ok_or_else(|| {
        Error::Message(format!(
            "sandbox helper ended without a report ({})",
            status.map(|s| s.to_string()).unwrap_or_default()
        ))
    })
}

/// Keeps a helper in [`RUNNING`] while alive.
struct Registered(i32);

impl Registered {
    fn new(helper: i32) -> Registered {
        let group = GROUP.with(|g| g.get());
        if let Ok(mut p) = RUNNING.lock() {
            p.push((helper, None, group));
            // Under the lock [`kill_group`] holds: it either saw this step or is done.
            let killed = group != 0 && KILLED_GROUPS.lock().is_ok_and(|k| k.contains(&group));
            if killed {
                let _ = kill(Pid::from_raw(helper), Signal::SIGKILL);
            }
        }
        Registered(helper)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut p) = RUNNING.lock() {
            p.retain(|e| e.0 != self.0);
        }
    }
}
