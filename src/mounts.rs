//! What `RUN --mount` may draw on from the command line: build secrets (`--secret
//! id=X,src=FILE` / `id=X,env=VAR`, as `docker build` takes them), SSH agent sockets
//! (`--ssh default`, `--ssh id=PATH`) and entitlements (`--allow network.host`,
//! `--allow security.insecure`), parsed into [`MountOptions`].
//!
//! Secret *values* are read only when a step mounts them (never at start-up, never into
//! the store), and no message of this module quotes one: errors name the id and the file
//! or variable.
//!
//! Also the store's side of cache mounts for `cairn cache`: [`cache_mounts`] lists them
//! (`cache-mounts/<sha256 of id>`, with the id in `<hash>.id` beside it) and
//! [`remove_cache_mounts`] empties them, apart from layers and cache entries.

use crate::error::{Error, Result};
use crate::store::Store;
use crate::userns::Privilege;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Reads the value. The error names the file or variable, never the bytes.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        match self {
            SecretSource::File(p) => std::fs::read(p).map_err(|e| {
                Error::Usage(format!(
                    "--secret id={id}: cannot read {}: {e}",
                    p.display()
                ))
            }),
            SecretSource::Env(v) => std::env::var_os(v)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--secret id={id}: environment variable {v} is not set"
                    ))
                }),
        }
    }
}

/// The build's secrets, SSH sockets and entitlements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub secrets: BTreeMap<String, SecretSource>,
    /// SSH agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--allow network.host`.
    pub allow_network_host: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
}

/// Splits `k=v,k=v` (docker's `--secret` syntax; a bare word is a key without value).
fn fields(spec: &str) -> Vec<(String, Option<String>)> {
    spec.split(',')
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (f.trim().to_ascii_lowercase(), None),
        })
        .collect()
}

/// Parses one `--secret` value: `id=X,src=FILE`, `id=X,env=VAR`, `id=X` (the variable X,
/// else the file X, as docker does), with `type=file|env` and the aliases `source`,
/// `required` is the Dockerfile's business, not this flag's.
pub fn parse_secret(spec: &str) -> std::result::Result<(String, SecretSource), String> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for (k, v) in fields(spec) {
        let v = v.ok_or_else(|| format!("--secret {spec:?}: expected key=value, got {k:?}"))?;
        match k.as_str() {
            "id" => id = Some(v),
            "src" | "source" => src = Some(v),
            "env" => env = Some(v),
            "type" => match v.as_str() {
                "file" | "env" => kind = Some(v),
                _ => return Err(format!("--secret: unsupported type {v:?} (file or env)")),
            },
            _ => {
                return Err(format!(
                    "--secret: unexpected key {k:?} (id, src, env, type)"
                ))
            }
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {spec:?}: an id is required (id=NAME,src=FILE)"))?;
    let source = match (src, env, kind.as_deref()) {
        (Some(_), Some(_), _) => {
            return Err(format!("--secret id={id}: give src or env, not both"))
        }
        (Some(s), None, Some("env")) | (None, Some(s), _) => SecretSource::Env(s),
        (Some(s), None, _) => SecretSource::File(s.into()),
        (None, None, Some("file")) => SecretSource::File(id.clone().into()),
        (None, None, Some("env")) => SecretSource::Env(id.clone()),
        (None, None, _) => {
            if std::env::var_os(&id).is_some() {
                SecretSource::Env(id.clone())
            } else {
                SecretSource::File(id.clone().into())
            }
        }
    };
    if matches!(&source, SecretSource::Env(v) if v.is_empty())
        || matches!(&source, SecretSource::File(p) if p.as_os_str().is_empty())
    {
        return Err(format!("--secret id={id}: empty source"));
    }
    Ok((id, source))
}

/// Parses one `--ssh` value: `default` (the socket `$SSH_AUTH_SOCK` names), `ID`
/// (likewise, under that id) or `ID=PATH` (an agent socket; docker's key-file lists are
/// not supported).
pub fn parse_ssh(
    spec: &str,
    auth_sock: Option<&str>,
) -> std::result::Result<(String, PathBuf), String> {
    let (id, path) = match spec.split_once('=') {
        Some((id, path)) => (id, Some(path)),
        None => (spec, None),
    };
    if id.is_empty() || id.contains(',') || id.contains('/') {
        return Err(format!("--ssh {spec:?}: expected default, ID or ID=SOCKET"));
    }
    let path = match path {
        Some(p) if p.contains(',') => {
            return Err(format!(
                "--ssh {id}: only one agent socket per id (key files are not supported)"
            ))
        }
        Some("") => return Err(format!("--ssh {id}=: empty socket path")),
        Some(p) => p.to_string(),
        None => match auth_sock {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => {
                return Err(format!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set (start an agent, or give {id}=SOCKET)"
                ))
            }
        },
    };
    Ok((id.to_string(), PathBuf::from(path)))
}

/// An `--ssh` agent offered to one step on a socket of its own, as BuildKit's SSH
/// forwarding does: `RUN --mount=type=ssh,mode=…,uid=…,gid=…` gives *that* socket the mode
/// and owner (default 0600, 0:0), which the user's own agent socket must never get. Each
/// connection to it is relayed to the agent by two copying threads; the listener polls a
/// stop flag, because once the socket belongs to the step's uid this process may no longer
/// be allowed to connect to it to wake an `accept`. Stopped and removed when dropped.
///
/// Hand-written because the relay is a few lines of `std::os::unix::net`; an async
/// runtime or a proxy process per step would cost more than it does.
pub struct AgentProxy {
    dir: tempfile::TempDir,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens on a new socket (in a short directory of the system's temporary one: a
    /// socket path has at most 107 bytes) that relays to the agent at `agent`.
    pub fn start(agent: &Path) -> Result<AgentProxy> {
        use std::os::unix::net::UnixListener;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::Builder::new()
            .prefix("cairn-ssh-")
            .tempdir()
            .map_err(|e| Error::io("cannot create a directory for the SSH agent socket", e))?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, agent) = (stop.clone(), agent.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay(client, &agent),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Ok(AgentProxy {
            dir,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket to mount into the step.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

/// Copies bytes both ways between a step's connection and a new one to the agent, each
/// direction on its own thread, closing the other side's writing half at the end. An
/// agent that cannot be reached closes the step's connection (ssh-add then says so).
fn relay(client: std::os::unix::net::UnixStream, agent: &Path) {
    use std::net::Shutdown;
    let Ok(upstream) = std::os::unix::net::UnixStream::connect(agent) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let pump = |mut from: std::os::unix::net::UnixStream,
                mut to: std::os::unix::net::UnixStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    match (client.try_clone(), upstream.try_clone()) {
        (Ok(c2), Ok(u2)) => {
            pump(client, upstream);
            pump(u2, c2);
        }
        _ => {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `--allow` entitlements.
pub fn parse_allow(values: &[String], opts: &mut MountOptions) -> Result<()> {
    for v in values.iter().flat_map(|v| v.split(',')) {
        match v.trim() {
            "network.host" => opts.allow_network_host = true,
            "security.insecure" => opts.allow_insecure = true,
            other => {
                return Err(Error::Usage(format!(
                    "--allow {other}: unknown entitlement (network.host or security.insecure)"
                )))
            }
        }
    }
    Ok(())
}

/// The store directory that holds every cache mount.
pub fn cache_root(store_root: &Path) -> PathBuf {
    store_root.join("cache-mounts")
}

/// One cache mount of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    /// The `id` (or target) the Dockerfile named.
    pub id: String,
    pub path: PathBuf,
    /// Files and bytes of regular files below.
    pub files: u64,
    pub bytes: u64,
}

/// Every cache mount of the store, by id.
pub fn cache_mounts(store: &Store) -> Vec<CacheMount> {
    let root = cache_root(store.root());
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut out: Vec<CacheMount> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let path = e.path();
            let id = std::fs::read_to_string(path.with_extension("id"))
                .unwrap_or_else(|_| e.file_name().to_string_lossy().into_owned());
            let (mut files, mut bytes) = (0, 0);
            for f in walkdir::WalkDir::new(&path).into_iter().flatten() {
                if f.file_type().is_file() {
                    files += 1;
                    bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
            CacheMount {
                id,
                path,
                files,
                bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Removes every cache mount no build holds locked (`sharing=locked|private` users hold
/// the lock; a `shared` user does not, so prune while no build runs). Rootless, the files
/// may belong to subordinate ids and are removed as the user namespace's root.
pub fn remove_cache_mounts(store: &Store, privilege: &Privilege) -> Result<(usize, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for m in cache_mounts(store) {
        let name = m.path.file_name().unwrap_or_default().to_string_lossy();
        let Some(_held) = store.try_lock(&format!("cache-mount-{name}"))? else {
            continue;
        };
        crate::userns::remove_as_root(privilege, &m.path)
            .map_err(|e| Error::Usage(format!("cannot remove {}: {e}", m.path.display())))?;
        let _ = std::fs::remove_file(m.path.with_extension("id"));
        n += 1;
        bytes += m.bytes;
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_as_docker_takes_them() {
        let f = |s: &str| parse_secret(s).unwrap();
        assert_eq!(
            f("id=tok,src=/run/tok"),
            ("tok".into(), SecretSource::File("/run/tok".into()))
        );
        assert_eq!(
            f("id=tok,source=/a"),
            ("tok".into(), SecretSource::File("/a".into()))
        );
        assert_eq!(
            f("id=tok,env=TOKEN"),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            f("id=tok,type=env,src=TOKEN"),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            f("id=cairn_surely_unset_var_x"),
            (
                "cairn_surely_unset_var_x".into(),
                SecretSource::File("cairn_surely_unset_var_x".into())
            )
        );
        assert!(parse_secret("src=/a").is_err());
        assert!(parse_secret("id=a,src=/a,env=B").is_err());
        assert!(parse_secret("id=a,bogus=1").is_err());
        assert!(parse_secret("id=a,src=").is_err());
        assert!(parse_secret("id").is_err());
    }

    #[test]
    fn ssh_takes_the_agent_socket() {
        assert_eq!(
            parse_ssh("default", Some("/tmp/agent.1")).unwrap(),
            ("default".into(), PathBuf::from("/tmp/agent.1"))
        );
        assert_eq!(
            parse_ssh("gh=/s", None).unwrap(),
            ("gh".into(), PathBuf::from("/s"))
        );
        assert!(parse_ssh("default", None).is_err());
        assert!(parse_ssh("=x", None).is_err());
        assert!(parse_ssh("a=/k1,/k2", None).is_err());
    }

    /// The proxy relays a request to the agent and its answer back, several times, and its
    /// socket is gone once it is dropped.
    #[test]
    fn the_agent_proxy_relays_both_ways() {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        // A fake agent: answers each connection's bytes upper-cased, then closes.
        std::thread::spawn(move || {
            for conn in agent.incoming() {
                let mut conn = conn.unwrap();
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                conn.write_all(&buf.to_ascii_uppercase()).unwrap();
            }
        });
        let proxy = AgentProxy::start(&agent_path).unwrap();
        let path = proxy.path();
        for word in ["hello", "again"] {
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(word.as_bytes()).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert_eq!(answer, word.to_ascii_uppercase());
        }
        drop(proxy);
        assert!(!path.exists());
    }

    #[test]
    fn entitlements() {
        let mut o = MountOptions::default();
        parse_allow(&["network.host,security.insecure".into()], &mut o).unwrap();
        assert!(o.allow_network_host && o.allow_insecure);
        assert!(parse_allow(&["device".into()], &mut o).is_err());
    }
}
