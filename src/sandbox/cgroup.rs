//! Resource limits of a `RUN` step (`docker build`'s `--memory`, `--memory-swap`,
//! `--cpu-quota`, `--cpu-period`, `--cpu-shares`, `--cpuset-cpus` and a default pids
//! limit) through a cgroup of its own, on cgroup v1 (one directory per controller) or v2
//! (one unified directory). The step's cgroups are created under cairn's own cgroup of
//! each hierarchy (from `/proc/self/cgroup`), so a step never leaves the limits cairn
//! itself runs under. The helper process joins them before it forks the step's PID 1;
//! afterwards [`Cgroup::verdict`] says which limit stopped the step, and
//! [`Cgroup::remove`] kills any straggler and removes the directories.
//!
//! Hand-written: the crates that manage cgroups (`cgroups-rs`, youki's `libcgroups`) bring
//! systemd and D-Bus or a whole runtime along for the dozen files written here.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The pids limit a step gets unless told otherwise: enough for any build, small enough
/// that a fork bomb stops long before the host's table is full.
pub const DEFAULT_PIDS: u64 = 4096;

/// A step's limits, as `docker build` takes them; `None` is "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `--memory`, bytes.
    pub memory: Option<u64>,
    /// `--memory-swap`, bytes of memory plus swap; `-1` for unlimited swap. Docker's
    /// default is twice `--memory`.
    pub memory_swap: Option<i64>,
    /// `--cpu-quota`, microseconds per period.
    pub cpu_quota: Option<i64>,
    /// `--cpu-period`, microseconds.
    pub cpu_period: Option<u64>,
    /// `--cpu-shares`, relative weight (1024 is the default).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`, e.g. `0-1`.
    pub cpuset_cpus: Option<String>,
    /// The pids limit; [`DEFAULT_PIDS`] when `None`.
    pub pids: Option<u64>,
    /// `--shm-size`, bytes of `/dev/shm` (64 MiB when `None`, as Docker).
    pub shm_size: Option<u64>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<Ulimit>,
    /// `--keep-fsync`: the step's sync calls reach the disk. Otherwise a seccomp filter
    /// makes them succeed at once (see `seccomp.rs`); nothing the step writes differs.
    #[serde(default)]
    pub keep_fsync: bool,
}

/// One `--ulimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl Limits {
    fn pids(&self) -> u64 {
        self.pids.unwrap_or(DEFAULT_PIDS)
    }

    fn wants_cpu(&self) -> bool {
        self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some()
    }
}

/// Which cgroup version the host mounts at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

const ROOT: &str = "/sys/fs/cgroup";

fn version() -> Option<Version> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Some(Version::V2)
    } else if Path::new(ROOT).join("pids").is_dir() {
        Some(Version::V1)
    } else {
        None
    }
}

/// This process's cgroup path in hierarchy `controller` (`""` for v2's unified one).
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            list.is_empty()
        } else {
            list.split(',').any(|c| c == controller)
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })
}

/// A step's cgroup directories, removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// `(controller, directory)`; v2 has one entry with controller `""`.
    dirs: Vec<(&'static str, PathBuf)>,
    limits: Limits,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value).map_err(|e| {
        format!(
            "cgroup: write {value:?} to {}: {e}",
            dir.join(file).display()
        )
    })
}

impl Cgroup {
    /// Creates the step's cgroup `name` with `limits`. `Err` says why limits cannot be
    /// applied here (for a warning), e.g. a rootless user without a delegated v2 tree.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, String> {
        let version = version().ok_or("no cgroup file system at /sys/fs/cgroup")?;
        let mut cg = Cgroup {
            version,
            dirs: Vec::new(),
            limits: limits.clone(),
        };
        let made = match version {
            Version::V1 => cg.create_v1(name),
            Version::V2 => cg.create_v2(name),
        };
        if let Err(e) = made {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn make(&mut self, controller: &'static str, name: &str) -> Result<PathBuf, String> {
        let base = Path::new(ROOT).join(controller);
        let own = own_path(controller)
            .ok_or_else(|| format!("cgroup: cairn is in no {controller} cgroup"))?;
        let parent = base.join(own);
        sweep(&parent);
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cgroup: create {}: {e}", dir.display()))?;
        self.dirs.push((controller, dir.clone()));
        Ok(dir)
    }

    fn create_v1(&mut self, name: &str) -> Result<(), String> {
        let l = self.limits.clone();
        let pids = self.make("pids", name)?;
        write(&pids, "pids.max", &l.pids().to_string())?;
        if let Some(m) = l.memory {
            let mem = self.make("memory", name)?;
            write(&mem, "memory.limit_in_bytes", &m.to_string())?;
            let swap = match l.memory_swap {
                Some(s) if s < 0 => None,
                Some(s) => Some(s as u64),
                None => Some(m.saturating_mul(2)),
            };
            if let Some(s) = swap.filter(|_| mem.join("memory.memsw.limit_in_bytes").exists()) {
                write(&mem, "memory.memsw.limit_in_bytes", &s.max(m).to_string())?;
            }
        }
        if l.wants_cpu() {
            let cpu = self.make("cpu", name)?;
            if let Some(p) = l.cpu_period {
                write(&cpu, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = l.cpu_quota {
                write(&cpu, "cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(s) = l.cpu_shares {
                write(&cpu, "cpu.shares", &s.to_string())?;
            }
        }
        if let Some(cpus) = &l.cpuset_cpus {
            let set = self.make("cpuset", name)?;
            let parent = set.parent().unwrap_or(Path::new(ROOT)).to_path_buf();
            let mems = std::fs::read_to_string(parent.join("cpuset.mems")).unwrap_or_default();
            write(&set, "cpuset.mems", mems.trim())?;
            write(&set, "cpuset.cpus", cpus)?;
        }
        Ok(())
    }

    fn create_v2(&mut self, name: &str) -> Result<(), String> {
        let l = self.limits.clone();
        let dir = self.make("", name)?;
        let parent = dir.parent().unwrap_or(Path::new(ROOT)).to_path_buf();
        let _ = write(
            &parent,
            "cgroup.subtree_control",
            "+pids +memory +cpu +cpuset",
        );
        write(&dir, "pids.max", &l.pids().to_string())?;
        if let Some(m) = l.memory {
            write(&dir, "memory.max", &m.to_string())?;
            let swap = match l.memory_swap {
                Some(s) if s < 0 => "max".to_string(),
                Some(s) => (s as u64).saturating_sub(m).to_string(),
                None => m.to_string(),
            };
            if dir.join("memory.swap.max").exists() {
                write(&dir, "memory.swap.max", &swap)?;
            }
        }
        if l.cpu_quota.is_some() || l.cpu_period.is_some() {
            let quota = l
                .cpu_quota
                .filter(|q| *q > 0)
                .map_or("max".to_string(), |q| q.to_string());
            write(
                &dir,
                "cpu.max",
                &format!("{quota} {}", l.cpu_period.unwrap_or(100_000)),
            )?;
        }
        if let Some(s) = l.cpu_shares {
            // runc's conversion of shares (2..262144) to weight (1..10000).
            let w = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
            write(&dir, "cpu.weight", &w.to_string())?;
        }
        if let Some(cpus) = &l.cpuset_cpus {
            write(&dir, "cpuset.cpus", cpus)?;
        }
        Ok(())
    }

    /// Moves process `pid` (the helper, before it forks the step) into every directory.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves process `pid` back to cairn's own cgroups (the helper, once the step's PID 1
    /// is gone, so that the step's cgroups can go without waiting for the helper's exit).
    pub fn release(&self, pid: u32) {
        for (_, dir) in &self.dirs {
            if let Some(parent) = dir.parent() {
                let _ = std::fs::write(parent.join("cgroup.procs"), pid.to_string());
            }
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        let want = if self.version == Version::V2 {
            ""
        } else {
            controller
        };
        self.dirs
            .iter()
            .find(|(c, _)| *c == want)
            .map(|(_, d)| d.as_path())
    }

    /// The limit that stopped the step, if one did, in words naming the flag.
    pub fn verdict(&self) -> Option<String> {
        let count = |dir: &Path, file: &str, key: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        };
        if let (Some(m), Some(dir)) = (self.limits.memory, self.dir("memory")) {
            let file = match self.version {
                Version::V1 => "memory.oom_control",
                Version::V2 => "memory.events",
            };
            if count(dir, file, "oom_kill ").is_some_and(|n| n > 0) {
                return Some(format!(
                    "killed by the memory limit (--memory {m} bytes): the step ran out of memory"
                ));
            }
        }
        if let Some(dir) = self.dir("pids") {
            if count(dir, "pids.events", "max ").is_some_and(|n| n > 0) {
                return Some(format!(
                    "the step hit the pids limit ({} processes): a fork failed",
                    self.limits.pids()
                ));
            }
        }
        None
    }

    /// Kills whatever is left in the cgroups and removes them.
    pub fn remove(self) {
        for (_, dir) in self.dirs.iter().rev() {
            empty_and_remove(dir);
        }
    }
}

/// The PID of the cairn process a step cgroup named `cairn-<pid>-<n>` belongs to; `None`
/// for any other name.
pub fn step_cgroup_owner(name: &str) -> Option<u32> {
    name.strip_prefix("cairn-")?.split('-').next()?.parse().ok()
}

/// Removes the step cgroups under `parent` of cairn processes that are gone (killed
/// before they could clean up), with whatever they hold: a step's stragglers. (A step's
/// network stack is not in it; it ends by itself with cairn, `net.rs`.)
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = step_cgroup_owner(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            empty_and_remove(&e.path());
        }
    }
}

/// Kills the processes in cgroup `dir` and removes it (retrying while they exit).
fn empty_and_remove(dir: &Path) {
    for _ in 0..200 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_pids_limit_applies_when_none_is_given() {
        let l = super::Limits::default();
        assert_eq!(l.pids(), super::DEFAULT_PIDS);
        assert!(!l.wants_cpu());
    }

    #[test]
    fn a_step_cgroup_names_its_cairn_process() {
        assert_eq!(super::step_cgroup_owner("cairn-4242-3"), Some(4242));
        assert_eq!(super::step_cgroup_owner("cairn-x-3"), None);
        assert_eq!(super::step_cgroup_owner("docker-4242-3"), None);
    }
}
