//! [`Reference`]: an image reference normalised exactly as Docker does it
//! (`distribution/reference`'s `ParseNormalizedNamed`): `ubuntu` is
//! `docker.io/library/ubuntu:latest`, a first component is a registry host only when it
//! has a `.` or `:` or is `localhost`, repositories are lower-case, tags follow
//! `[\w][\w.-]{0,127}`, and a digest pins the content whatever the tag says.

use super::Error;
use crate::digest::Digest;
use regex::Regex;
use std::fmt;
use std::sync::LazyLock;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/ubuntu`, `user/img`, `a/b/c`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

static PATH_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").unwrap());
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    let comp = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    Regex::new(&format!(
        r"^(?:{comp}(?:\.{comp})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
    ))
    .unwrap()
});

/// distribution's tag grammar, `[\w][\w.-]{0,127}` (Go's `\w` is ASCII). Checked by hand:
/// the regex crate's Unicode `\w` repeated 128 times took most of a no-op build's CPU to
/// compile.
fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    (1..=128).contains(&b.len())
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// 64 lowercase hex digits (a bare image ID).
fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` would.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        if is_hex64(s) {
            return Err(invalid(
                s,
                "a 64-hex string is an image ID, not a repository name; use NAME@sha256:<hex>",
            ));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(s, d)?)),
            None => (s, None),
        };
        let (name, tag) = Reference::split_tag(name_tag);
        let tag = tag.map(str::to_string);
        if let Some(t) = &tag {
            if !is_tag(t) {
                return Err(invalid(
                    s,
                    format!("tag {t:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"),
                ));
            }
        }
        let (registry, repository) = split_domain(name);
        if registry != DOCKER_HUB && !DOMAIN.is_match(&registry) {
            return Err(invalid(s, format!("invalid registry host {registry:?}")));
        }
        if repository.to_ascii_lowercase() != repository {
            return Err(invalid(
                s,
                format!("repository name {repository:?} must be lowercase"),
            ));
        }
        if repository.is_empty() || !repository.split('/').all(|c| PATH_COMPONENT.is_match(c)) {
            return Err(invalid(
                s,
                format!(
                    "repository name {repository:?} must be lowercase letters, digits and \
                     separators (. _ __ -) between them, in /-separated components"
                ),
            ));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid(
                s,
                "repository name must not be more than 255 characters",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Parses a name to tag an image with (`-t`, `docker tag`): a reference without a
    /// digest. Returns it with the name as written and its tag (`latest` when none was
    /// given), e.g. `("myapp", "latest")`, since Docker keeps the familiar spelling.
    pub fn parse_tag(s: &str) -> Result<(Reference, String, String), Error> {
        let r = Reference::parse(s)?;
        if r.digest.is_some() {
            return Err(invalid(s, "a tag cannot name a digest"));
        }
        let (name, tag) = Reference::split_tag(s);
        Ok((r, name.to_string(), tag.unwrap_or("latest").to_string()))
    }

    /// `(name, tag)` of `name[:tag]`: the tag follows the last `:` after the last `/` (an
    /// earlier `:` is a registry's port). Not validated; [`Reference::parse`] does that.
    pub fn split_tag(s: &str) -> (&str, Option<&str>) {
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[slash..].rfind(':') {
            Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
            None => (s, None),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`: the key of the store's tag index (`None` for digest-only).
    pub fn tag_key(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The same repository pinned to `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The host part of the registry, without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        host_of(&self.registry)
    }
}

/// `host` of `host[:port]` or `[v6]:port`.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn parse_digest(input: &str, d: &str) -> Result<Digest, Error> {
    match d.split_once(':') {
        Some(("sha256", _)) => {
            Digest::parse(d).map_err(|_| invalid(input, format!("invalid digest {d:?}")))
        }
        Some((alg, _)) if !alg.is_empty() => Err(invalid(
            input,
            format!("unsupported digest algorithm {alg:?} (only sha256)"),
        )),
        _ => Err(invalid(input, format!("invalid digest {d:?}"))),
    }
}

/// Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = DOCKER_HUB.to_string();
    }
    if domain == DOCKER_HUB && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("ubuntu:24.04"), "docker.io/library/ubuntu:24.04");
        assert_eq!(norm("user/img"), "docker.io/user/img:latest");
        assert_eq!(norm("docker.io/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("index.docker.io/user/img:1"), "docker.io/user/img:1");
        assert_eq!(norm("host:5000/a/b:tag"), "host:5000/a/b:tag");
        assert_eq!(norm("localhost/img"), "localhost/img:latest");
        assert_eq!(norm("localhost:5000/img"), "localhost:5000/img:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(norm("[::1]:5000/img:v1"), "[::1]:5000/img:v1");
        assert_eq!(norm("ghcr.io/o/r/x"), "ghcr.io/o/r/x:latest");
        assert_eq!(
            norm(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            norm(&format!("host:5000/a:1.0@{D}")),
            format!("host:5000/a:1.0@{D}")
        );
        assert_eq!(
            norm("a__b/c-d.e_f:T_1.x-y"),
            "docker.io/a__b/c-d.e_f:T_1.x-y"
        );
        // An upper-case first component is a host, as Docker decides.
        assert_eq!(norm("Example/img"), "Example/img:latest");
        let r = Reference::parse("127.0.0.1:5000/base:1").unwrap();
        assert_eq!(r.host(), "127.0.0.1");
        assert_eq!(r.tag_key().unwrap(), "127.0.0.1:5000/base:1");
        assert_eq!(Reference::parse("[::1]:5/x").unwrap().host(), "::1");
    }

    #[test]
    fn tags_share_the_reference_grammar() {
        assert_eq!(
            Reference::split_tag("host:5000/a/b"),
            ("host:5000/a/b", None)
        );
        assert_eq!(
            Reference::split_tag("host:5000/a:1"),
            ("host:5000/a", Some("1"))
        );
        assert_eq!(Reference::split_tag("a:"), ("a", Some("")));
        let (r, name, tag) = Reference::parse_tag("myapp").unwrap();
        assert_eq!((name.as_str(), tag.as_str()), ("myapp", "latest"));
        assert_eq!(r.to_string(), "docker.io/library/myapp:latest");
        let (_, name, tag) = Reference::parse_tag("localhost:5000/x:v1").unwrap();
        assert_eq!((name.as_str(), tag.as_str()), ("localhost:5000/x", "v1"));
        assert!(Reference::parse_tag(&format!("a@{D}")).is_err());
        assert!(Reference::parse_tag("a..b").is_err());
    }

    #[test]
    fn rejects_invalid_references() {
        for (bad, why) in [
            ("", "empty"),
            ("Ubuntu", "lowercase"),
            ("user/Img", "lowercase"),
            ("ubuntu:", "tag"),
            ("ubuntu:-x", "tag"),
            ("a//b", "repository name"),
            ("a/b_", "repository name"),
            ("-a", "repository name"),
            ("ubuntu@sha256:abc", "invalid digest"),
            ("ubuntu@sha512:abc", "unsupported digest algorithm"),
            ("ubuntu@", "invalid digest"),
            (&"e".repeat(64), "image ID"),
            ("ho_st:5000/a", "registry host"),
            ("host:5000/a:b:c", "repository name"),
            (&format!("ubuntu:{}", "t".repeat(129)), "tag"),
            ("ubuntu:tág", "tag"),
            ("ubuntu:.x", "tag"),
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.starts_with("invalid reference"), "{err}");
        }
        // Tags: a word character, then up to 127 of word characters, dots and dashes.
        for good in ["_", "1.0-rc_1", &"t".repeat(128)] {
            let r = Reference::parse(&format!("ubuntu:{good}")).unwrap();
            assert_eq!(r.tag.as_deref(), Some(good));
        }
        let long = format!("{}/{}", "a".repeat(200), "b".repeat(60));
        assert!(Reference::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
    }
}
