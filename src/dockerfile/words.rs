//! [`Word`]: a piece of an instruction line with its byte offset, and the splitters that
//! produce words the way BuildKit's parser does before any expansion happens.
//!
//! Four splitters exist because Dockerfile instructions disagree on what a word is: flags are
//! unquoted while being read (`--from="build"` is `--from=build`); ENV, LABEL and ARG keep
//! quotes and escapes for the expander (`parse_words`); COPY, EXPOSE and FROM split on plain
//! ASCII blanks only; and exec form is a JSON array of strings, where anything that does not
//! parse as one falls back to shell form.

/// A word and where it starts (byte offset in the logical line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub offset: usize,
}

/// The blanks of BuildKit's `reWhitespace` (`[\t\v\f\r ]`).
pub fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// Splits `s` (starting at byte `base` of the line) on runs of blanks; empty pieces at the
/// ends are dropped.
pub fn split_blank(s: &str, base: usize) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if is_blank(c) {
            if let Some(st) = start.take() {
                out.push(Word {
                    text: s[st..i].to_string(),
                    offset: base + st,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(Word {
            text: s[st..].to_string(),
            offset: base + st,
        });
    }
    out
}

/// The instruction keyword, its leading flags (`--name[=value]`, quotes removed), and the
/// rest of the line (trimmed), with offsets.
#[derive(Debug, Clone)]
pub struct Command {
    pub keyword: Word,
    pub flags: Vec<Word>,
    pub rest: String,
    pub rest_offset: usize,
}

/// Splits a logical line into keyword, flags and the rest.
pub fn split_command(line: &str) -> Command {
    let start = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    let kw_end = trimmed.find(is_blank).unwrap_or(trimmed.len());
    let keyword = Word {
        text: trimmed[..kw_end].to_string(),
        offset: start,
    };
    let after = &trimmed[kw_end..];
    let (flags, rest_rel) = extract_flags(after);
    let rest_raw = &after[rest_rel..];
    let lead = rest_raw.len() - rest_raw.trim_start().len();
    Command {
        keyword,
        flags: flags
            .into_iter()
            .map(|w| Word {
                text: w.text,
                offset: w.offset + start + kw_end,
            })
            .collect(),
        rest: rest_raw.trim().to_string(),
        rest_offset: start + kw_end + rest_rel + lead,
    }
}

/// Reads leading `--flag` words; returns them and the byte offset where the rest begins.
/// Inside a flag word, quotes group and are removed, and `\` escapes the next character.
fn extract_flags(line: &str) -> (Vec<Word>, usize) {
    let bytes: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].1.is_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return (words, line.len());
        }
        let at = bytes[i].0;
        if !line[at..].starts_with("--") {
            return (words, at);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        while i < bytes.len() {
            let c = bytes[i].1;
            match quote {
                None if c.is_whitespace() => break,
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if i + 1 < bytes.len() {
                        i += 1;
                        word.push(bytes[i].1);
                    }
                }
                _ => word.push(c),
            }
            i += 1;
        }
        if word == "--" {
            let rest = bytes.get(i).map_or(line.len(), |b| b.0);
            return (words, rest);
        }
        if blank_ok || !word.is_empty() {
            words.push(Word {
                text: word,
                offset: at,
            });
        }
    }
}

/// Splits on whitespace keeping quotes and escapes in the words (for ENV, LABEL, ARG), as
/// BuildKit's `parseWords`: an escape outside quotes keeps itself and the next character,
/// inside double quotes likewise, inside single quotes nothing escapes.
pub fn parse_words(rest: &str, base: usize, escape: char) -> Vec<Word> {
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if !in_word {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
            start = at;
        }
        match quote {
            None => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(Word {
                            text: std::mem::take(&mut word),
                            offset: base + start,
                        });
                    }
                    in_word = false;
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                }
                word.push(chars[i].1);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                }
                word.push(chars[i].1);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(Word {
            text: word,
            offset: base + start,
        });
    }
    words
}

/// Why text that starts like JSON is not exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonForm {
    /// A JSON array of strings: exec form.
    Exec(Vec<String>),
    /// Not JSON (or not an array): shell form.
    NotJson,
    /// A JSON array with a non-string element: an error in Docker.
    NotStrings,
}

/// Parses exec form. As BuildKit's `json.Unmarshal`, the whole text must be one JSON
/// value: `["echo", "hi"]this is invalid` (text after the `]`) is shell form, not
/// `echo hi`.
pub fn parse_json(rest: &str) -> JsonForm {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonForm::NotJson;
    }
    match serde_json::from_str::<serde_json::Value>(rest) {
        Ok(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonForm::NotStrings,
                }
            }
            JsonForm::Exec(out)
        }
        _ => JsonForm::NotJson,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: &[Word]) -> Vec<&str> {
        w.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn command_and_flags() {
        let c = split_command("  COPY --from=\"build stage\" --link  a b");
        assert_eq!(c.keyword.text, "COPY");
        assert_eq!(c.keyword.offset, 2);
        assert_eq!(texts(&c.flags), ["--from=build stage", "--link"]);
        assert_eq!(c.flags[1].offset, 28);
        assert_eq!(c.rest, "a b");
        assert_eq!(c.rest_offset, 36);
        let c = split_command("RUN -- --notaflag");
        assert!(c.flags.is_empty());
        assert_eq!(c.rest, "--notaflag");
        let c = split_command("CMD");
        assert_eq!((c.keyword.text.as_str(), c.rest.as_str()), ("CMD", ""));
    }

    #[test]
    fn words_keep_quotes() {
        let w = parse_words(r#"a="b c" d=e\ f 'g h'"#, 0, '\\');
        assert_eq!(texts(&w), [r#"a="b c""#, r"d=e\ f", "'g h'"]);
        assert_eq!(w[1].offset, 8);
        assert_eq!(texts(&parse_words("x=\"\"", 0, '\\')), ["x=\"\""]);
    }

    #[test]
    fn json_forms() {
        assert_eq!(parse_json(r#"["a", "b"] junk"#), JsonForm::NotJson);
        assert_eq!(parse_json(r#"["a"]x"#), JsonForm::NotJson);
        assert_eq!(parse_json(r#"[1] junk"#), JsonForm::NotJson);
        assert_eq!(parse_json("[] random string"), JsonForm::NotJson);
        assert_eq!(
            parse_json("[\"a\", \"b\"]  \t"),
            JsonForm::Exec(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_json(r#"[1]"#), JsonForm::NotStrings);
        assert_eq!(parse_json(r#"[a]"#), JsonForm::NotJson);
        assert_eq!(parse_json("echo ["), JsonForm::NotJson);
    }
}
