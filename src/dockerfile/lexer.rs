//! [`LogicalLine`]: one instruction's text after joining continuation lines, with a map back
//! to physical lines and columns, and the bodies of its here-documents.
//!
//! The rules are BuildKit's: a line ending in the escape character (trailing blanks allowed)
//! continues; comment lines and blank lines inside a continuation are skipped; a
//! continuation at end of file ends the instruction; `\r\n` endings and a UTF-8 BOM are
//! accepted. Heredoc bodies follow the instruction line verbatim (no comment or continuation
//! processing) up to the delimiter line.

use super::expand::{Lexer, Options};
use super::instructions::Heredoc;
use super::words::{self, JsonForm};
use super::Fault;
use regex::Regex;
use std::sync::OnceLock;

/// An instruction's joined text and where each piece came from.
#[derive(Debug, Clone)]
pub struct LogicalLine {
    pub text: String,
    /// `(offset in text, line number, 1-based char column)` of each joined piece.
    segs: Vec<(usize, usize, usize)>,
    pub start_line: usize,
    pub end_line: usize,
    /// The physical source lines of the instruction (heredoc bodies included), `\n`-joined.
    pub original: String,
    pub heredocs: Vec<Heredoc>,
}

impl LogicalLine {
    /// A single-line logical line (ONBUILD triggers from an image config).
    pub fn single(text: &str) -> LogicalLine {
        LogicalLine {
            text: text.to_string(),
            segs: vec![(0, 1, 1)],
            start_line: 1,
            end_line: 1,
            original: text.to_string(),
            heredocs: Vec::new(),
        }
    }

    /// Line and 1-based column of byte `offset` of `text`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let i = self.segs.partition_point(|s| s.0 <= offset).max(1) - 1;
        let (start, line, col) = self.segs[i];
        let chars = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line, col + chars)
    }

    pub fn fault(&self, offset: usize, message: impl Into<String>) -> Fault {
        let (line, col) = self.position(offset);
        Fault::new(line, col, message)
    }
}

/// Removes a trailing escape character (and blanks after it); says whether one was there.
/// An escaped escape (`trailing\\`) ends the instruction (docker/for-win#5254); like
/// BuildKit's pattern, an escape preceded by any escape is not a continuation.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) if !s.ends_with(escape) => (s, true),
        _ => (line, false),
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Splits the source into logical lines. `lines` are the physical lines (BOM and `\r`
/// removed).
pub fn logical_lines(lines: &[&str], escape: char) -> Result<Vec<LogicalLine>, Fault> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let first = raw.trim_start();
        if first.starts_with('#') || first.is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        let lead_cols = raw[..raw.len() - first.len()].chars().count();
        let (piece, mut cont) = trim_continuation(first, escape);
        let mut text = piece.to_string();
        let mut segs = vec![(0, i + 1, lead_cols + 1)];
        i += 1;
        while cont && i < lines.len() {
            let raw = lines[i];
            i += 1;
            if is_comment(raw) || raw.trim_start().is_empty() {
                continue;
            }
            let (piece, c) = trim_continuation(raw, escape);
            segs.push((text.len(), i, 1));
            text.push_str(piece);
            cont = c;
        }
        if text.trim().is_empty() {
            continue;
        }
        let mut ll = LogicalLine {
            text,
            segs,
            start_line: start + 1,
            end_line: i,
            original: String::new(),
            heredocs: Vec::new(),
        };
        if may_have_heredocs(&ll.text) {
            for mut doc in heredocs_in(&ll)? {
                let mut body = String::new();
                let mut done = false;
                while i < lines.len() {
                    let line = lines[i];
                    i += 1;
                    let candidate = if doc.chomp {
                        line.trim_start_matches('\t')
                    } else {
                        line
                    };
                    if candidate == doc.name {
                        done = true;
                        break;
                    }
                    body.push_str(candidate);
                    body.push('\n');
                }
                if !done {
                    return Err(ll.fault(0, format!("unterminated heredoc {}", doc.name)));
                }
                doc.body = body;
                ll.heredocs.push(doc);
            }
            ll.end_line = i;
        }
        ll.original = lines[start..i].join("\n");
        out.push(ll);
    }
    Ok(out)
}

/// Heredocs are read for RUN, COPY and ADD (also as ONBUILD triggers) in shell form only.
fn may_have_heredocs(text: &str) -> bool {
    if !text.contains("<<") {
        return false;
    }
    let mut cmd = words::split_command(text);
    if cmd.keyword.text.eq_ignore_ascii_case("onbuild") {
        cmd = words::split_command(&cmd.rest);
    }
    let kw = cmd.keyword.text.to_ascii_lowercase();
    matches!(kw.as_str(), "run" | "copy" | "add")
        && words::parse_json(&cmd.rest) == JsonForm::NotJson
}

fn heredoc_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([0-9]*)<<(-?)([^<]*)$").expect("static regex"))
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The heredoc markers of a line, in order (bodies still empty). The line is split into
/// words keeping quotes and escapes; each word of the form `[fd]<<[-]WORD` is a marker.
fn heredocs_in(ll: &LogicalLine) -> Result<Vec<Heredoc>, Fault> {
    let lexer = Lexer::new(Options {
        escape: '\\',
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        skip_quotes: false,
    });
    let words = match lexer.process(&ll.text, &no_env) {
        Ok(e) => e.words,
        Err(_) => return Ok(Vec::new()),
    };
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_marker(&w).map_err(|m| ll.fault(0, m))? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Parses one `[fd]<<[-]WORD` marker; `Ok(None)` when the word is not one.
pub fn parse_marker(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(m) = heredoc_re().captures(word) else {
        return Ok(None);
    };
    let rest = &m[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let mut opts = Options::new('\\');
    opts.skip_unset = true;
    let plain = Lexer::new(opts)
        .process(rest, &no_env)
        .map_err(|e| e.to_string())?;
    if plain.words.len() != 1 {
        return Ok(None);
    }
    opts.raw_quotes = true;
    let raw = Lexer::new(opts)
        .process(rest, &no_env)
        .map_err(|e| e.to_string())?;
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let name = plain.words[0].clone();
    let expand = raw.words.len() == 1 && quotes(&name) == quotes(&raw.words[0]);
    Ok(Some(Heredoc {
        name,
        body: String::new(),
        expand,
        chomp: &m[2] == "-",
        fd: m[1].parse().ok(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(src: &str) -> Vec<LogicalLine> {
        let l: Vec<&str> = src.lines().collect();
        logical_lines(&l, '\\').unwrap()
    }

    #[test]
    fn continuation_skips_comments_and_blanks() {
        let ll = lines("RUN a \\\n# c\n\n  b \\  \n c\nCMD x\n");
        assert_eq!(ll.len(), 2);
        assert_eq!(ll[0].text, "RUN a   b  c");
        assert_eq!((ll[0].start_line, ll[0].end_line), (1, 5));
        assert_eq!(ll[0].position(9), (4, 4));
        assert_eq!(ll[1].start_line, 6);
    }

    #[test]
    fn continuation_at_eof() {
        let ll = lines("RUN a \\");
        assert_eq!(ll[0].text, "RUN a ");
    }

    #[test]
    fn heredoc_markers() {
        let d = parse_marker("<<-\"EOF\"").unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.expand, d.chomp), ("EOF", false, true));
        let d = parse_marker("3<<EOF").unwrap().unwrap();
        assert_eq!((d.fd, d.expand), (Some(3), true));
        assert!(parse_marker("<<").unwrap().is_none());
        assert!(parse_marker("a<<b").unwrap().is_none());
    }

    #[test]
    fn heredoc_bodies() {
        let ll = lines("RUN <<A cat - <<-'B'\nx $y\nA\n\tz\n\tB\nCMD q\n");
        assert_eq!(ll.len(), 2);
        let h = &ll[0].heredocs;
        assert_eq!((h[0].body.as_str(), h[0].expand), ("x $y\n", true));
        assert_eq!((h[1].body.as_str(), h[1].expand), ("z\n", false));
        assert_eq!(ll[0].end_line, 5);
    }
}
