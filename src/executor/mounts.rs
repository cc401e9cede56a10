//! A RUN step's `--mount`s turned into the sandbox's [`StepMount`]s ([`prepare`]), and the
//! mount stubs removed from its change afterwards ([`remove_stubs`]).
//!
//! - `cache`: a directory `cache-mounts/<sha256 of id>` in the store, kept across builds and
//!   shared by every Dockerfile naming the same id (default: the target). Its contents never
//!   reach a key or a layer. `sharing=locked` holds the store lock `cache-mount-<hash>` for
//!   the step (concurrent builds on one store take turns); `private` takes that lock if free
//!   and otherwise gets a fresh empty directory for this step only; `shared` takes no lock.
//! - `tmpfs`: an empty tmpfs (`size` in bytes, or with a k/m/g suffix).
//! - `secret`: the value read (from `--secret`'s file or variable) when the step runs, handed
//!   to the sandbox in the job message and mounted from memory, or put in the step's
//!   environment (`env=`). Never in the store, a key, a layer, the config or a message.
//! - `ssh`: a socket of the step's own relaying to the agent of `--ssh ID`
//!   ([`crate::mounts::AgentProxy`]), with the mount's `mode`, `uid` and `gid` (default
//!   0600, 0:0, as BuildKit), bind-mounted (default target `/run/buildkit/ssh_agent.N`),
//!   `SSH_AUTH_SOCK` pointing at the first.
//!
//! - `bind` (the default type; `source` default `.`, `rw`): a path of the build context,
//!   resolved and hashed into the step's key by [`bind_inputs`] exactly as COPY sources are
//!   (the same Merkle hash: content, mode, owner, link target, never mtime; `--explain`
//!   names the changed file), then staged — checked against that hash — into the step's
//!   directory and bound from there: `.dockerignore` applies, and writes of an `rw` bind go
//!   to the copy and are discarded with it. With `from=` (a stage or image) the path is
//!   materialised from its layers and keyed by the stage's (image's) key, as `COPY --from`.
//!   A cache mount with `from=` is seeded from that path when it is created.
//!
//! Relative targets are taken against WORKDIR, as BuildKit does.

use super::env::{Step, StepEnv};
use crate::dockerfile::MountType;
use crate::error::{Error, Result};
use crate::plan::{ExpandedMount, ExpandedRun};
use crate::sandbox::{resolve_in_root, SecretBytes, StepMount, StepMountKind};
use crate::store::Lock;
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// What a bind mount binds, or a cache mount is seeded from, resolved and hashed when the
/// key is computed.
pub(super) struct BindInput {
    /// Index of the mount in the RUN's list.
    index: usize,
    /// Absolute target (WORKDIR applied).
    target: String,
    source: BindSource,
    pub hash: crate::context::InputsHash,
    readonly: bool,
}

enum BindSource {
    /// Context paths (resolved through `.dockerignore`).
    Context(Vec<crate::context::Source>),
    /// A path of a stage or image: its layers, materialised when the step runs.
    From {
        layers: Vec<crate::image::LayerDesc>,
        path: String,
    },
}

/// Where bound sources are staged, inside the step's directory.
const STAGED: &str = "/bound";

/// Resolves and hashes every `type=bind` mount of `run`, and every cache mount with
/// `from=` (its seed), in the order written; `froms` are the mounts' resolved `from=`.
/// Context sources are hashed like COPY sources; a stage or image source by the stage's
/// (image's) key and the path, as `COPY --from` is.
pub(super) fn bind_inputs(
    env: &StepEnv<'_>,
    step: &Step<'_>,
    run: &ExpandedRun,
    mut froms: Vec<Option<super::steps::FromSource>>,
) -> Result<Vec<BindInput>> {
    froms.resize_with(run.mounts.len(), || None);
    let workdir = step
        .state
        .config
        .config
        .working_dir
        .as_deref()
        .unwrap_or("/")
        .to_string();
    let mut out = Vec::new();
    for (index, (m, from)) in run.mounts.iter().zip(froms).enumerate() {
        let seeded_cache = m.kind == MountType::Cache && from.is_some();
        if m.kind != MountType::Bind && !seeded_cache {
            continue;
        }
        let at = env.location(step);
        let path = m.source.clone().unwrap_or_else(|| ".".into());
        let target = absolute(m.target.as_deref().unwrap_or_default(), &workdir);
        let readonly = m.kind == MountType::Bind && !flag(m, "readwrite");
        if let Some(f) = from {
            let mut h = crate::cache::Framer::new("cairn/mount-from/v1");
            h.field(f.key.0.as_str().as_bytes());
            h.field(path.as_bytes());
            out.push(BindInput {
                index,
                target,
                source: BindSource::From {
                    layers: f.layers,
                    path,
                },
                hash: crate::context::InputsHash {
                    digest: h.digest(),
                    files: Default::default(),
                },
                readonly,
            });
            continue;
        }
        let ctx = env.context.ok_or_else(|| {
            Error::Usage(format!(
                "{at}: RUN --mount=type=bind needs a build context, and a Dockerfile read from stdin has none"
            ))
        })?;
        let sources = ctx.resolve(std::slice::from_ref(&path))?;
        if sources.len() != 1 {
            return Err(Error::Usage(format!(
                "{at}: RUN --mount=type=bind,source={path}: names {} paths, a bind needs one",
                sources.len()
            )));
        }
        let hash = crate::context::hash_sources(
            &sources,
            STAGED,
            &crate::context::CopyOptions::default(),
        )?;
        out.push(BindInput {
            index,
            target,
            source: BindSource::Context(sources),
            hash,
            readonly,
        });
    }
    Ok(out)
}

/// Writes a bind's source under `root` at `dest` (a copy: the step's writes never reach
/// the context, a stage's layers or the store).
fn stage_bind(env: &StepEnv<'_>, b: &BindInput, root: &Path, dest: &str) -> Result<()> {
    let opts = crate::context::CopyOptions::default();
    match &b.source {
        BindSource::Context(sources) => {
            crate::context::stage_checked(sources, dest, &opts, root, &b.hash)?
        }
        BindSource::From { layers, path } => {
            let view = root.with_extension("view");
            std::fs::create_dir(&view)
                .map_err(|e| Error::io(format!("cannot create {}", view.display()), e))?;
            let lowers = super::steps::lowers(env, layers)?;
            super::merge::materialize(&lowers, std::slice::from_ref(path), &view)?;
            let sources = crate::context::resolve_in(&view, std::slice::from_ref(path))?;
            crate::context::stage(&sources, dest, &opts, root)?;
        }
    }
    Ok(())
}

/// The key's inputs digest of a RUN's bind mounts (`None` without any: the keys of steps
/// without bind mounts do not change).
pub(super) fn binds_digest(binds: &[BindInput]) -> Option<crate::digest::Digest> {
    if binds.is_empty() {
        return None;
    }
    let mut f = crate::cache::Framer::new("cairn/run-binds/v1");
    f.u64(binds.len() as u64);
    for b in binds {
        f.field(b.target.as_bytes());
        f.field(b.hash.digest.as_str().as_bytes());
        f.u64(u64::from(b.readonly));
    }
    Some(f.digest())
}

/// The sandbox mounts of a step, with what must live as long as the step does.
pub(super) struct MountSet {
    pub mounts: Vec<StepMount>,
    /// `K=V` for `type=secret,env=` and `SSH_AUTH_SOCK`.
    pub env: Vec<String>,
    _locks: Vec<Lock>,
    /// The step's own sockets relaying to `--ssh` agents.
    _agents: Vec<crate::mounts::AgentProxy>,
}

fn get<'a>(m: &'a ExpandedMount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .rev()
        .find(|o| o.0 == key)
        .map(|o| o.1.as_str())
}

fn flag(m: &ExpandedMount, key: &str) -> bool {
    matches!(
        get(m, key),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn number(m: &ExpandedMount, key: &str, default: u32, radix: u32) -> u32 {
    get(m, key)
        .and_then(|v| u32::from_str_radix(v, radix).ok())
        .unwrap_or(default)
}

/// A target made absolute against WORKDIR.
fn absolute(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), target)
    }
}

/// `10485760`, `64k`, `10m`, `1g` (docker's units, powers of 1024).
fn size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.char_indices().last()? {
        (i, 'k') => (&v[..i], 1u64 << 10),
        (i, 'm') => (&v[..i], 1 << 20),
        (i, 'g') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Resolves every mount of `run` for the step at hand.
/// `binds` are the step's [`bind_inputs`]; `dir` is the step's own temporary directory.
pub(super) fn prepare(
    env: &StepEnv<'_>,
    step: &Step<'_>,
    run: &ExpandedRun,
    binds: &[BindInput],
    dir: &Path,
) -> Result<MountSet> {
    let workdir = step
        .state
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let at = || env.location(step);
    let mut set = MountSet {
        mounts: Vec::new(),
        env: Vec::new(),
        _locks: Vec::new(),
        _agents: Vec::new(),
    };
    let mut ssh_count = 0;
    for (i, m) in run.mounts.iter().enumerate() {
        match m.kind {
            MountType::Cache => {
                let target = absolute(m.target.as_deref().unwrap_or_default(), &workdir);
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let hash = hex::encode(Sha256::digest(id.as_bytes()));
                let lock_name = format!("cache-mount-{hash}");
                let sharing = get(m, "sharing").unwrap_or("shared");
                let shared = crate::mounts::cache_root(env.store.root()).join(&hash);
                let source = match sharing {
                    "locked" => {
                        set._locks.push(env.store.lock(&lock_name)?);
                        shared
                    }
                    "private" => match env.store.try_lock(&lock_name)? {
                        Some(l) => {
                            set._locks.push(l);
                            shared
                        }
                        // In the step's directory: removed with it (as root if rootless).
                        None => dir.join(format!("cache-private-{i}")),
                    },
                    _ => shared,
                };
                let fresh = !source.is_dir();
                if fresh {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| Error::io(format!("cannot create {}", source.display()), e))?;
                    // For `cairn cache ls` (ids are names, not secrets).
                    let _ = std::fs::write(source.with_extension("id"), &id);
                    // `from=`: a new cache starts as a copy of that path.
                    if let Some(b) = binds.iter().find(|b| b.index == i) {
                        stage_bind(env, b, &source, "/")?;
                    }
                }
                set.mounts.push(StepMount {
                    target,
                    kind: StepMountKind::Bind {
                        source,
                        readonly: flag(m, "readonly"),
                        init: fresh.then(|| {
                            (
                                number(m, "mode", 0o755, 8),
                                number(m, "uid", 0, 10),
                                number(m, "gid", 0, 10),
                            )
                        }),
                        file: false,
                    },
                });
            }
            MountType::Tmpfs => {
                let size = match get(m, "size") {
                    Some(v) => Some(size(v).ok_or_else(|| {
                        Error::Usage(format!(
                            "{}: RUN --mount=type=tmpfs,size={v}: expected bytes, or a number with k, m or g",
                            at()
                        ))
                    })?),
                    None => None,
                };
                set.mounts.push(StepMount {
                    target: absolute(m.target.as_deref().unwrap_or_default(), &workdir),
                    kind: StepMountKind::Tmpfs { size },
                });
            }
            MountType::Secret => {
                let id = match (&m.id, &m.target) {
                    (Some(id), _) => id.clone(),
                    (None, Some(t)) => Path::new(t)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    (None, None) => String::new(),
                };
                if id.is_empty() {
                    return Err(Error::Usage(format!(
                        "{}: RUN --mount=type=secret needs an id (or a target to name it)",
                        at()
                    )));
                }
                let Some(source) = env.mounts.secrets.get(&id) else {
                    if flag(m, "required") {
                        return Err(Error::Usage(format!(
                            "{}: secret {id} is required but was not given (cairn build --secret id={id},src=FILE)",
                            at()
                        )));
                    }
                    continue;
                };
                let bytes = source.read(&id)?;
                let env_var = get(m, "env");
                if let Some(var) = env_var {
                    let value = String::from_utf8(bytes.clone()).map_err(|_| {
                        Error::Usage(format!(
                            "{}: secret {id} is not UTF-8 text and cannot be put in {var}",
                            at()
                        ))
                    })?;
                    set.env.push(format!("{var}={value}"));
                }
                if m.target.is_some() || env_var.is_none() {
                    let target = m
                        .target
                        .clone()
                        .unwrap_or_else(|| format!("/run/secrets/{id}"));
                    set.mounts.push(StepMount {
                        target: absolute(&target, &workdir),
                        kind: StepMountKind::Secret {
                            bytes: SecretBytes(bytes),
                            mode: number(m, "mode", 0o400, 8),
                            uid: number(m, "uid", 0, 10),
                            gid: number(m, "gid", 0, 10),
                        },
                    });
                }
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let Some(socket) = env.mounts.ssh.get(&id) else {
                    if flag(m, "required") {
                        return Err(Error::Usage(format!(
                            "{}: SSH agent {id} is required but was not given (cairn build --ssh {id})",
                            at()
                        )));
                    }
                    continue;
                };
                if std::fs::metadata(socket).is_err() {
                    return Err(Error::Usage(format!(
                        "{}: --ssh {id}: the agent socket {} is gone (is the agent running?)",
                        at(),
                        socket.display()
                    )));
                }
                let target = m
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
                let target = absolute(&target, &workdir);
                if ssh_count == 0 {
                    set.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                ssh_count += 1;
                // A socket of the step's own with the mode and owner asked for (BuildKit's
                // defaults 0600, 0:0), relaying to the agent: the agent's socket is the
                // user's, and keeps its mode and owner.
                let proxy = crate::mounts::AgentProxy::start(socket)?;
                set.mounts.push(StepMount {
                    target,
                    kind: StepMountKind::Bind {
                        source: proxy.path(),
                        readonly: false,
                        init: Some((
                            number(m, "mode", 0o600, 8),
                            number(m, "uid", 0, 10),
                            number(m, "gid", 0, 10),
                        )),
                        file: true,
                    },
                });
                set._agents.push(proxy);
            }
            MountType::Bind => {
                let b = binds
                    .iter()
                    .find(|b| b.index == i)
                    .ok_or_else(|| Error::Internal("bind mount not prepared".into()))?;
                let root = dir.join(format!("bind-{i}"));
                std::fs::create_dir(&root)
                    .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
                stage_bind(env, b, &root, STAGED)?;
                let source = root.join(STAGED.trim_start_matches('/'));
                let file = !source.is_dir();
                set.mounts.push(StepMount {
                    target: b.target.clone(),
                    kind: StepMountKind::Bind {
                        source,
                        readonly: b.readonly,
                        init: None,
                        file,
                    },
                });
            }
        }
    }
    Ok(set)
}

/// Removes from a finished step's upper directory the mount points the sandbox created
/// for targets missing from the image (an empty directory or file, and empty parents that
/// were missing too), so they never reach the layer.
pub(super) fn remove_stubs(upper: &Path, lowers: &[PathBuf], mounts: &[StepMount]) {
    let in_lowers = |rel: &Path| {
        lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
    };
    for m in mounts.iter().rev() {
        // Where the sandbox put it: the target as the image's top-most lower resolves it.
        let mut candidates = vec![PathBuf::from(m.target.trim_start_matches('/'))];
        for l in lowers.iter().rev() {
            if let Ok(p) = resolve_in_root(l, &m.target) {
                if let Ok(rel) = p.strip_prefix(l) {
                    candidates.push(rel.to_path_buf());
                }
            }
        }
        for rel in candidates {
            let mut rel = rel.as_path();
            loop {
                if rel.as_os_str().is_empty() || in_lowers(rel) {
                    break;
                }
                let p = upper.join(rel);
                let removed = match std::fs::symlink_metadata(&p) {
                    Ok(md) if md.is_dir() => std::fs::remove_dir(&p).is_ok(),
                    Ok(md) if md.is_file() && md.len() == 0 => std::fs::remove_file(&p).is_ok(),
                    Ok(md) if md.file_type().is_socket() => std::fs::remove_file(&p).is_ok(),
                    _ => false,
                };
                if !removed {
                    break;
                }
                match rel.parent() {
                    Some(parent) => rel = parent,
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_targets() {
        assert_eq!(size("1048576"), Some(1 << 20));
        assert_eq!(size("64k"), Some(64 << 10));
        assert_eq!(size("10m"), Some(10 << 20));
        assert_eq!(size("1G"), Some(1 << 30));
        assert_eq!(size("x"), None);
        assert_eq!(absolute("cache", "/src"), "/src/cache");
        assert_eq!(absolute("/c", "/src"), "/c");
    }

    #[test]
    fn stubs_missing_from_the_image_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("l"), d.path().join("u"));
        std::fs::create_dir_all(lower.join("usr")).unwrap();
        std::fs::create_dir_all(upper.join("usr/new/cache")).unwrap();
        std::fs::create_dir_all(upper.join("run/secrets")).unwrap();
        std::fs::write(upper.join("run/secrets/tok"), b"").unwrap();
        std::fs::create_dir_all(upper.join("keep/c")).unwrap();
        std::fs::write(upper.join("keep/file"), b"made by the step").unwrap();
        let mount = |t: &str| StepMount {
            target: t.into(),
            kind: StepMountKind::Tmpfs { size: None },
        };
        remove_stubs(
            &upper,
            &[lower],
            &[
                mount("/usr/new/cache"),
                mount("/run/secrets/tok"),
                mount("/keep/c"),
            ],
        );
        assert!(upper.join("usr").is_dir(), "usr exists in the image");
        assert!(!upper.join("usr/new").exists());
        assert!(!upper.join("run").exists());
        assert!(!upper.join("keep/c").exists());
        assert!(upper.join("keep/file").is_file());
    }
}
