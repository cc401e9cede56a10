//! [`Challenge`] and [`Credentials`]: what a registry asks for (`WWW-Authenticate`) and what
//! we can answer with (`~/.docker/config.json`: `auths`, `credHelpers`, `credsStore`).
//!
//! The token exchange itself lives in the client; this module is the pure parsing plus the
//! one impure step of asking a `docker-credential-*` helper.

use super::reference::DOCKER_HUB;
use super::Error;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key Docker files Docker Hub credentials under.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let realm = params.get("realm")?.clone();
                if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                    return None;
                }
                Some(Challenge::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                })
            }
            _ => None,
        }
    }
}

/// `k="v", k2=v2` auth-params; quoted values may contain commas and `\"`.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    pub identity_token: Option<String>,
    /// Where they came from, for error messages.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.username, self.source)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The Docker config directory: the explicit one, else `$DOCKER_CONFIG`, else `~/.docker`.
/// An empty variable counts as unset, as the docker CLI has it.
pub fn config_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalise_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        k => k.to_string(),
    }
}

/// Looks up credentials for `registry` in `<dir>/config.json`. No file means none.
pub fn lookup(registry: &str, dir: Option<&Path>) -> Result<Option<Credentials>, Error> {
    let Some(dir) = config_dir(dir) else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Config(format!("{}: {e}", path.display()))),
    };
    let cfg: ConfigFile = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let server = if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    };
    let helper = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
        .map(|(_, v)| v.clone())
        .or(cfg.creds_store.clone())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return from_helper(&helper, server);
    }
    let source = path.display().to_string();
    let Some(entry) = cfg
        .auths
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| Error::Config(format!("{source}: auth for {registry}: {e}")))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (u, p) = raw.split_once(':').ok_or_else(|| {
            Error::Config(format!(
                "{source}: auth for {registry} is not base64 of user:password"
            ))
        })?;
        (username, password) = (Some(u.to_string()), Some(p.to_string()));
    }
    let identity_token = entry.identitytoken.clone().filter(|t| !t.is_empty());
    if username.is_none() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: username.unwrap_or_default(),
        password: password.unwrap_or_default(),
        identity_token,
        source,
    }))
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn from_helper(helper: &str, server: &str) -> Result<Option<Credentials>, Error> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Config(format!("credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Config(format!("credential helper {program}: {e}")))?;
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Config(format!(
            "credential helper {program} failed for {server}: {}",
            said.trim()
        )));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Config(format!(
            "credential helper {program} gave bad JSON for {server}: {e}"
        ))
    })?;
    let source = format!("credential helper {program}");
    Ok(Some(if reply.username == "<token>" {
        Credentials {
            username: String::new(),
            password: String::new(),
            identity_token: Some(reply.secret),
            source,
        }
    } else {
        Credentials {
            username: reply.username,
            password: reply.secret,
            identity_token: None,
            source,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/ubuntu:pull".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("garbage"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(
            Challenge::parse(r#"Bearer realm="file:///etc/passwd""#),
            None
        );
        let c = Challenge::parse(r#"bearer realm=http://h/t, scope="a,b""#).unwrap();
        assert!(matches!(c, Challenge::Bearer { scope: Some(s), .. } if s == "a,b"));
    }

    #[test]
    fn reads_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:with:colons");
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                   "http://127.0.0.1:5000":{{"username":"a","password":"b"}},
                   "tok.example":{{"identitytoken":"refresh"}}}}}}"#
            ),
        )
        .unwrap();
        let hub = lookup("docker.io", Some(dir.path())).unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("u", "p:with:colons")
        );
        let local = lookup("127.0.0.1:5000", Some(dir.path())).unwrap().unwrap();
        assert_eq!(local.basic_header(), "Basic YTpi");
        let tok = lookup("tok.example", Some(dir.path())).unwrap().unwrap();
        assert_eq!(tok.identity_token.as_deref(), Some("refresh"));
        assert!(lookup("other.example", Some(dir.path())).unwrap().is_none());
        assert!(lookup("x", Some(&dir.path().join("missing")))
            .unwrap()
            .is_none());
    }

    #[test]
    fn asks_credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-cairntest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread s\n[ \"$s\" = h.example ] || { echo credentials not found; exit 1; }\necho '{\"ServerURL\":\"h.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"h.example":"cairntest"},"credsStore":"cairntest"}"#,
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        // The helper is found on PATH, as Docker finds it.
        let old = std::env::var_os("PATH");
        std::env::set_var("PATH", &path);
        let got = lookup("h.example", Some(dir.path()));
        let none = lookup("other.example", Some(dir.path()));
        if let Some(old) = old {
            std::env::set_var("PATH", old);
        }
        let got = got.unwrap().unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("hu", "hs"));
        assert!(none.unwrap().is_none());
    }
}
