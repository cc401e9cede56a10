//! [`id_maps`]: the user-namespace maps a sandbox of this process uses, and writing them
//! for a helper that has just unshared its user namespace.
//!
//! As root the maps are the identity. Rootless, container root is the invoking user and
//! ids from 1 on come from the user's `/etc/subuid` and `/etc/subgid` range, written by
//! the setuid `newuidmap`/`newgidmap`; with no range there is only the single mapping
//! and a warning of what cannot work.

use super::Error;
use crate::idmap::IdMap;
use std::process::Command;
use std::sync::Once;

/// `(uid maps, gid maps)` for sandboxes started by this process.
pub fn id_maps() -> Result<(Vec<IdMap>, Vec<IdMap>), Error> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if uid == 0 {
        return Ok((vec![IdMap::IDENTITY], vec![IdMap::IDENTITY]));
    }
    let name = user_name(uid);
    let sub = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| subordinate_range(&s, name.as_deref(), uid))
    };
    let single = |host| {
        vec![IdMap {
            container: 0,
            host,
            size: 1,
        }]
    };
    match (sub("/etc/subuid"), sub("/etc/subgid")) {
        (Some((us, uc)), Some((gs, gc))) => {
            let mut u = single(uid);
            u.push(IdMap {
                container: 1,
                host: us,
                size: uc,
            });
            let mut g = single(gid);
            g.push(IdMap {
                container: 1,
                host: gs,
                size: gc,
            });
            Ok((u, g))
        }
        _ => {
            static WARN: Once = Once::new();
            WARN.call_once(|| {
                eprintln!(
                    "cairn: warning: no /etc/subuid and /etc/subgid range for {}: RUN steps can use only root; \
                     useradd, chown to another user and apt's _apt sandbox will fail",
                    name.as_deref().unwrap_or("this user")
                )
            });
            Ok((single(uid), single(gid)))
        }
    }
}

/// The first `start:count` range of `name` (or the numeric `uid`) in a subid file.
pub fn subordinate_range(file: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    file.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if Some(who) != name && who != uid.to_string() {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// Writes the maps of the user namespace of process `pid`.
pub fn write_maps(pid: u32, uids: &[IdMap], gids: &[IdMap]) -> Result<(), Error> {
    let proc = format!("/proc/{pid}");
    let text = |maps: &[IdMap]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
            .collect::<String>()
    };
    let write = |file: &str, body: &str| {
        std::fs::write(format!("{proc}/{file}"), body)
            .map_err(|e| Error::Message(format!("cannot write {file} of the sandbox: {e}")))
    };
    if nix::unistd::getuid().is_root() {
        write("uid_map", &text(uids))?;
        return write("gid_map", &text(gids));
    }
    if uids.len() == 1 {
        // Unprivileged users may map their own ids, once setgroups is denied.
        write("uid_map", &text(uids))?;
        write("setgroups", "deny")?;
        return write("gid_map", &text(gids));
    }
    helper("newuidmap", pid, uids)?;
    helper("newgidmap", pid, gids)
}

fn helper(tool: &str, pid: u32, maps: &[IdMap]) -> Result<(), Error> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container.to_string(),
            m.host.to_string(),
            m.size.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| {
        Error::Message(format!(
            "cannot run {tool} (install the uidmap package): {e}"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Message(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let f = "alice:100000:65536\n1001:300000:10\nbob:5:0\n";
        assert_eq!(
            subordinate_range(f, Some("alice"), 7),
            Some((100000, 65536))
        );
        assert_eq!(
            subordinate_range(f, Some("carol"), 1001),
            Some((300000, 10))
        );
        assert_eq!(subordinate_range(f, Some("bob"), 9), None);
        assert_eq!(subordinate_range(f, None, 9), None);
    }
}
