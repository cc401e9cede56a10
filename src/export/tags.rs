//! [`normalize_tag`]: image names as `docker tag` and `manifest.json` want them
//! (`myapp` → `myapp:latest`), and [`full_name`] as OCI layouts annotate them
//! (`docker.io/library/myapp:latest`).

use super::Error;

/// `name[:tag]` with `:latest` added when no tag is given. Digests (`@sha256:…`) and
/// malformed names are refused: a load can only tag.
pub fn normalize_tag(s: &str) -> Result<String, Error> {
    let bad = || Error::InvalidTag(s.to_string());
    if s.is_empty() || s.contains('@') || s.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    let (name, tag) = split(s);
    let name_ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name.split('/').skip(1).all(|c| {
            c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        });
    let tag_ok = tag.map_or(true, |t| {
        !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    });
    if !name_ok || !tag_ok {
        return Err(bad());
    }
    let first = name.split('/').next().unwrap_or("");
    let has_host = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if !has_host && name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad());
    }
    Ok(format!("{name}:{}", tag.unwrap_or("latest")))
}

/// The fully qualified name of a normalised tag: `docker.io/library/` added as Docker does.
pub fn full_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or("");
    let has_host = tag.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_host {
        tag.to_string()
    } else if tag.contains('/') {
        format!("docker.io/{tag}")
    } else {
        format!("docker.io/library/{tag}")
    }
}

/// `(name, tag)` of a normalised tag.
pub(crate) fn repo_and_tag(tag: &str) -> (&str, &str) {
    let (n, t) = split(tag);
    (n, t.unwrap_or("latest"))
}

/// Splits at the last `:` that comes after the last `/` (a `:` before it is a port).
fn split(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
        None => (s, None),
    }
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
