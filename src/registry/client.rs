//! [`Client`]: Distribution API v2 for one repository — authentication (anonymous or
//! credentialed bearer tokens, basic auth), retries with backoff on 5xx, 429, resets and
//! timeouts, bounded manifest reads, and blob downloads streamed into a [`BlobWriter`]
//! with `Range` resumption, so a layer is never held in memory and never published unverified.
//! HTTPS is verified against the system roots, the bundled web roots and Docker's
//! per-registry CAs (`certs.d/HOST:PORT/*.crt`, see [`registry_cas`]); pushes use the same
//! requests with bodies ([`Client::send_url`]) and a token scoped for push and mount sources.

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
use std::path::{Path, PathBuf};
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
    /// For HTTPS token servers of plain-HTTP registries: a client with the system roots.
    tls_http: OnceLock<reqwest::Client>,
    registry: String,
    base: String,
    repository: String,
    reference: String,
    opts: RegistryOptions,
    auth: tokio::sync::Mutex<AuthState>,
    /// Held while answering a 401, so parallel requests share one new token.
    reauth: tokio::sync::Mutex<()>,
    creds: OnceLock<Option<Credentials>>,
    /// The token scopes asked for: pull on our repository, or push too and pull on the
    /// repositories blobs are mounted from.
    scopes: Vec<String>,
}

/// A request body that can be made again for a retry or after re-authentication (a file
/// is reopened rather than held in memory).
pub(crate) type MakeBody<'a> = &'a (dyn Fn() -> Result<reqwest::Body, Error> + Send + Sync);

/// An HTTP client for `registry`: its `certs.d` CAs, the bundled web roots, and the
/// system's roots when `system_roots`.
fn registry_client(
    registry: &str,
    opts: &RegistryOptions,
    system_roots: bool,
) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.timeout)
        .read_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .tls_built_in_native_certs(system_roots);
    for ca in registry_cas(registry, opts.docker_config_dir.as_deref()) {
        let pem = std::fs::read(&ca)
            .map_err(|e| Error::Config(format!("CA certificate {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("CA certificate {}: {e}", ca.display())))?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Message(format!("cannot build an HTTP client: {e}")))
}

/// Docker's per-registry CA files for `registry` (`host:port` as written in references):
/// every `*.crt` in `/etc/docker/certs.d/<registry>/` and in `<docker config>/certs.d/<registry>/`,
/// sorted for a stable order.
pub(crate) fn registry_cas(registry: &str, docker_config_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/docker/certs.d")];
    if let Some(d) = auth::config_dir(docker_config_dir) {
        dirs.push(d.join("certs.d"));
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d.join(registry)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        out.extend(found);
    }
    out
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
        let plain = is_plain_http(&r.registry, &opts.insecure);
        let scheme = if plain { "http" } else { "https" };
        // A plain-HTTP registry needs no system roots (reading them is most of a no-change
        // push); its token server, if it has an HTTPS one, gets a client with them.
        let http = registry_client(&r.registry, opts, !plain)?;
        let host = if r.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &r.registry
        };
        Ok(Client {
            http,
            tls_http: OnceLock::new(),
            registry: r.registry.clone(),
            base: format!("{scheme}://{host}"),
            repository: r.repository.clone(),
            reference: r.to_string(),
            opts: opts.clone(),
            auth: Default::default(),
            reauth: Default::default(),
            creds: OnceLock::new(),
            scopes: vec![format!("repository:{}:pull", r.repository)],
        })
    }

    /// A client for pushing to `r`: its token asks for pull and push on `r`'s repository and
    /// pull on each repository in `mount_from` (the sources of cross-repository mounts).
    pub(crate) fn for_push(
        r: &Reference,
        opts: &RegistryOptions,
        mount_from: &[String],
    ) -> Result<Client, Error> {
        let mut c = Client::new(r, opts)?;
        c.scopes = vec![format!("repository:{}:pull,push", r.repository)];
        c.scopes.extend(
            mount_from
                .iter()
                .filter(|m| **m != r.repository)
                .map(|m| format!("repository:{m}:pull")),
        );
        Ok(c)
    }

    /// `https://host[:port]`, or `http://…` for plain-HTTP registries.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The repository this client talks to.
    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    /// The registry, as references name it.
    pub(crate) fn registry(&self) -> &str {
        &self.registry
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
        build: impl Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<Response, Error> {
        self.send_attempts(what, self.opts.retries, build).await
    }

    async fn send_attempts(
        &self,
        what: &str,
        retries: u32,
        build: impl Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let outcome = build()?.send().await;
            let retry = match &outcome {
                Ok(resp) => {
                    let s = resp.status();
                    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => !e.is_redirect() && !e.is_builder(),
            };
            if !retry || attempt >= retries {
                return match outcome {
                    Ok(resp) if resp.status().is_server_error() || resp.status() == 429 => {
                        Err(self.http_error(what, resp.status()))
                    }
                    Ok(resp) => Ok(resp),
                    Err(e) if e.is_redirect() => {
                        Err(self.unreachable(format!("{what}: {e} (redirect loop?)")))
                    }
                    Err(e) => Err(self.unreachable(format!(
                        "{what}: {}{}",
                        error_chain(&e),
                        tls_hint(&e, &self.registry)
                    ))),
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
        self.send_url(method, &url, what, headers, None, true).await
    }

    /// A request to `url` (on this registry), authenticated, with one re-authentication on
    /// 401 and a body from `body` when given. Without `retry`, a failure is returned at once
    /// (an upload whose body broke off is restarted by the caller, not resent).
    pub(crate) async fn send_url(
        &self,
        method: Method,
        url: &str,
        what: &str,
        headers: HeaderMap,
        body: Option<MakeBody<'_>>,
        retry: bool,
    ) -> Result<Response, Error> {
        let mut reauthed = false;
        let retries = if retry { self.opts.retries } else { 0 };
        loop {
            let header = self.current_auth().await?;
            let resp = self
                .send_attempts(what, retries, || {
                    let mut req = self
                        .http
                        .request(method.clone(), url)
                        .headers(headers.clone());
                    if let Some(h) = &header {
                        req = req.header(AUTHORIZATION, h);
                    }
                    if let Some(b) = body {
                        req = req.body(b()?);
                    }
                    Ok(req)
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
            let _one = self.reauth.lock().await;
            // Another request may have fetched a new token while this one waited.
            if self.auth.lock().await.header == header {
                self.authenticate(challenge).await?;
            }
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
        let mut query: Vec<(&str, &str)> =
            self.scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(s) = challenge_scope.filter(|s| !self.scopes.iter().any(|x| x == s)) {
            query.push(("scope", s));
        }
        if let Some(s) = service {
            query.push(("service", s));
        }
        let creds = self.creds()?;
        let http = if realm.starts_with("https://") && self.base.starts_with("http://") {
            if self.tls_http.get().is_none() {
                let c = registry_client(&self.registry, &self.opts, true)?;
                let _ = self.tls_http.set(c);
            }
            self.tls_http.get().expect("just set")
        } else {
            &self.http
        };
        let resp = self
            .send_retrying("token request", || {
                Ok(match creds {
                    Some(c) if c.identity_token.is_some() => {
                        let mut form = query.clone();
                        form.extend([
                            ("grant_type", "refresh_token"),
                            ("refresh_token", c.identity_token.as_deref().unwrap_or("")),
                            ("client_id", "cairn"),
                        ]);
                        http.post(realm).form(&form)
                    }
                    Some(c) => http
                        .get(realm)
                        .query(&query)
                        .header(AUTHORIZATION, c.basic_header()),
                    None => http.get(realm).query(&query),
                })
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

    pub(crate) fn blob_error(&self, d: &Digest, msg: String) -> Error {
        Error::Blob {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            digest: d.clone(),
            msg,
        }
    }
}

/// A hint for a failed TLS handshake: where Docker (and cairn) look for the registry's CA.
fn tls_hint(e: &reqwest::Error, registry: &str) -> String {
    let text = error_chain(e).to_ascii_lowercase();
    if text.contains("certificate") || text.contains("unknownissuer") || text.contains("tls") {
        format!(
            " (TLS: the registry's certificate is not trusted; put its CA in \
             /etc/docker/certs.d/{registry}/ca.crt or $DOCKER_CONFIG/certs.d/{registry}/ca.crt, \
             or name the registry with --insecure-registry for plain HTTP)"
        )
    } else {
        String::new()
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(mut resp: Response, limit: u64) -> Result<Vec<u8>, String> {
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
