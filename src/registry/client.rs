//! [`Client`]: Distribution API v2 for one repository — authentication (anonymous or
//! credentialed bearer tokens, basic auth), retries with backoff on 5xx, 429, resets and
//! timeouts, bounded manifest reads, and blob downloads streamed into a [`BlobWriter`]
//! with `Range` resumption, so a layer is never held in memory and never published unverified.

use super::auth::{self, Challenge, Credentials};
use super::manifest::{ACCEPT, MAX_MANIFEST};
use super::progress::BlobProgress;
use super::reference::{host_of, Reference, DOCKER_HUB};
use super::{Error, RegistryOptions};
use crate::digest::Digest;
use crate::store::{self, BlobWriter, Store};
use reqwest::header::{
    HeaderMap, ACCEPT as ACCEPT_H, AUTHORIZATION, CONTENT_RANGE, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What the registry currently accepts from us.
#[derive(Default)]
struct AuthState {
    header: Option<String>,
    /// When a bearer token stops being valid (refreshed a little before).
    expires: Option<Instant>,
    challenge: Option<Challenge>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    registry: String,
    base: String,
    repository: String,
    reference: String,
    opts: RegistryOptions,
    auth: tokio::sync::Mutex<AuthState>,
    creds: OnceLock<Option<Credentials>>,
}

/// Whether `registry` is spoken to over plain HTTP.
pub(crate) fn is_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    let loopback = host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[0] == 127);
    loopback || insecure.iter().any(|i| i == registry || i == host)
}

/// The HTTP client every registry request goes through (and ADD's downloads): our user
/// agent, the configured connect and read timeouts, bounded redirects; proxies and TLS
/// roots from the environment, as reqwest takes them.
pub(crate) fn http_client(opts: &RegistryOptions) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.timeout)
        .read_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(|e| Error::Message(format!("cannot build an HTTP client: {e}")))
}

/// The wait before retry number `attempt` (200 ms doubling, at most 3.2 s).
pub(crate) async fn backoff(attempt: u32) {
    let ms = 200u64 << attempt.min(4);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Client {
    pub(crate) fn new(r: &Reference, opts: &RegistryOptions) -> Result<Client, Error> {
        let http = http_client(opts)?;
        let scheme = if is_plain_http(&r.registry, &opts.insecure) {
            "http"
        } else {
            "https"
        };
        let host = if r.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &r.registry
        };
        Ok(Client {
            http,
            registry: r.registry.clone(),
            base: format!("{scheme}://{host}"),
            repository: r.repository.clone(),
            reference: r.to_string(),
            opts: opts.clone(),
            auth: Default::default(),
            creds: OnceLock::new(),
        })
    }

    fn creds(&self) -> Result<Option<&Credentials>, Error> {
        if self.creds.get().is_none() {
            let found = auth::lookup(&self.registry, self.opts.docker_config_dir.as_deref())?;
            let _ = self.creds.set(found);
        }
        Ok(self.creds.get().and_then(|c| c.as_ref()))
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            msg: e.to_string(),
        }
    }

    pub(crate) fn http_error(&self, what: &str, status: StatusCode) -> Error {
        Error::Http {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
        }
    }

    fn auth_error(&self, msg: String) -> Error {
        Error::Auth {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            msg,
        }
    }

    /// Sends `build()` until it gets an answer that is not a 5xx/429, retrying connection
    /// failures and timeouts; the last failure becomes an error.
    async fn send_retrying(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let outcome = build().send().await;
            let retry = match &outcome {
                Ok(resp) => {
                    let s = resp.status();
                    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => !e.is_redirect() && !e.is_builder(),
            };
            if !retry || attempt >= self.opts.retries {
                return match outcome {
                    Ok(resp) if resp.status().is_server_error() || resp.status() == 429 => {
                        Err(self.http_error(what, resp.status()))
                    }
                    Ok(resp) => Ok(resp),
                    Err(e) if e.is_redirect() => {
                        Err(self.unreachable(format!("{what}: {e} (redirect loop?)")))
                    }
                    Err(e) => Err(self.unreachable(format!("{what}: {}", error_chain(&e)))),
                };
            }
            attempt += 1;
            backoff(attempt).await;
        }
    }

    /// A request to `/v2/<repo>/<path>`, authenticated, with one re-authentication on 401.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        what: &str,
        headers: HeaderMap,
    ) -> Result<Response, Error> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let mut reauthed = false;
        loop {
            let header = self.current_auth().await?;
            let resp = self
                .send_retrying(what, || {
                    let mut req = self
                        .http
                        .request(method.clone(), &url)
                        .headers(headers.clone());
                    if let Some(h) = &header {
                        req = req.header(AUTHORIZATION, h);
                    }
                    req
                })
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if reauthed {
                let how = match self.creds()? {
                    Some(c) => format!("credentials from {} were rejected", c.source),
                    None => "anonymous access was refused and no credentials are configured".into(),
                };
                return Err(self.auth_error(format!("{what}: HTTP 401 Unauthorized ({how})")));
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
                .ok_or_else(|| {
                    self.auth_error(format!(
                        "{what}: HTTP 401 Unauthorized without a usable WWW-Authenticate challenge"
                    ))
                })?;
            self.authenticate(challenge).await?;
            reauthed = true;
        }
    }

    /// The Authorization header to send, refreshing an expired bearer token.
    async fn current_auth(&self) -> Result<Option<String>, Error> {
        let challenge = {
            let st = self.auth.lock().await;
            match (st.expires, &st.challenge) {
                (Some(e), Some(c)) if Instant::now() >= e => c.clone(),
                _ => return Ok(st.header.clone()),
            }
        };
        self.authenticate(challenge).await?;
        Ok(self.auth.lock().await.header.clone())
    }

    async fn authenticate(&self, challenge: Challenge) -> Result<(), Error> {
        let (header, expires) = match &challenge {
            Challenge::Basic => {
                let c = self.creds()?.ok_or_else(|| {
                    self.auth_error(format!(
                        "the registry requires basic auth and there are no credentials for {} in {}",
                        self.registry,
                        self.config_path()
                    ))
                })?;
                (c.basic_header(), None)
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let (token, ttl) = self
                    .fetch_token(realm, service.as_deref(), scope.as_deref())
                    .await?;
                (format!("Bearer {token}"), Some(Instant::now() + ttl))
            }
        };
        let mut st = self.auth.lock().await;
        *st = AuthState {
            header: Some(header),
            expires,
            challenge: Some(challenge),
        };
        Ok(())
    }

    fn config_path(&self) -> String {
        auth::config_dir(self.opts.docker_config_dir.as_deref())
            .map(|d| d.join("config.json").display().to_string())
            .unwrap_or_else(|| "the Docker config".into())
    }

    /// The token flow Docker Hub uses: GET the realm with service and a pull scope for our
    /// repository (with basic credentials when we have them), or POST a refresh token.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        challenge_scope: Option<&str>,
    ) -> Result<(String, Duration), Error> {
        let scope = format!("repository:{}:pull", self.repository);
        let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(s) = challenge_scope.filter(|s| *s != scope) {
            query.push(("scope", s));
        }
        if let Some(s) = service {
            query.push(("service", s));
        }
        let creds = self.creds()?;
        let resp = self
            .send_retrying("token request", || match creds {
                Some(c) if c.identity_token.is_some() => {
                    let mut form = query.clone();
                    form.extend([
                        ("grant_type", "refresh_token"),
                        ("refresh_token", c.identity_token.as_deref().unwrap_or("")),
                        ("client_id", "cairn"),
                    ]);
                    self.http.post(realm).form(&form)
                }
                Some(c) => self
                    .http
                    .get(realm)
                    .query(&query)
                    .header(AUTHORIZATION, c.basic_header()),
                None => self.http.get(realm).query(&query),
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let how = match creds {
                Some(c) => format!("check the credentials from {}", c.source),
                None => format!(
                    "no credentials for {} in {}",
                    self.registry,
                    self.config_path()
                ),
            };
            return Err(self.auth_error(format!(
                "token server {realm} answered HTTP {} {} ({how})",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        if !status.is_success() {
            return Err(self.http_error("token request", status));
        }
        let body = read_limited(resp, 1 << 20)
            .await
            .map_err(|e| self.unreachable(e))?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|e| self.auth_error(format!("token server {realm} sent bad JSON: {e}")))?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.auth_error(format!("token server {realm} sent no token")))?;
        // Docker's default lifetime is 60 s; refresh 10 s early.
        let ttl = Duration::from_secs(reply.expires_in.unwrap_or(60).max(60) - 10);
        Ok((token, ttl))
    }

    /// `HEAD` of a manifest: the digest the registry reports, if it reports one.
    pub(crate) async fn head_manifest(&self, reference: &str) -> Result<Option<Digest>, Error> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_H, ACCEPT.parse().expect("static header"));
        let resp = self
            .send(
                Method::HEAD,
                &format!("manifests/{reference}"),
                "manifest HEAD",
                h,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(self.http_error("manifest", resp.status()));
        }
        if !resp.status().is_success() {
            return Ok(None);
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok()))
    }

    /// `GET` of a manifest: (bytes, content type, reported digest). At most `MAX_MANIFEST` bytes.
    pub(crate) async fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<Digest>), Error> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_H, ACCEPT.parse().expect("static header"));
        let resp = self
            .send(
                Method::GET,
                &format!("manifests/{reference}"),
                "manifest",
                h,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.http_error("manifest", resp.status()));
        }
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let ct = header("content-type");
        let digest = header("docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        let body = read_limited(resp, MAX_MANIFEST)
            .await
            .map_err(|e| Error::BadManifest {
                reference: self.reference.clone(),
                msg: e,
            })?;
        Ok((body, ct, digest))
    }

    /// Streams blob `d` (declared `size` bytes) into the store, resuming with `Range` after
    /// interruptions; publishes it only if size and digest match.
    pub(crate) async fn fetch_blob(
        &self,
        store: &Store,
        d: &Digest,
        size: u64,
        progress: &BlobProgress,
    ) -> Result<(), Error> {
        let mut writer = store.blob_writer()?;
        let mut resumes = 0;
        let path = format!("blobs/{d}");
        loop {
            let mut h = HeaderMap::new();
            let offset = writer.written();
            if offset > 0 {
                h.insert(
                    RANGE,
                    format!("bytes={offset}-").parse().expect("range header"),
                );
            }
            let mut resp = self
                .send(Method::GET, &path, &format!("blob {d}"), h)
                .await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(self.http_error(&format!("blob {d}"), status));
            }
            let resumed = status == StatusCode::PARTIAL_CONTENT
                && resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
            if offset > 0 && !resumed {
                writer = store.blob_writer()?;
                progress.reset();
            }
            let interrupted = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if writer.written() + chunk.len() as u64 > size {
                            return Err(self.blob_error(d, format!("the registry sent more than the {size} bytes the manifest declares")));
                        }
                        writer.write_all(&chunk).map_err(|e| store::Error::Io {
                            path: store.root().join("tmp"),
                            source: e,
                        })?;
                        progress.inc(chunk.len() as u64);
                    }
                    Ok(None) if writer.written() < size => {
                        break format!("truncated after {} of {size} bytes", writer.written())
                    }
                    Ok(None) => break String::new(),
                    Err(e) => break error_chain(&e),
                }
            };
            if interrupted.is_empty() {
                return self.commit(writer, d);
            }
            if resumes >= self.opts.retries {
                return Err(self.blob_error(d, format!("download failed: {interrupted}")));
            }
            resumes += 1;
            backoff(resumes).await;
        }
    }

    fn commit(&self, writer: BlobWriter, d: &Digest) -> Result<(), Error> {
        match writer.commit(Some(d)) {
            Ok(_) => Ok(()),
            Err(store::Error::DigestMismatch { actual, size, .. }) => Err(self.blob_error(
                d,
                format!("content hashes to {actual} ({size} bytes); nothing was stored"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn blob_error(&self, d: &Digest, msg: String) -> Error {
        Error::Blob {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            digest: d.clone(),
            msg,
        }
    }
}

/// Reads a response body, refusing more than `limit` bytes.
async fn read_limited(mut resp: Response, limit: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(format!("response larger than the {limit}-byte limit"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("response larger than the {limit}-byte limit"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error and its causes on one line (reqwest's own message hides the interesting part).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_insecure() {
        let none: Vec<String> = vec![];
        assert!(is_plain_http("localhost:5000", &none));
        assert!(is_plain_http("127.0.0.1:5000", &none));
        assert!(is_plain_http("127.9.9.9", &none));
        assert!(is_plain_http("[::1]:5000", &none));
        assert!(!is_plain_http("128.0.0.1:5000", &none));
        assert!(!is_plain_http("docker.io", &none));
        let insecure = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
        assert!(is_plain_http("reg.lan:5000", &insecure));
        assert!(!is_plain_http("reg.lan:6000", &insecure));
        assert!(is_plain_http("other.lan:443", &insecure));
    }
}
