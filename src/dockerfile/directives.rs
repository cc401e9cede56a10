//! [`Directives`]: the `# syntax=`, `# escape=` and `# check=` parser directives.
//!
//! They exist only in the comment block at the very top of the file, as BuildKit reads them:
//! the first line that is not `# key=value` with a known key (a blank line, an ordinary
//! comment, an instruction) ends the block, a `#!` shebang may precede them on line 1,
//! keys are case-insensitive, and a key given twice is an error.

use super::Fault;
use regex::Regex;
use std::sync::OnceLock;

/// The parser directives of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` (a frontend image reference): cairn is its own Dockerfile frontend, so
    /// this is only checked (see [`Directives::unemulated_syntax`]).
    pub syntax: Option<String>,
    /// The line of `# syntax=` (0 when absent).
    pub syntax_line: usize,
    /// `# escape=`: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` (lint configuration; recorded, not acted on).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            syntax_line: 0,
            escape: '\\',
            check: None,
        }
    }
}

impl Directives {
    /// The `# syntax=` frontend when it is not one cairn emulates: cairn implements the
    /// Dockerfile syntax of `docker/dockerfile` (`:1`, `:1.x`, `:latest`, labs and
    /// upstream channels, by tag or digest); any other frontend image defines its own
    /// language, which cairn reads as a plain Dockerfile. `None` when absent or emulated.
    pub fn unemulated_syntax(&self) -> Option<&str> {
        let s = self.syntax.as_deref()?;
        let emulated = crate::registry::Reference::parse(s).is_ok_and(|r| {
            r.registry == crate::registry::DOCKER_HUB
                && matches!(
                    r.repository.as_str(),
                    "docker/dockerfile" | "docker/dockerfile-upstream"
                )
                && r.tag.as_deref().map_or(true, |t| {
                    t == "latest"
                        || t == "labs"
                        || t == "master"
                        || t == "master-labs"
                        || t.split(['.', '-']).next() == Some("1")
                })
        });
        (!emulated).then_some(s)
    }
}

fn directive_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Go's `\s`, which BuildKit's pattern uses, is ASCII: spelled out, as the Unicode
        // class costs milliseconds to compile on every build.
        Regex::new(
            r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$",
        )
        .expect("static regex")
    })
}

/// Reads the directives from the top of `lines` (BOM already removed).
pub(crate) fn scan(lines: &[&str]) -> Result<Directives, Fault> {
    let mut d = Directives::default();
    let mut seen: Vec<String> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim_start();
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        let Some(m) = directive_re().captures(line) else {
            break;
        };
        let key = m[1].to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        let col = raw.len() - line.len() + 1;
        if seen.contains(&key) {
            return Err(Fault::new(
                i + 1,
                col,
                format!("only one {key} parser directive can be used"),
            ));
        }
        let value = m[2].to_string();
        match key.as_str() {
            "escape" => {
                d.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(Fault::new(
                            i + 1,
                            col,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => {
                d.syntax = Some(value);
                d.syntax_line = i + 1;
            }
            _ => d.check = Some(value),
        }
        seen.push(key);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_stop_at_first_other_line() {
        let d = scan(&[
            "#!/usr/bin/env x",
            "# Syntax = docker/dockerfile:1",
            "#ESCAPE=`",
        ])
        .unwrap();
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.escape, '`');
        let d = scan(&["", "# escape=`"]).unwrap();
        assert_eq!(d.escape, '\\');
        let d = scan(&["# hello", "# escape=`"]).unwrap();
        assert_eq!(d.escape, '\\');
        let d = scan(&["# check=skip=all", "FROM x", "# escape=`"]).unwrap();
        assert_eq!((d.check.as_deref(), d.escape), (Some("skip=all"), '\\'));
    }

    #[test]
    fn which_frontends_are_emulated() {
        let syntax = |s: &str| Directives {
            syntax: Some(s.into()),
            ..Directives::default()
        };
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile",
            "docker/dockerfile:1-labs",
            "docker/dockerfile:labs",
            "docker/dockerfile-upstream:master",
            "docker/dockerfile:1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(syntax(ok).unemulated_syntax(), None, "{ok}");
        }
        for other in [
            "devthefuture/dockerfile-x",
            "tonistiigi/dockerfile:runmount20180618",
            "docker/dockerfile:2",
            "example.com/docker/dockerfile:1",
            "not a reference",
        ] {
            assert_eq!(syntax(other).unemulated_syntax(), Some(other), "{other}");
        }
        assert_eq!(Directives::default().unemulated_syntax(), None);
        let d = scan(&["# escape=`", "# syntax=x/y"]).unwrap();
        assert_eq!(d.syntax_line, 2);
    }

    #[test]
    fn directive_errors() {
        assert!(scan(&["# escape=`", "# escape=\\"]).is_err());
        assert!(scan(&["# escape=x"]).is_err());
    }
}
