//! [`docker_load`]: hands a [`BuiltImage`] to the Docker Engine — skipped when the engine
//! already has that image ID — then tags it and reads the ID back as the engine reports it
//! (with the containerd image store that can be the manifest digest, not the config's).

use super::archive::{write_docker_archive, write_docker_archive_omitting};
use super::engine::Engine;
use super::tags::normalize_tag;
use super::{BuiltImage, Error};
use crate::store::Store;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadVia {
    /// The docker CLI at this path: it honours `DOCKER_HOST`, contexts and TLS settings.
    Cli(PathBuf),
    /// The Engine API on this unix socket.
    Socket(PathBuf),
}

/// The socket the docker CLI talks to when nothing says otherwise.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl LoadVia {
    /// The way that reaches the engine the docker CLI would use, fastest first: the Engine
    /// API on the socket when the CLI would use that socket too (no `DOCKER_HOST` other
    /// than `unix://…`, no docker context other than `default`), else the docker CLI from
    /// `PATH`, so that remote hosts, contexts and TLS settings work as the user set them.
    /// The socket saves a CLI start (50–150 ms each) per inspect and tag, which is most of
    /// a no-op build's time.
    pub fn detect() -> Result<LoadVia, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config_context = || {
            let dir = crate::registry::docker_config_dir(None)?;
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
            v["currentContext"].as_str().map(str::to_string)
        };
        detect_from(&DetectInput {
            docker_host: env("DOCKER_HOST"),
            docker_context: env("DOCKER_CONTEXT").or_else(config_context),
            cli: find_in_path("docker"),
            default_socket_exists: Path::new(DEFAULT_SOCKET).exists(),
        })
    }
}

/// What [`LoadVia::detect`] decides from.
struct DetectInput {
    docker_host: Option<String>,
    /// `DOCKER_CONTEXT`, else `currentContext` from the docker config.
    docker_context: Option<String>,
    cli: Option<PathBuf>,
    default_socket_exists: bool,
}

fn detect_from(i: &DetectInput) -> Result<LoadVia, Error> {
    if let Some(h) = &i.docker_host {
        if let Some(p) = h.strip_prefix("unix://") {
            return Ok(LoadVia::Socket(PathBuf::from(p)));
        }
        return match &i.cli {
            Some(cli) => Ok(LoadVia::Cli(cli.clone())),
            None => Err(Error::DockerUnreachable(format!(
                "DOCKER_HOST={h} needs the docker CLI, which is not on PATH; \
                 install it or use a unix:// socket"
            ))),
        };
    }
    let other_context = i.docker_context.as_deref().is_some_and(|c| c != "default");
    match &i.cli {
        Some(cli) if other_context || !i.default_socket_exists => Ok(LoadVia::Cli(cli.clone())),
        _ => Ok(LoadVia::Socket(PathBuf::from(DEFAULT_SOCKET))),
    }
}

/// Loads `img` into Docker (unless it is already there), tags it with `tags`, and returns
/// the image ID Docker reports.
pub fn docker_load(store: &Store, img: &BuiltImage, tags: &[String]) -> Result<String, Error> {
    docker_load_via(&LoadVia::detect()?, store, img, tags)
}

/// [`docker_load`] through a given way to the engine.
pub fn docker_load_via(
    via: &LoadVia,
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
) -> Result<String, Error> {
    let tags: Vec<String> = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<Result<_, _>>()?;
    match via {
        LoadVia::Cli(cli) => load_with(&Cli(cli), store, img, &tags),
        LoadVia::Socket(sock) => load_with(&Engine::new(sock), store, img, &tags),
    }
}

/// [`docker_load`] that reports the bytes it streams to the engine through `rep`.
pub fn docker_load_reporting(
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
    rep: &crate::events::Reporter,
) -> Result<String, Error> {
    let tags: Vec<String> = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<Result<_, _>>()?;
    let name = tags
        .first()
        .cloned()
        .unwrap_or_else(|| img.config.to_string());
    let via = LoadVia::detect()?;
    let (cli, engine);
    let inner: &dyn EngineOps = match &via {
        LoadVia::Cli(c) => {
            cli = Cli(c);
            &cli
        }
        LoadVia::Socket(sock) => {
            engine = Engine::new(sock);
            &engine
        }
    };
    let reporting = super::progress::Reporting {
        inner,
        rep,
        name: &name,
    };
    load_with(&reporting, store, img, &tags)
}

/// Writes the docker-archive into the writer it is given (run on a second thread).
pub(crate) type WriteArchive<'a> = dyn FnMut(&mut dyn Write) -> Result<(), Error> + Send + 'a;

/// What a load needs from the engine, by CLI or by API.
pub(crate) trait EngineOps {
    /// `reference` as the engine has it, or `None` when it has no such image.
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error>;
    /// The ID of `reference`, or `None` when the engine has no such image.
    fn image_id(&self, reference: &str) -> Result<Option<String>, Error> {
        Ok(self.inspect(reference)?.map(|i| i.id))
    }
    /// Loads the docker-archive `write` produces; returns what the engine printed.
    fn load(&self, write: &mut WriteArchive) -> Result<String, Error>;
    /// Tags image `id` as the normalised `tag`.
    fn tag(&self, id: &str, tag: &str) -> Result<(), Error>;
    /// Whether `docker load` leaves unread the tar of a layer whose chain the engine already
    /// has: the classic (graph driver) image store does, the containerd one imports every
    /// blob it is given and needs them all.
    fn skips_present_layers(&self) -> Result<bool, Error> {
        Ok(false)
    }
}

/// An image as the engine shows it.
pub(crate) struct Inspected {
    pub id: String,
    /// Its layers' diffIDs, bottom first, where the way to the engine tells them cheaply.
    pub layers: Option<Vec<String>>,
}

/// How many of `img`'s bottom layers the engine already has as a chain: the longest prefix
/// `img` shares with an image its tags name now (`tagged`, usually the previous build).
/// Zero unless the engine's load skips such layers.
fn present_layers(
    e: &dyn EngineOps,
    img: &BuiltImage,
    tagged: &[Option<Inspected>],
) -> Result<usize, Error> {
    let mut best = 0;
    for theirs in tagged.iter().flatten().filter_map(|i| i.layers.as_ref()) {
        let shared = img
            .layers
            .iter()
            .zip(theirs)
            .take_while(|(l, d)| l.diff_id.as_str() == d.as_str())
            .count();
        best = best.max(shared);
    }
    if best > 0 && !e.skips_present_layers()? {
        best = 0;
    }
    Ok(best)
}

fn load_with(
    e: &dyn EngineOps,
    store: &Store,
    img: &BuiltImage,
    tags: &[String],
) -> Result<String, Error> {
    // The usual no-op: every tag already names this image. One inspect per tag and nothing
    // written (the engine saves its whole tag store on every tag, even an unchanged one).
    // With the containerd image store the ID is the manifest digest: the full path below.
    let tagged: Vec<Option<Inspected>> = tags
        .iter()
        .map(|t| e.inspect(t))
        .collect::<Result<_, _>>()?;
    if !tags.is_empty()
        && tagged
            .iter()
            .all(|i| i.as_ref().is_some_and(|i| i.id == img.config.as_str()))
    {
        return Ok(img.config.to_string());
    }
    let id = match e.image_id(img.config.as_str())? {
        Some(id) => id,
        None => {
            // After a change late in the Dockerfile most layers are already in the engine:
            // send only the others. Should the engine want them after all, send them all.
            let present = present_layers(e, img, &tagged)?;
            let full =
                |e: &dyn EngineOps| e.load(&mut |w| write_docker_archive(store, img, tags, w));
            let printed = if present > 0 {
                match e.load(&mut |w| write_docker_archive_omitting(store, img, tags, present, w)) {
                    Err(Error::Docker { .. }) => full(e)?,
                    other => other?,
                }
            } else {
                full(e)?
            };
            // Ask by name: with the containerd image store the ID is the manifest digest.
            let by = tags
                .first()
                .map(String::as_str)
                .or_else(|| loaded_id(&printed));
            let id = match by {
                Some(r) => e.image_id(r)?,
                None => e.image_id(img.config.as_str())?,
            };
            id.ok_or_else(|| Error::Docker {
                action: "load".into(),
                detail: format!(
                    "the engine does not show image {} after loading it",
                    img.config
                ),
            })?
        }
    };
    for t in tags {
        e.tag(&id, t)?;
    }
    Ok(id)
}

/// The ID in `docker load`'s "Loaded image ID: sha256:…" line, when it printed one.
fn loaded_id(printed: &str) -> Option<&str> {
    printed
        .split("Loaded image ID: ")
        .nth(1)?
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .next()
}

struct Cli<'a>(&'a Path);

impl Cli<'_> {
    /// Runs `docker <action> args…`; stdout on success, a classified error otherwise.
    fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        &self,
        action: &str,
        args: I,
    ) -> Result<String, Error> {
        let out = Command::new(self.0)
            .arg(action)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(self.0))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(Error::from_docker(
                action,
                &String::from_utf8_lossy(&out.stderr),
            ))
        }
    }
}

impl EngineOps for Cli<'_> {
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error> {
        match self.run("image", ["inspect", "--format", "{{.Id}}", reference]) {
            Ok(id) => Ok(Some(Inspected { id, layers: None })),
            Err(Error::Docker { detail, .. })
                if detail.to_ascii_lowercase().contains("no such image") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Streams the docker-archive into `docker load` on stdin.
    fn load(&self, write: &mut WriteArchive) -> Result<String, Error> {
        let mut child = Command::new(self.0)
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(self.0))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Write from a second thread while this one drains stdout/stderr, so neither side
        // can block the other on a full pipe.
        let (written, out) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let r = write(&mut stdin);
                drop(stdin);
                r
            });
            let out = child.wait_with_output();
            (writer.join().expect("archive writer thread"), out)
        });
        let out = out.map_err(Error::io(self.0))?;
        // Our own failure comes first: a truncated archive makes docker say odd things.
        // A broken pipe only means docker stopped reading; its own message says why.
        match written {
            Err(Error::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if !out.status.success() {
            let mut detail = String::from_utf8_lossy(&out.stderr).into_owned();
            detail.push_str(&String::from_utf8_lossy(&out.stdout));
            return Err(Error::from_docker("load", &detail));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn tag(&self, id: &str, tag: &str) -> Result<(), Error> {
        self.run("tag", [id, tag]).map(drop)
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_uses_the_socket_only_where_the_cli_would() {
        let cli = Some(PathBuf::from("/usr/bin/docker"));
        let input = |host: Option<&str>, ctx: Option<&str>, cli: &Option<PathBuf>, sock| {
            detect_from(&DetectInput {
                docker_host: host.map(str::to_string),
                docker_context: ctx.map(str::to_string),
                cli: cli.clone(),
                default_socket_exists: sock,
            })
        };
        let socket = |p: &str| Ok::<_, ()>(LoadVia::Socket(PathBuf::from(p)));
        let via_cli = Ok::<_, ()>(LoadVia::Cli(PathBuf::from("/usr/bin/docker")));
        let ok = |r: Result<LoadVia, Error>| r.map_err(drop);
        // Nothing set: the default socket, CLI or not.
        assert_eq!(ok(input(None, None, &cli, true)), socket(DEFAULT_SOCKET));
        assert_eq!(
            ok(input(None, Some("default"), &cli, true)),
            socket(DEFAULT_SOCKET)
        );
        assert_eq!(ok(input(None, None, &None, false)), socket(DEFAULT_SOCKET));
        // DOCKER_HOST=unix://…: that socket.
        assert_eq!(
            ok(input(
                Some("unix:///run/user/1000/docker.sock"),
                None,
                &cli,
                true
            )),
            socket("/run/user/1000/docker.sock")
        );
        // A remote host, another context, or no default socket: the CLI knows the way.
        assert_eq!(
            ok(input(Some("tcp://10.0.0.1:2376"), None, &cli, true)),
            via_cli
        );
        assert_eq!(ok(input(None, Some("remote"), &cli, true)), via_cli);
        assert_eq!(ok(input(None, None, &cli, false)), via_cli);
        let err = input(Some("ssh://host"), None, &None, true).unwrap_err();
        assert!(err.to_string().contains("not on PATH"), "{err}");
    }

    #[test]
    fn reads_the_loaded_id() {
        let id = "sha256:0123";
        assert_eq!(loaded_id(&format!("Loaded image ID: {id}\n")), Some(id));
        assert_eq!(
            loaded_id(&format!("{{\"stream\":\"Loaded image ID: {id}\\n\"}}")),
            Some(id)
        );
        assert_eq!(loaded_id("Loaded image: x:1\n"), None);
    }
}
