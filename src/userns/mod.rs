//! The privilege broker: [`Privilege`] says once per process whether cairn runs as real
//! root or rootless (and then with which user-namespace id maps), and [`run_job`] does a
//! piece of file-system work "as the container's root" in a re-executed helper process
//! that has unshared a user namespace with those maps.
//!
//! It sits below `rootfs`, `layer` and `sandbox`, which each define their own [`Job`]
//! payloads beside their code; none of them knows the others' jobs. The helper process
//! (this binary with [`HELPER_ARG`]) is handed to one closed dispatcher at the top of the
//! crate (`cli::helper`) that knows every job kind. The decision itself is
//! [`Privilege::detect_from`], a pure function over what [`Environment::read`] gathers, so
//! `/etc/subuid` and `/etc/subgid` are read once, not once per layer.

mod helper;
mod job;
mod maps;
mod protocol;

pub use helper::{answer_userns, child_main, perform, send, Helper, EXE_ENV, HELPER_ARG};
pub use job::{remove_as_root, run_job, Job, Namespaces, RemoveJob};
pub use maps::{subordinate_range, write_maps};
pub use protocol::{Report, GO};

use crate::idmap::IdMap;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
    #[error("helper: {0}")]
    Io(#[from] std::io::Error),
}

/// Who cairn is on this machine, decided once at start-up and passed down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Effective uid 0: every sandbox maps ids one to one; files are owned as written.
    Root,
    /// An unprivileged user: container root is this user, other ids come from its
    /// subordinate range (if any), and work on files of those ids runs in a helper.
    Rootless(Rootless),
}

/// The id maps of a rootless user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootless {
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    /// Why only the user's own id is mapped, when it has no subordinate range.
    pub warning: Option<String>,
}

/// What the decision reads from the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub euid: u32,
    /// The real ids: `newuidmap` checks the subordinate range against the real uid.
    pub uid: u32,
    pub gid: u32,
    /// The user's name in `/etc/passwd` (subid files may name users either way).
    pub user_name: Option<String>,
    /// The contents of `/etc/subuid` and `/etc/subgid` (`None` when unreadable).
    pub subuid: Option<String>,
    pub subgid: Option<String>,
}

impl Environment {
    /// Reads this process's ids and, unless it is root, the user database files.
    pub fn read() -> Environment {
        let euid = nix::unistd::geteuid().as_raw();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        if euid == 0 {
            return Environment {
                euid,
                uid,
                gid,
                ..Environment::default()
            };
        }
        Environment {
            euid,
            uid,
            gid,
            user_name: user_name(uid),
            subuid: std::fs::read_to_string("/etc/subuid").ok(),
            subgid: std::fs::read_to_string("/etc/subgid").ok(),
        }
    }
}

impl Privilege {
    /// The privilege of this process (reads the environment once; call it once).
    pub fn detect() -> Privilege {
        Privilege::detect_from(&Environment::read())
    }

    /// The decision: root when the effective uid is 0; otherwise rootless, with container
    /// root mapped to the user and ids from 1 on to its first `/etc/subuid` and
    /// `/etc/subgid` range, or to nothing (and a warning) when it has none.
    pub fn detect_from(env: &Environment) -> Privilege {
        if env.euid == 0 {
            return Privilege::Root;
        }
        let single = |host| IdMap {
            container: 0,
            host,
            size: 1,
        };
        let range = |file: &Option<String>| {
            file.as_deref()
                .and_then(|f| subordinate_range(f, env.user_name.as_deref(), env.uid))
        };
        match (range(&env.subuid), range(&env.subgid)) {
            (Some((us, uc)), Some((gs, gc))) => Privilege::Rootless(Rootless {
                uid_maps: vec![
                    single(env.uid),
                    IdMap {
                        container: 1,
                        host: us,
                        size: uc,
                    },
                ],
                gid_maps: vec![
                    single(env.gid),
                    IdMap {
                        container: 1,
                        host: gs,
                        size: gc,
                    },
                ],
                warning: None,
            }),
            _ => Privilege::Rootless(Rootless {
                uid_maps: vec![single(env.uid)],
                gid_maps: vec![single(env.gid)],
                warning: Some(format!(
                    "no /etc/subuid and /etc/subgid range for {}: RUN steps can use only root; \
                     useradd, chown to another user and apt's _apt sandbox will fail",
                    env.user_name.as_deref().unwrap_or("this user")
                )),
            }),
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self, Privilege::Root)
    }

    /// `(uid maps, gid maps)` of the user namespaces this process makes.
    pub fn id_maps(&self) -> (Vec<IdMap>, Vec<IdMap>) {
        match self {
            Privilege::Root => (vec![IdMap::IDENTITY], vec![IdMap::IDENTITY]),
            Privilege::Rootless(r) => (r.uid_maps.clone(), r.gid_maps.clone()),
        }
    }

    /// What the user should know about this privilege (a missing subordinate range).
    pub fn warning(&self) -> Option<&str> {
        match self {
            Privilege::Root => None,
            Privilege::Rootless(r) => r.warning.as_deref(),
        }
    }
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container: u32, host: u32, size: u32) -> IdMap {
        IdMap {
            container,
            host,
            size,
        }
    }

    #[test]
    fn the_privilege_is_decided_from_the_environment() {
        let sub = Some("alice:100000:65536\n1001:300000:10\n".to_string());
        let user = |euid: u32, name: Option<&str>, subuid: &Option<String>| Environment {
            euid,
            uid: euid,
            gid: euid + 1,
            user_name: name.map(str::to_string),
            subuid: subuid.clone(),
            subgid: subuid.clone(),
        };
        // (environment, expected (uid maps, gid maps) or root, warns)
        type Maps = Option<(Vec<IdMap>, Vec<IdMap>)>;
        let table: Vec<(Environment, Maps, bool)> = vec![
            (user(0, Some("root"), &None), None, false),
            (
                user(1000, Some("alice"), &sub),
                Some((
                    vec![map(0, 1000, 1), map(1, 100000, 65536)],
                    vec![map(0, 1001, 1), map(1, 100000, 65536)],
                )),
                false,
            ),
            (
                user(1001, None, &sub),
                Some((
                    vec![map(0, 1001, 1), map(1, 300000, 10)],
                    vec![map(0, 1002, 1), map(1, 300000, 10)],
                )),
                false,
            ),
            (
                user(1002, Some("bob"), &sub),
                Some((vec![map(0, 1002, 1)], vec![map(0, 1003, 1)])),
                true,
            ),
            (
                user(1000, Some("alice"), &None),
                Some((vec![map(0, 1000, 1)], vec![map(0, 1001, 1)])),
                true,
            ),
        ];
        for (env, maps, warns) in table {
            let p = Privilege::detect_from(&env);
            match maps {
                None => {
                    assert_eq!(p, Privilege::Root, "{env:?}");
                    assert_eq!(p.id_maps().0, vec![IdMap::IDENTITY]);
                }
                Some(m) => {
                    assert!(!p.is_root(), "{env:?}");
                    assert_eq!(p.id_maps(), m, "{env:?}");
                }
            }
            assert_eq!(p.warning().is_some(), warns, "{env:?}");
        }
        // A subgid range alone is not enough: both files must name the user.
        let only_uid = Environment {
            subgid: None,
            ..user(1000, Some("alice"), &sub)
        };
        assert!(Privilege::detect_from(&only_uid).warning().is_some());
        // Only the effective uid makes root.
        let setuid = Environment {
            uid: 0,
            ..user(1000, Some("alice"), &sub)
        };
        assert!(!Privilege::detect_from(&setuid).is_root());
    }
}
