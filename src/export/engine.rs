//! [`Engine`]: the few Docker Engine API calls a load needs (inspect, load, tag), spoken as
//! plain HTTP/1.1 over the unix socket, for machines with a daemon but no docker CLI.

use super::docker::{EngineOps, Inspected, WriteArchive};
use super::tags::repo_and_tag;
use super::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The API version asked for: Docker 17.06+ serves it, and newer engines still accept it.
const API: &str = "/v1.41";

pub(crate) struct Engine {
    socket: PathBuf,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Engine {
    pub(crate) fn new(socket: &Path) -> Engine {
        Engine {
            socket: socket.to_path_buf(),
        }
    }

    fn connect(&self) -> Result<UnixStream, Error> {
        UnixStream::connect(&self.socket).map_err(|e| {
            let detail = format!("{}: {e}", self.socket.display());
            if e.kind() == io::ErrorKind::PermissionDenied {
                Error::DockerPermission(detail)
            } else {
                Error::DockerUnreachable(detail)
            }
        })
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, Error> {
        let mut s = self.connect()?;
        let mut req =
            format!("{method} {API}{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(Error::Write)?;
        if let Some(b) = body {
            s.write_all(b).map_err(Error::Write)?;
        }
        read_response(&mut s)
    }
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
        let out = s.try_clone().map_err(Error::Write)?;
        let mut chunked = Chunked(io::BufWriter::with_capacity(256 * 1024, out));
        let written = write(&mut chunked);
        let mut w = chunked.0;
        let ended = w
            .write_all(b"0\r\n\r\n")
            .and_then(|_| w.flush())
            .map_err(Error::Write);
        drop(w);
        // The engine may have answered (and closed) early with an error: read that first.
        let r = read_response(&mut s);
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

    fn skips_present_layers(&self) -> Result<bool, Error> {
        let r = self.request("GET", "/info", None)?;
        if r.status != 200 {
            return Err(fail("info", &r));
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Message(format!("docker info: bad answer: {e}")))?;
        Ok(classic_image_store(&v))
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
fn classic_image_store(info: &serde_json::Value) -> bool {
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
fn read_response(s: &mut UnixStream) -> Result<Response, Error> {
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
        r.read_to_end(&mut body).map_err(Error::Write)?;
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
