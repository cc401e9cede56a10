//! [`resolve_user`]: `USER` as written (`name`, `uid`, `name:group`, `uid:gid`) resolved
//! against the image's own `/etc/passwd` and `/etc/group`, read through the
//! [`LayerStack`] as overlayfs would show them.

use super::Error;
use crate::stack::LayerStack;
use std::path::{Path, PathBuf};

/// The contents of `rel` in the image made of `lowers`, empty when it has none.
fn read_from(lowers: &[PathBuf], rel: &str) -> String {
    LayerStack::new(lowers)
        .lookup(Path::new(rel))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// `(uid, gid, supplementary gids)` for `user` in the image made of `lowers`.
pub fn resolve_user(lowers: &[PathBuf], user: &str) -> Result<(u32, u32, Vec<u32>), Error> {
    resolve_in(
        &read_from(lowers, "etc/passwd"),
        &read_from(lowers, "etc/group"),
        user,
    )
}

/// [`resolve_user`] over the files' contents.
pub fn resolve_in(passwd: &str, group: &str, user: &str) -> Result<(u32, u32, Vec<u32>), Error> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() {
        "root"
    } else {
        user_part
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, name) = match (found, user_part.parse::<u32>()) {
        (Some(f), _) => (parse_id(f[2], user)?, parse_id(f[3], user)?, Some(f[0])),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) if user_part == "root" => (0, 0, None),
        (None, Err(_)) => {
            return Err(Error::Message(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let f = groups.iter().find(|f| f[0] == g).ok_or_else(|| {
                    Error::Message(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?;
                parse_id(f[2], user)?
            }
        };
        return Ok((uid, gid, vec![gid]));
    }
    let mut supplementary = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            let member = f.get(3).is_some_and(|m| m.split(',').any(|m| m == name));
            if member {
                let id = parse_id(f[2], user)?;
                if !supplementary.contains(&id) {
                    supplementary.push(id);
                }
            }
        }
    }
    Ok((uid, gid, supplementary))
}

/// The home directory of `uid` in the image made of `lowers`, `/` when it has none (what
/// runc gives a process whose environment has no HOME).
pub fn home_of(lowers: &[PathBuf], uid: u32) -> String {
    home_in(&read_from(lowers, "etc/passwd"), uid)
}

/// [`home_of`] over the file's contents.
pub fn home_in(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map(|f| f[5].to_string())
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| "/".into())
}

fn parse_id(s: &str, user: &str) -> Result<u32, Error> {
    s.parse().map_err(|_| {
        Error::Message(format!(
            "bad id {s:?} in the image's user database for {user:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\ncoder:x:1000:1000::/home/coder:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:coder\ncoder:x:1000:\ndocker:x:999:other,coder\n";

    #[test]
    fn names_ids_and_groups() {
        assert_eq!(resolve_in(PASSWD, GROUP, "").unwrap(), (0, 0, vec![0]));
        assert_eq!(
            resolve_in(PASSWD, GROUP, "coder").unwrap(),
            (1000, 1000, vec![1000, 27, 999])
        );
        assert_eq!(
            resolve_in(PASSWD, GROUP, "1000").unwrap(),
            (1000, 1000, vec![1000, 27, 999])
        );
        assert_eq!(
            resolve_in(PASSWD, GROUP, "4242").unwrap(),
            (4242, 0, vec![0])
        );
        assert_eq!(
            resolve_in(PASSWD, GROUP, "coder:docker").unwrap(),
            (1000, 999, vec![999])
        );
        assert_eq!(
            resolve_in(PASSWD, GROUP, "_apt:7").unwrap(),
            (42, 7, vec![7])
        );
        assert_eq!(resolve_in("", "", "root").unwrap(), (0, 0, vec![0]));
        assert!(resolve_in(PASSWD, GROUP, "nobody").is_err());
        assert!(resolve_in(PASSWD, GROUP, "coder:nogroup").is_err());
    }

    #[test]
    fn homes_come_from_passwd() {
        assert_eq!(home_in(PASSWD, 1000), "/home/coder");
        assert_eq!(home_in(PASSWD, 0), "/root");
        assert_eq!(home_in(PASSWD, 4242), "/");
    }

    #[test]
    fn the_topmost_layer_wins_and_whiteouts_hide() {
        let dir = tempfile::tempdir().unwrap();
        let layer = |n: &str, body: Option<&str>| {
            let l = dir.path().join(n);
            std::fs::create_dir_all(l.join("etc")).unwrap();
            match body {
                Some(b) => std::fs::write(l.join("etc/passwd"), b).unwrap(),
                None => crate::overlay::make_whiteout(&l.join("etc/passwd")).unwrap(),
            }
            l
        };
        let base = layer("base", Some("root:x:0:0::/:/bin/sh\n"));
        let top = layer("top", Some("root:x:0:0::/:/bin/sh\nbob:x:5:5::/:/bin/sh\n"));
        assert_eq!(
            resolve_user(&[base.clone(), top.clone()], "bob").unwrap().0,
            5
        );
        assert!(resolve_user(std::slice::from_ref(&base), "bob").is_err());
        let gone = layer("gone", None);
        assert_eq!(read_from(&[top, gone], "etc/passwd"), "");
    }
}
