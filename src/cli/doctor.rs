//! `cairn doctor`: checks what a build needs on this machine, for the user running it, and
//! says how to fix what is missing. Exits 0 only when a build can work. Docker is checked
//! over the Engine API path `--load` uses (`DOCKER_HOST`, the docker context, the default
//! socket), never through a docker CLI, and its version, storage driver and image store
//! (classic or containerd) are reported.

use crate::error::{Error, Result};
use crate::registry::human;
use std::path::Path;
use std::process::Command;

/// One check's outcome.
struct Check {
    name: &'static str,
    ok: bool,
    /// Whether a build cannot work without it.
    required: bool,
    detail: String,
    fix: String,
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The subordinate id ranges `/etc/subuid`-style `file` grants `name`/`uid`.
fn sub_ranges(file: &Path, name: &str, uid: u32) -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(':');
            let (who, start, count) = (it.next()?, it.next()?, it.next()?);
            (who == name || who == uid.to_string())
                .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
                .flatten()
        })
        .collect()
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|c| c.is_file())
    })
}

fn checks(store_root: &Path) -> Vec<Check> {
    let uid = nix::unistd::getuid().as_raw();
    let root = uid == 0;
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let mut out = Vec::new();

    let max_ns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let userns = max_ns > 0
        && Command::new("unshare")
            .args(["--user", "--map-root-user", "true"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(max_ns > 0);
    out.push(Check {
        name: "user namespaces",
        ok: userns,
        required: true,
        detail: format!("user.max_user_namespaces={max_ns}"),
        fix: "enable them: sysctl -w user.max_user_namespaces=15000 (and kernel.unprivileged_userns_clone=1 on Debian kernels that have it; on Ubuntu 24.04+ also kernel.apparmor_restrict_unprivileged_userns=0)".into(),
    });

    let overlay = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    out.push(Check {
        name: "overlayfs",
        ok: overlay,
        required: false,
        detail: if overlay {
            "available".into()
        } else {
            "not in /proc/filesystems".into()
        },
        fix: "modprobe overlay (cairn falls back to copying, which is slower)".into(),
    });

    if !root {
        let su = sub_ranges(Path::new("/etc/subuid"), &name, uid);
        let sg = sub_ranges(Path::new("/etc/subgid"), &name, uid);
        let size: u64 = su.iter().map(|r| r.1).sum();
        out.push(Check {
            name: "subordinate ids",
            ok: !su.is_empty() && !sg.is_empty() && size >= 65536,
            required: false,
            detail: format!("/etc/subuid grants {name} {size} ids, /etc/subgid {} ids", sg.iter().map(|r| r.1).sum::<u64>()),
            fix: format!(
                "as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name} (without them only one id is mapped: apt-get, useradd and chown in RUN steps fail)"
            ),
        });
        let tools = ["newuidmap", "newgidmap"]
            .iter()
            .all(|p| which(p).is_some());
        out.push(Check {
            name: "newuidmap/newgidmap",
            ok: tools,
            required: false,
            detail: if tools {
                "found".into()
            } else {
                "not on PATH".into()
            },
            fix: "apt-get install uidmap".into(),
        });
    }

    let store_ok =
        std::fs::create_dir_all(store_root).is_ok() && tempfile::tempfile_in(store_root).is_ok();
    let free = nix::sys::statvfs::statvfs(store_root)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    out.push(Check {
        name: "store",
        ok: store_ok && free > 1 << 30,
        required: true,
        detail: format!("{} ({} free)", store_root.display(), human(free)),
        fix: format!(
            "make {} writable by {name} with at least 1 GiB free, or point --root / CAIRN_ROOT elsewhere",
            store_root.display()
        ),
    });

    // Asked as a load asks it: the Engine API at DOCKER_HOST, the docker context or the
    // default socket, whether or not a docker CLI is installed.
    let (ok, detail) = match crate::export::engine_report() {
        Ok(r) => (
            true,
            format!(
                "{} at {}: storage driver {}, {} image store",
                r.version, r.endpoint, r.driver, r.image_store
            ),
        ),
        Err(e) => (false, e.to_string()),
    };
    out.push(Check {
        name: "docker",
        ok,
        required: true,
        detail,
        fix: format!("start the Docker Engine, and add {name} to the docker group (usermod -aG docker {name}; log in again) or set DOCKER_HOST"),
    });

    let cfg = crate::registry::docker_config_dir(None).map(|d| d.join("config.json"));
    let (ok, detail) = match &cfg {
        Some(p) if p.exists() => match std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            Some(v) => (
                true,
                format!(
                    "{} ({} registries)",
                    p.display(),
                    v["auths"].as_object().map_or(0, |m| m.len())
                ),
            ),
            None => (false, format!("{} is not valid JSON", p.display())),
        },
        Some(p) => (
            true,
            format!("none at {} (anonymous pulls only)", p.display()),
        ),
        None => (true, "no HOME: anonymous pulls only".into()),
    };
    out.push(Check {
        name: "registry credentials",
        ok,
        required: false,
        detail,
        fix: "fix or remove the config.json (docker login rewrites it)".into(),
    });
    out
}

pub fn doctor(store_root: &Path) -> Result<()> {
    let checks = checks(store_root);
    let mut blocking = 0;
    for c in &checks {
        let status = if c.ok {
            "ok"
        } else if c.required {
            "MISSING"
        } else {
            "warning"
        };
        println!("{status:>8}  {}: {}", c.name, c.detail);
        if !c.ok {
            println!("          fix: {}", c.fix);
            if c.required {
                blocking += 1;
            }
        }
    }
    if blocking > 0 {
        return Err(Error::Usage(format!(
            "{blocking} required check(s) failed: a build cannot work here yet"
        )));
    }
    println!("a build can work here");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), "alice:100000:65536\n1001:300000:1000\nbob:1:2\n").unwrap();
        assert_eq!(sub_ranges(t.path(), "alice", 1000), vec![(100000, 65536)]);
        assert_eq!(sub_ranges(t.path(), "carol", 1001), vec![(300000, 1000)]);
        assert!(sub_ranges(t.path(), "dave", 5).is_empty());
    }
}
