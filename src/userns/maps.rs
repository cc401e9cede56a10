//! Reading a subordinate id range and writing the maps of a helper that has just
//! unshared its user namespace: directly as root or for the user's own single id,
//! through the setuid `newuidmap`/`newgidmap` for a subordinate range.

use super::{Error, Privilege};
use crate::idmap::IdMap;
use std::process::Command;

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

/// Writes the maps of `privilege` for the user namespace of process `pid`.
pub fn write_maps(pid: u32, privilege: &Privilege) -> Result<(), Error> {
    let (uids, gids) = privilege.id_maps();
    let (uids, gids) = (&uids[..], &gids[..]);
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
    if privilege.is_root() {
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
