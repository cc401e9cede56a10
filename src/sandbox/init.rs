//! The step's PID 1 before it becomes the step's command: hostname, loopback, the root
//! ([`build_root`]), the working directory, stdin, then the user, capabilities and
//! `no_new_privs`, and finally the exec. Failures before the exec are reported to the
//! parent; a command that cannot be executed is the step's failure (126/127), as a shell
//! would report it.

use super::child::ChildSpec;
use super::mounts::{build_root, RootPlan, RootSource};
use super::{caps, seccomp, sys, Network, Security, DEFAULT_PATH};
use crate::userns::{send, Report};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Sets up and execs; never returns.
pub fn main(spec: &ChildSpec, net_ready: Option<OwnedFd>) -> ! {
    let err = match setup(spec, net_ready) {
        Err(Setup::NoOverlay(why)) => Report::NoOverlay(why),
        Err(Setup::Failed(why)) => Report::Failed(why),
        Ok(()) => exec(&spec.run.argv, &environment(&spec.run.env, &spec.home)),
    };
    send(&err);
    std::process::exit(1)
}

enum Setup {
    NoOverlay(String),
    Failed(String),
}

fn fail(what: &str) -> impl FnOnce(io::Error) -> Setup + '_ {
    move |e| Setup::Failed(format!("{what}: {e}"))
}

fn setup(spec: &ChildSpec, net_ready: Option<OwnedFd>) -> Result<(), Setup> {
    let errno = |what: &'static str| move |e: nix::Error| Setup::Failed(format!("{what}: {e}"));
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(errno("set pdeathsig"))?;
    nix::unistd::setsid().map_err(errno("setsid"))?;
    nix::unistd::sethostname(&spec.run.hostname).map_err(errno("set hostname"))?;
    if spec.run.network != Network::Host {
        sys::loopback_up().map_err(fail("bring loopback up"))?;
    }
    // The overlay options name lowers relative to the staging directory.
    nix::unistd::chdir(&spec.staging).map_err(errno("enter the staging directory"))?;
    let plan = RootPlan {
        root: &spec.root,
        source: spec.source.clone(),
        etc_files: &spec.etc_files,
        shm_size: spec.run.limits.shm_size,
        step_mounts: &spec.run.mounts,
    };
    build_root(&sys::Linux, &plan).map_err(|e| match (&spec.source, e.raw_os_error()) {
        (RootSource::Overlay(_), _) if e.to_string().starts_with("mount overlay") => {
            Setup::NoOverlay(e.to_string())
        }
        _ => Setup::Failed(format!("build the root: {e}")),
    })?;
    let workdir = Path::new(&spec.run.workdir);
    std::fs::create_dir_all(workdir).map_err(fail("create the working directory"))?;
    redirect_stdin(spec.run.stdin.as_deref()).map_err(fail("stdin"))?;
    if let Some(fd) = net_ready {
        wait_for_network(fd)?;
    }
    drop_privileges(spec)?;
    nix::unistd::chdir(workdir).map_err(errno("enter the working directory"))?;
    // From here on, stderr is the step's output like stdout.
    nix::unistd::dup2(1, 2).map_err(errno("redirect stderr"))?;
    Ok(())
}

/// Waits until the helper says the stack has configured the step's network (one byte on
/// `fd`); end of file means it could not, and the parent reports why.
fn wait_for_network(fd: OwnedFd) -> Result<(), Setup> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut byte) {
            Ok(1) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            _ => return Err(Setup::Failed("the RUN network was not connected".into())),
        }
    }
}

/// Gives the step its stdin: the bytes it was given (in a memfd), else `/dev/null`.
fn redirect_stdin(bytes: Option<&[u8]>) -> io::Result<()> {
    let file = match bytes {
        Some(b) => {
            let fd = nix::sys::memfd::memfd_create(
                c"stdin",
                nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
            )?;
            let mut f = std::fs::File::from(fd);
            f.write_all(b)?;
            io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
            f
        }
        None => std::fs::File::open("/dev/null")?,
    };
    nix::unistd::dup2(file.as_raw_fd(), 0)?;
    Ok(())
}

/// Bounding set, groups, ids, capabilities, `no_new_privs`, in the order that keeps the
/// privileges each step needs until it is done.
fn drop_privileges(spec: &ChildSpec) -> Result<(), Setup> {
    let errno = |what: &'static str| move |e: nix::Error| Setup::Failed(format!("{what}: {e}"));
    for u in &spec.run.limits.ulimits {
        set_ulimit(u).map_err(Setup::Failed)?;
    }
    let mask = caps::default_mask();
    sys::drop_bounding_caps(mask, caps::last_cap()).map_err(fail("drop capabilities"))?;
    let groups: Vec<Gid> = spec.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // With a single-id map setgroups is denied; only the primary group is possible.
        if spec.groups.iter().any(|&g| g != spec.gid) {
            return Err(Setup::Failed(format!("set supplementary groups: {e}")));
        }
    }
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(errno("set group id"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(errno("set user id"))?;
    if spec.uid == 0 {
        sys::set_caps(mask).map_err(fail("set capabilities"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(errno("set no_new_privs"))?;
    if spec.run.security == Security::Sandbox {
        seccomp::install().map_err(Setup::Failed)?;
    }
    if !spec.run.limits.keep_fsync {
        seccomp::install_no_sync().map_err(Setup::Failed)?;
    }
    Ok(())
}

/// Applies one `--ulimit` (names as Docker's: `nofile`, `nproc`, `core`, …).
fn set_ulimit(u: &super::Ulimit) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let resource = match u.name.as_str() {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        other => return Err(format!("--ulimit {other}: unknown limit")),
    };
    setrlimit(resource, u.soft, u.hard)
        .map_err(|e| format!("--ulimit {}={}:{}: {e}", u.name, u.soft, u.hard))
}

/// The step's environment: exactly what it was given, plus a default PATH and, as runc
/// does for Docker, HOME from the image's passwd when they are missing.
pub fn environment(env: &[String], home: &str) -> Vec<String> {
    let mut out = env.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Execs `argv` (searching the step's PATH when argv[0] has no slash) or returns the
/// report of why not, after printing it to the step's output with the shell's exit code.
fn exec(argv: &[String], env: &[String]) -> Report {
    let Some(cmd) = argv.first() else {
        return Report::Failed("empty command".into());
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let c_argv: Vec<CString> = argv.iter().map(|a| to_c(a)).collect();
    let c_env: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|d| format!("{}/{cmd}", if d.is_empty() { "." } else { d }))
            .collect()
    };
    let mut error = nix::Error::ENOENT;
    for c in &candidates {
        match nix::unistd::execve(&to_c(c), &c_argv, &c_env) {
            Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => {}
            Err(e) => error = e,
            Ok(never) => match never {},
        }
    }
    let code = if error == nix::Error::ENOENT {
        127
    } else {
        126
    };
    let _ = writeln!(io::stderr(), "cairn: exec {cmd}: {}", error.desc());
    std::process::exit(code)
}
