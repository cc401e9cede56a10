//! [`normalize_tag`]: image names as `docker tag` and `manifest.json` want them
//! (`myapp` → `myapp:latest`), and [`full_name`] as OCI layouts annotate them
//! (`docker.io/library/myapp:latest`).

use super::Error;
use crate::registry::Reference;

/// `name[:tag]` with `:latest` added when no tag is given, the name kept as written.
/// Digests (`@sha256:…`) and malformed names are refused: a load can only tag. The grammar
/// is the registry's ([`Reference::parse_tag`]), so a name cairn can tag is a name it can
/// pull.
pub fn normalize_tag(s: &str) -> Result<String, Error> {
    let (_, name, tag) = Reference::parse_tag(s).map_err(|_| Error::InvalidTag(s.to_string()))?;
    Ok(format!("{name}:{tag}"))
}

/// The fully qualified name of a normalised tag (`docker.io/library/` added as Docker does).
pub fn full_name(tag: &str) -> String {
    Reference::parse(tag).map_or_else(|_| tag.to_string(), |r| r.to_string())
}

/// `(name, tag)` of a normalised tag.
pub(crate) fn repo_and_tag(tag: &str) -> (&str, &str) {
    let (n, t) = Reference::split_tag(tag);
    (n, t.unwrap_or("latest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        assert_eq!(normalize_tag("myapp").unwrap(), "myapp:latest");
        assert_eq!(normalize_tag("myapp:1.0").unwrap(), "myapp:1.0");
        assert_eq!(
            normalize_tag("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            normalize_tag("reg.io:443/x:v-1").unwrap(),
            "reg.io:443/x:v-1"
        );
        for bad in [
            "",
            "a@sha256:00",
            "My/App",
            "Upper",
            "a:",
            "a:-x",
            "a b",
            "/a",
            "a//b",
            "a..b",
            "-a",
            "a:b:c",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad}");
        }
        assert_eq!(full_name("myapp:1"), "docker.io/library/myapp:1");
        assert_eq!(full_name("me/app:1"), "docker.io/me/app:1");
        assert_eq!(full_name("localhost:5000/a:1"), "localhost:5000/a:1");
        assert_eq!(
            repo_and_tag("localhost:5000/a:1"),
            ("localhost:5000/a", "1")
        );
    }
}
