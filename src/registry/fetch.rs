//! [`download`]: GET one URL into a file, streaming and hashing as it goes, through the same
//! HTTP stack as registry requests — one client configuration (user agent, connect and read
//! timeouts, redirects, proxies and TLS from the environment), the same retries with
//! backoff on 5xx, 429, resets and timeouts. `ADD <url>` uses it, so a download behaves
//! like a pull on a flaky network and fails as a network failure (exit code 4, naming the
//! URL and the HTTP status).

use super::client::{backoff, error_chain, http_client};
use super::pull::block_on;
use super::{Error, RegistryOptions};
use crate::digest::{Digest, HashingWriter};
use crate::events::{Transfer, TransferKind};
use crate::store;
use reqwest::{Response, StatusCode};
use std::io::Write;
use std::path::Path;

/// Downloads `url` into `path` (created or truncated) and returns the content's digest.
/// A body cut short is fetched again from the start, within the same retry budget as a
/// failed request.
pub fn download(url: &str, path: &Path, opts: &RegistryOptions) -> Result<Digest, Error> {
    let http = http_client(opts)?;
    let progress = super::progress::Progress::new(opts);
    // The transfer's name and every error show the URL with its credentials masked.
    let t = progress.transfer(TransferKind::Download, &crate::redact::url(url));
    let digest = block_on(get_to_file(&http, url, path, opts.retries, &t))?;
    t.finish();
    Ok(digest)
}

/// Why one attempt failed, when another may succeed.
enum Retryable {
    Status(StatusCode),
    Network(String),
}

async fn get_to_file(
    http: &reqwest::Client,
    url: &str,
    path: &Path,
    retries: u32,
    progress: &Transfer,
) -> Result<Digest, Error> {
    let unreachable = |msg: String| Error::DownloadFailed {
        url: crate::redact::url(url),
        msg: crate::redact::text(&msg),
    };
    let http_error = |status: StatusCode| Error::DownloadHttp {
        url: crate::redact::url(url),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
    };
    let mut attempt = 0;
    loop {
        progress.reset();
        let failure = match http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => match write_body(resp, path, progress).await?
            {
                Ok(digest) => return Ok(digest),
                Err(msg) => Retryable::Network(msg),
            },
            Ok(resp)
                if resp.status().is_server_error()
                    || resp.status() == StatusCode::TOO_MANY_REQUESTS =>
            {
                Retryable::Status(resp.status())
            }
            Ok(resp) => return Err(http_error(resp.status())),
            Err(e) if e.is_builder() || e.is_redirect() => {
                return Err(unreachable(error_chain(&e)))
            }
            Err(e) => Retryable::Network(error_chain(&e)),
        };
        if attempt >= retries {
            return Err(match failure {
                Retryable::Status(s) => http_error(s),
                Retryable::Network(msg) => unreachable(msg),
            });
        }
        attempt += 1;
        backoff(attempt).await;
    }
}

/// Streams a response body into `path`. The outer error is the file's (the disk, not the
/// network: never retried); the inner one a body cut short.
async fn write_body(
    mut resp: Response,
    path: &Path,
    progress: &Transfer,
) -> Result<Result<Digest, String>, store::Error> {
    let io = |source: std::io::Error| store::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut w = HashingWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).map_err(io)?,
    ));
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                w.write_all(&chunk).map_err(io)?;
                progress.inc(chunk.len() as u64);
            }
            Ok(None) => break,
            Err(e) => return Ok(Err(error_chain(&e))),
        }
    }
    w.flush().map_err(io)?;
    let (file, digest, _) = w.finish();
    file.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(Ok(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A one-connection-at-a-time HTTP server on loopback answering each request with the
    /// next of `replies` (status, body); returns its base URL.
    fn serve(replies: Vec<(u16, &'static [u8])>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, body) in replies {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body);
            }
        });
        format!("http://{addr}")
    }

    fn opts() -> RegistryOptions {
        RegistryOptions {
            retries: 2,
            ..RegistryOptions::default()
        }
    }

    #[test]
    fn a_download_retries_a_server_error_and_hashes_what_it_wrote() {
        let url = serve(vec![(503, b""), (200, b"payload")]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let d = download(&format!("{url}/f"), &path, &opts()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"payload");
        assert_eq!(d, Digest::of_bytes(b"payload"));
    }

    #[test]
    fn a_client_error_fails_at_once_naming_url_and_status() {
        let url = serve(vec![(404, b"no")]);
        let dir = tempfile::tempdir().unwrap();
        let e = download(&format!("{url}/missing"), &dir.path().join("f"), &opts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("download {url}/missing: HTTP 404 Not Found")
        );
    }

    #[test]
    fn an_unreachable_server_fails_naming_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/f");
        let dir = tempfile::tempdir().unwrap();
        let e = download(
            &url,
            &dir.path().join("f"),
            &RegistryOptions {
                retries: 0,
                ..opts()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::DownloadFailed { url: u, .. } if *u == url),
            "{e:?}"
        );
    }

    #[test]
    fn persistent_server_errors_give_up_after_the_retries() {
        let url = serve(vec![(500, b""), (500, b""), (500, b"")]);
        let dir = tempfile::tempdir().unwrap();
        let e = download(&format!("{url}/f"), &dir.path().join("f"), &opts()).unwrap_err();
        assert!(
            matches!(e, Error::DownloadHttp { status: 500, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_is_a_store_error_with_its_source() {
        let url = serve(vec![(200, b"x")]);
        let e = download(
            &format!("{url}/f"),
            Path::new("/nonexistent-dir/f"),
            &opts(),
        )
        .unwrap_err();
        let Error::Store(store::Error::Io { source, .. }) = &e else {
            panic!("expected a store I/O error, got {e:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }
}
