//! [`IgnoreMatcher`]: `.dockerignore` matching with Docker's own rules (moby's
//! `patternmatcher` and `ignorefile`), not gitignore's.
//!
//! It exists because the build context must contain exactly the files `docker build` would
//! send: a file excluded here is invisible to COPY and to the cache key. The rules, in the
//! order Docker applies them:
//!
//! - a line starting with `#` is a comment; blank lines are skipped; each line is trimmed;
//! - `!` makes an exception; patterns are cleaned as Go's `filepath.Clean` does and a
//!   leading `/` is dropped, so `/a`, `./a` and `a/` all mean `a`;
//! - `*` and `?` never cross `/`, `[...]` is a class, `\` escapes, `**` spans any number of
//!   directories (`**/x`, `a/**`, `a/**/b`);
//! - every pattern is tried in order and the last one that matches wins; a pattern that
//!   matches a parent directory matches everything below it;
//! - a walker may skip an excluded directory only when no exception could match inside it
//!   ([`IgnoreMatcher::may_include_below`]).

use crate::context::glob::{self, go_match};
use std::fmt;
use std::path::{Path, PathBuf};

/// A `.dockerignore` that cannot be read or holds an invalid pattern.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern Go's `filepath.Match` rejects, or a lone `!`.
    #[error("{file}:{line}: invalid pattern {pattern:?}: {reason}")]
    Pattern {
        file: String,
        line: usize,
        pattern: String,
        reason: String,
    },
    /// The ignore file exists (or was named) but cannot be read.
    #[error("reading ignore file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Compiled `.dockerignore` patterns, in file order.
#[derive(Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    /// Where the patterns came from, for messages (`None`: no ignore file).
    origin: Option<PathBuf>,
}

#[derive(Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
}

/// moby's four match strategies; which one a pattern gets changes its meaning in corner
/// cases (`**foo` is a plain suffix test), so we keep all four.
#[derive(Clone)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(regex::Regex),
}

impl fmt::Debug for IgnoreMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pats: Vec<String> = self
            .patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.text))
            .collect();
        f.debug_struct("IgnoreMatcher")
            .field("origin", &self.origin)
            .field("patterns", &pats)
            .finish()
    }
}

impl IgnoreMatcher {
    /// A matcher that excludes nothing.
    pub fn empty() -> IgnoreMatcher {
        IgnoreMatcher::default()
    }

    /// Parses the text of an ignore file; errors name the line as `.dockerignore:N`.
    pub fn parse(text: &str) -> Result<IgnoreMatcher, IgnoreError> {
        Self::parse_named(text, ".dockerignore")
    }

    /// Parses the text of an ignore file; errors name `file` and the line.
    pub fn parse_named(text: &str, file: &str) -> Result<IgnoreMatcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let Some(line) = normalize_line(raw) else {
                continue;
            };
            let bad = |reason: String| IgnoreError::Pattern {
                file: file.to_string(),
                line: i + 1,
                pattern: raw.trim().to_string(),
                reason,
            };
            // moby cleans the line a second time when it builds the matcher.
            let line = glob::clean(&line);
            let (exclusion, text) = match line.strip_prefix('!') {
                Some("") => return Err(bad("an exception needs a pattern after !".into())),
                Some(rest) => (true, rest.to_string()),
                None => (false, line),
            };
            if go_match(text.as_bytes(), b".").is_err() {
                return Err(bad("syntax error in pattern".into()));
            }
            let kind = compile(&text).map_err(|e| bad(e.to_string()))?;
            patterns.push(Pattern {
                text,
                exclusion,
                kind,
            });
        }
        Ok(IgnoreMatcher {
            patterns,
            origin: None,
        })
    }

    /// Loads the ignore file for a build, in Docker's order of precedence: an explicit
    /// `ignore_file` (`--ignore-file`, for uploads that drop dot-files), else
    /// `<dockerfile>.dockerignore` beside the Dockerfile, else `CONTEXT/.dockerignore`,
    /// else nothing. An explicit file that is missing is an error; the others are optional.
    pub fn load(
        context: &Path,
        dockerfile: &Path,
        ignore_file: Option<&Path>,
    ) -> Result<IgnoreMatcher, IgnoreError> {
        if let Some(path) = ignore_file {
            return Self::read(path);
        }
        let beside = dockerfile.file_name().filter(|n| *n != "-").map(|name| {
            let mut name = name.to_os_string();
            name.push(".dockerignore");
            dockerfile.with_file_name(name)
        });
        for candidate in beside.into_iter().chain([context.join(".dockerignore")]) {
            match std::fs::symlink_metadata(&candidate) {
                Ok(_) => return Self::read(&candidate),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IgnoreError::Read {
                        path: candidate,
                        source,
                    })
                }
            }
        }
        Ok(IgnoreMatcher::empty())
    }

    fn read(path: &Path) -> Result<IgnoreMatcher, IgnoreError> {
        let bytes = std::fs::read(path).map_err(|source| IgnoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut m = Self::parse_named(&text, &path.display().to_string())?;
        m.origin = Some(path.to_path_buf());
        Ok(m)
    }

    /// The file the patterns were read from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a context path (slash-separated, relative to the context root) is excluded:
    /// the last pattern matching it or one of its parent directories decides.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = glob::clean(rel_path.trim_start_matches('/'));
        if path == "." || self.patterns.is_empty() {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => {
                let dir = &path[..i];
                dir.match_indices('/')
                    .map(|(j, _)| &dir[..j])
                    .chain([dir])
                    .collect()
            }
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            // An include cannot change an excluded path, an exception an included one.
            if p.exclusion != excluded {
                continue;
            }
            let hit = p.matches(&path) || parents.iter().any(|parent| p.matches(parent));
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether a walker must descend into `rel_dir` even though it is excluded, because an
    /// exception (`!pattern`) could match something below it. Conservative: a `true` only
    /// costs a walk, since each path found below is still checked with
    /// [`is_excluded`](Self::is_excluded).
    pub fn may_include_below(&self, rel_dir: &str) -> bool {
        let dir = glob::clean(rel_dir.trim_start_matches('/'));
        let dir_parts: Vec<&str> = if dir == "." {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| exception_reaches(&p.text, &dir_parts))
    }
}

/// One line of an ignore file as moby's `ignorefile.ReadAll` reads it: comments (only at
/// column 0) and blank lines dropped, trimmed, cleaned, leading `/` removed, `!` kept.
fn normalize_line(raw: &str) -> Option<String> {
    if raw.starts_with('#') {
        return None;
    }
    let mut line = raw.trim();
    if line.is_empty() {
        return None;
    }
    let invert = line.starts_with('!');
    if invert {
        line = line[1..].trim();
    }
    let mut pattern = String::new();
    if !line.is_empty() {
        pattern = glob::clean(line);
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
    }
    Some(if invert {
        format!("!{pattern}")
    } else {
        pattern
    })
}

/// Whether an exception's components could match `dir` followed by more components.
fn exception_reaches(pattern: &str, dir_parts: &[&str]) -> bool {
    for (i, part) in pattern.split('/').enumerate() {
        if part.contains("**") || i >= dir_parts.len() {
            return true;
        }
        if !go_match(part.as_bytes(), dir_parts[i].as_bytes()).unwrap_or(false) {
            return false;
        }
    }
    // The exception names `dir` itself or a parent: descending is the safe answer.
    true
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// Translates a cleaned pattern to moby's match strategy, scanning it as moby does.
fn compile(pattern: &str) -> Result<Kind, regex::Error> {
    #[derive(PartialEq)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut t = T::Exact;
    let mut in_class = false;
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if t == T::Exact {
                        t = T::Prefix;
                    } else {
                        re.push_str(".*");
                        t = T::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    t = T::Regex;
                }
                if step == 0 {
                    t = T::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                t = T::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                t = T::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    push_escaped(&mut re, next);
                    t = T::Regex;
                }
                None => re.push_str("\\\\"),
            },
            '[' if !in_class => {
                in_class = true;
                re.push('[');
                t = T::Regex;
            }
            ']' => {
                in_class = false;
                re.push(']');
                t = T::Regex;
            }
            // Rust's classes give `[`, `&&`, `--` and `~~` meanings Go's do not have.
            '[' | '&' | '~' if in_class => push_escaped(&mut re, ch),
            _ => re.push(ch),
        }
        step += 1;
    }
    Ok(match t {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        T::Suffix => Kind::Suffix(pattern[2..].to_string()),
        T::Regex => {
            re.push('$');
            Kind::Regex(regex::Regex::new(&re)?)
        }
    })
}

fn push_escaped(re: &mut String, ch: char) {
    if ch.is_ascii_alphanumeric() {
        re.push(ch);
    } else {
        re.push_str(&regex::escape(&ch.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> &'static str {
        match compile(p).unwrap() {
            Kind::Exact => "exact",
            Kind::Prefix(_) => "prefix",
            Kind::Suffix(_) => "suffix",
            Kind::Regex(_) => "regex",
        }
    }

    #[test]
    fn strategies_follow_moby() {
        assert_eq!(kind("a/b"), "exact");
        assert_eq!(kind("a/**"), "prefix");
        assert_eq!(kind("**/a"), "suffix");
        assert_eq!(kind("**"), "suffix");
        assert_eq!(kind("**/*.go"), "regex");
        assert_eq!(kind("a/*/b"), "regex");
        assert_eq!(kind("a\\*b"), "regex");
    }

    #[test]
    fn lines_are_normalized_like_ignorefile() {
        assert_eq!(normalize_line("# c"), None);
        assert_eq!(normalize_line("   "), None);
        assert_eq!(normalize_line(" #x").as_deref(), Some("#x"));
        assert_eq!(normalize_line("/a/b/").as_deref(), Some("a/b"));
        assert_eq!(normalize_line("./a").as_deref(), Some("a"));
        assert_eq!(normalize_line("! /a ").as_deref(), Some("!a"));
        assert_eq!(normalize_line("!").as_deref(), Some("!"));
        assert_eq!(normalize_line("/").as_deref(), Some("/"));
    }
}
