//! [`Engine`]: the few Docker Engine API calls a load needs (info, inspect, load, tag),
//! spoken as plain HTTP/1.1 over a unix socket, TCP, TCP with TLS, or an `ssh` process
//! running `docker system dial-stdio` on the remote host (what the docker CLI does for
//! `ssh://` hosts), so no docker CLI is needed on this side for any of them.
//!
//! Why not an Engine API crate such as bollard: it is async (tokio and hyper on every
//! call), and cairn's no-op build is one inspect per tag on a short-lived process, where
//! a runtime's start-up is most of the time; cairn needs four endpoints, whose answers it
//! reads as untyped JSON so that engines from Docker 17.06 to 26 and Podman's compatible
//! API all parse. TLS is rustls (the one reqwest already brings), certificates read as
//! the docker CLI reads them (`ca.pem`, `cert.pem`, `key.pem`).

use super::docker::{EngineOps, Info, Inspected, WriteArchive};
use super::tags::repo_and_tag;
use super::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

/// The API version asked for: Docker 17.06+ serves it, and newer engines still accept it.
const API: &str = "/v1.41";

/// Where the Engine API is.
#[derive(Clone)]
pub(crate) enum Transport {
    Unix(PathBuf),
    /// `host:port`, with a TLS client configuration when the endpoint speaks TLS.
    Tcp {
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    /// The arguments of `ssh` that reach the remote engine's API on its stdio.
    Ssh(Vec<String>),
}

pub(crate) struct Engine {
    transport: Transport,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A connection to the engine: a byte stream both ways.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// `ssh … docker system dial-stdio`: the remote engine's API on the child's stdin/stdout.
struct SshConn {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl Read for SshConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Write for SshConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stdin {
            Some(w) => w.write(buf),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stdin {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SshConn {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Engine {
    pub(crate) fn new(transport: Transport) -> Engine {
        Engine { transport }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, Error> {
        let refused = |what: String, e: io::Error| {
            let detail = format!("{what}: {e}");
            if e.kind() == io::ErrorKind::PermissionDenied {
                Error::DockerPermission(detail)
            } else {
                Error::DockerUnreachable(detail)
            }
        };
        match &self.transport {
            Transport::Unix(p) => UnixStream::connect(p)
                .map(|s| Box::new(s) as Box<dyn Conn>)
                .map_err(|e| refused(p.display().to_string(), e)),
            Transport::Tcp { addr, tls } => {
                let s = TcpStream::connect(addr).map_err(|e| refused(addr.clone(), e))?;
                let _ = s.set_nodelay(true);
                let Some(cfg) = tls else {
                    return Ok(Box::new(s));
                };
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| Error::DockerUnreachable(format!("{addr}: {e}")))?;
                let c = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| Error::DockerUnreachable(format!("{addr}: TLS: {e}")))?;
                Ok(Box::new(rustls::StreamOwned::new(c, s)))
            }
            Transport::Ssh(args) => {
                let mut child = Command::new("ssh")
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| refused("ssh".into(), e))?;
                let stdin = child.stdin.take();
                let stdout = child.stdout.take().expect("piped stdout");
                Ok(Box::new(SshConn {
                    child,
                    stdin,
                    stdout,
                }))
            }
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, Error> {
        let mut s = self.connect()?;
        let mut req =
            format!("{method} {API}{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut all = req.into_bytes();
        all.extend_from_slice(body.unwrap_or_default());
        s.write_all(&all)
            .and_then(|_| s.flush())
            .map_err(|e| Error::DockerUnreachable(format!("{}: {e}", self.describe())))?;
        read_response(&mut s)
    }

    /// `GET /info` as the engine answers it.
    pub(crate) fn info_json(&self) -> Result<serde_json::Value, Error> {
        let r = self.request("GET", "/info", None)?;
        if r.status != 200 {
            return Err(fail("info", &r));
        }
        serde_json::from_slice(&r.body)
            .map_err(|e| Error::Message(format!("docker info: bad answer: {e}")))
    }

    /// Where the engine is, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.transport {
            Transport::Unix(p) => format!("unix://{}", p.display()),
            Transport::Tcp { addr, .. } => format!("tcp://{addr}"),
            Transport::Ssh(args) => format!("ssh {}", args.join(" ")),
        }
    }
}

/// A TLS client configuration from the docker CLI's files: the CA that signed the
/// engine's certificate and, when both are there, a client certificate and key.
pub(crate) fn tls_config(
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |p: &Path, e: &dyn std::fmt::Display| {
        Error::Message(format!("TLS for the Docker engine: {}: {e}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad(ca, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(ca, &e))?;
    for c in cas {
        roots.add(c).map_err(|e| bad(ca, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(ca, &e))?
        .with_root_certificates(roots);
    let cfg = match cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(cert, &e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(cert, &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

impl EngineOps for Engine {
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error> {
        let r = self.request("GET", &format!("/images/{}/json", escape(reference)), None)?;
        match r.status {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body)
                    .map_err(|e| Error::Message(format!("docker inspect: bad answer: {e}")))?;
                let Some(id) = v["Id"].as_str() else {
                    return Ok(None);
                };
                let layers = v["RootFS"]["Layers"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                });
                Ok(Some(Inspected {
                    id: id.to_string(),
                    layers,
                }))
            }
            404 => Ok(None),
            _ => Err(fail("inspect", &r)),
        }
    }

    /// `POST /images/load` with the archive `write` produces, sent chunked as it is made.
    fn load(&self, write: &mut WriteArchive) -> Result<String, Error> {
        let mut s = self.connect()?;
        let head = format!(
            "POST {API}/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).map_err(Error::Write)?;
        let (written, ended) = {
            let mut chunked = Chunked(io::BufWriter::with_capacity(256 * 1024, &mut *s));
            let written = write(&mut chunked);
            let Chunked(mut w) = chunked;
            let ended = w
                .write_all(b"0\r\n\r\n")
                .and_then(|_| w.flush())
                .map_err(Error::Write);
            (written, ended)
        };
        // The engine may have answered (and closed) early with an error: read that first.
        let r = read_response(&mut *s);
        match r {
            Ok(r) if r.status == 200 => {
                written?;
                ended?;
                // Errors during the load arrive as {"error": …} in a 200 stream.
                let text = String::from_utf8_lossy(&r.body);
                for line in text.lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                            return Err(Error::from_docker("load", e));
                        }
                    }
                }
                Ok(text.into_owned())
            }
            Ok(r) => Err(fail("load", &r)),
            Err(e) => {
                written?;
                Err(e)
            }
        }
    }

    fn info(&self) -> Result<Info, Error> {
        Ok(Info::from_json(&self.info_json()?))
    }

    fn remove(&self, id: &str) -> Result<(), Error> {
        let r = self.request("DELETE", &format!("/images/{}", escape(id)), None)?;
        match r.status {
            200 | 404 => Ok(()),
            _ => Err(fail("remove", &r)),
        }
    }

    fn tag(&self, id: &str, tag: &str) -> Result<(), Error> {
        let (repo, t) = repo_and_tag(tag);
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            escape(id),
            escape(repo),
            escape(t)
        );
        let r = self.request("POST", &path, Some(b""))?;
        match r.status {
            200 | 201 => Ok(()),
            _ => Err(fail("tag", &r)),
        }
    }
}

/// Whether `GET /info` describes the classic image store (a graph driver such as overlay2),
/// not the containerd image store (driver `overlayfs` with a `driver-type` of
/// `io.containerd.snapshotter.v1`).
pub(crate) fn classic_image_store(info: &serde_json::Value) -> bool {
    let containerd = info["DriverStatus"].as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            row.as_array().is_some_and(|kv| {
                kv.iter().any(|x| {
                    x.as_str()
                        .is_some_and(|s| s.contains("io.containerd.snapshotter"))
                })
            })
        })
    });
    info["Driver"].as_str().is_some_and(|d| !d.is_empty()) && !containerd
}

fn fail(action: &str, r: &Response) -> Error {
    let body = String::from_utf8_lossy(&r.body);
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Error::from_docker(action, &format!("HTTP {}: {msg}", r.status))
}

/// Reads a whole HTTP/1.1 response (the connection is `close`), de-chunking the body.
fn read_response(s: &mut dyn Read) -> Result<Response, Error> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(Error::Write)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Error::DockerUnreachable(format!("not an HTTP answer: {line:?}")))?;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(Error::Write)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(Error::Write)?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| Error::Message(format!("docker API: bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(Error::Write)?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(Error::Write)?;
        }
    } else {
        // A TLS peer may close without a close_notify once it has said everything.
        match r.read_to_end(&mut body) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            other => {
                other.map_err(Error::Write)?;
            }
        }
    }
    Ok(Response { status, body })
}

/// Percent-encodes what is not safe in a path segment or query value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTTP chunked transfer encoding over a writer.
struct Chunked<W: Write>(W);

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_image_stores_apart() {
        let classic = serde_json::json!({"Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]});
        let containerd = serde_json::json!({"Driver": "overlayfs",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]});
        assert!(classic_image_store(&classic));
        assert!(!classic_image_store(&containerd));
        assert!(!classic_image_store(&serde_json::json!({})));
    }

    #[test]
    fn escapes_and_chunks() {
        assert_eq!(escape("sha256:ab"), "sha256%3Aab");
        assert_eq!(escape("localhost:5000/a"), "localhost%3A5000%2Fa");
        let mut c = Chunked(Vec::new());
        c.write_all(b"hello").unwrap();
        c.write_all(&[b'x'; 17]).unwrap();
        assert_eq!(
            c.0,
            [&b"5\r\nhello\r\n11\r\n"[..], &[b'x'; 17], b"\r\n"].concat()
        );
    }
}
