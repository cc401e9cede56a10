//! [`Lexer`]: word expansion and splitting with the rules of BuildKit's Dockerfile shell lexer.
//!
//! Docker does not run a shell to expand `$VAR` in `ENV`, `COPY`, `WORKDIR` and friends; it
//! has its own small lexer, and a builder that claims to read Dockerfiles as `docker build`
//! does must reproduce its quirks exactly: single quotes are literal, inside double quotes the
//! escape character only escapes `"`, `$` and itself, `$VAR` results are split into words but
//! quoted text is not, `${VAR:?msg}` fails the build, and the pattern operators (`#`, `%`, `/`)
//! take `*` and `?` wildcards (no bracket expressions). The same lexer, with raw quotes and raw
//! escapes, finds heredoc markers on instruction lines.
//!
//! Nothing here can hang or recurse without bound: nesting of `${...}` is capped at
//! [`MAX_DEPTH`] and pattern matching uses the linear-time `regex` crate.

use std::collections::BTreeSet;

/// How deep `${a:-${b:-...}}` may nest before we refuse (BuildKit has no cap; we keep the stack).
pub const MAX_DEPTH: usize = 64;

/// An expansion failure (`${X:?msg}`, a bad substitution, an unterminated quote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// Knobs of the lexer; the defaults are what instruction arguments use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The escape character (`\` or `` ` `` from the `# escape=` directive).
    pub escape: char,
    /// Keep quote characters in the result (heredoc detection).
    pub raw_quotes: bool,
    /// Keep escape characters in the result (heredoc detection).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters (COPY heredoc bodies).
    pub skip_quotes: bool,
}

impl Options {
    pub fn new(escape: char) -> Options {
        Options {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }
}

/// The outcome of [`Lexer::process`]: the single-word result, the split words, and which
/// variable names were looked up and found or not (for "unused build-arg" style reporting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub result: String,
    pub words: Vec<String>,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// Expands `word` as one word (quotes removed, no splitting), as ENV values and paths are.
pub fn expand_word(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, Error> {
    Ok(Lexer::new(Options::new(escape)).process(word, env)?.result)
}

/// Expands `word` and splits the result into words (unquoted whitespace, including whitespace
/// that came out of a `$VAR`, separates words; quoted whitespace does not).
pub fn expand_words(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, Error> {
    Ok(Lexer::new(Options::new(escape)).process(word, env)?.words)
}

/// The lexer itself; cheap to create, one per call.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    opts: Options,
}

impl Lexer {
    pub fn new(opts: Options) -> Lexer {
        Lexer { opts }
    }

    /// Expands `word`, returning both the single-word result and the split words. Errors
    /// read as BuildKit's: `failed to process "WORD": REASON`.
    pub fn process(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, Error> {
        let mut sc = Scan {
            chars: word.chars().collect(),
            pos: 0,
            env,
            opts: self.opts,
            raw_escapes: self.opts.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sc.stop_on(None, self.opts.raw_escapes) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: sc.matched,
                unmatched: sc.unmatched,
            }),
            Err(e) => Err(Error(format!("failed to process {word:?}: {e}"))),
        }
    }
}

/// Word accumulation with BuildKit's splitting rules.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Scan<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Fn(&str) -> Option<String>,
    opts: Options,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type R<T> = Result<T, String>;

const MISSING_BRACE: &str = "syntax error: missing '}'";

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = (self.env)(name);
        if v.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        v
    }

    /// Processes until `stop` (consumed) or the end; returns the text and its split words.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> R<(String, Vec<String>)> {
        if self.depth >= MAX_DEPTH {
            return Err("syntax error: substitutions nested too deeply".into());
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> R<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                    words.add_string(&v);
                }
                '\'' if !self.opts.skip_quotes => {
                    let v = self.single_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                '"' if !self.opts.skip_quotes => {
                    let v = self.double_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                _ => {
                    self.next();
                    if ch == self.opts.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(format!(
                "unexpected end of statement while looking for matching {c}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> R<String> {
        let mut out = String::new();
        let open = self.next().unwrap_or('\'');
        if self.opts.raw_quotes {
            out.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> R<String> {
        let mut out = String::new();
        let open = self.next().unwrap_or('"');
        if self.opts.raw_quotes {
            out.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.opts.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // A trailing escape is dropped; the loop then reports the open quote.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.opts.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// Reads a variable name: letters, digits and `_`; a leading digit reads only digits; a
    /// special parameter (`$@`, `$#`, ...) is one character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> R<String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err(MISSING_BRACE.into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let Some(mut ch) = self.next() else {
            return Err(MISSING_BRACE.into());
        };
        let mut chs = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    ch = self.next().ok_or(MISSING_BRACE)?;
                    chs.push(ch);
                }
                self.modifier(&name, ch, &chs, null_is_unset)
            }
            '/' => self.replace(&name),
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn modifier(&mut self, name: &str, ch: char, chs: &str, null_is_unset: bool) -> R<String> {
        let raw = ch == '#' || ch == '%';
        let word = match self.stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err(MISSING_BRACE.into()),
            Err(e) => return Err(e),
        };
        let value = self.get_env(name);
        if self.opts.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let empty = match value.as_deref() {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match ch {
            '-' => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (pattern, greedy) = match word.strip_prefix(ch) {
                    Some(rest) => (rest.to_string(), true),
                    None => (word, false),
                };
                if ch == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn replace(&mut self, name: &str) -> R<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".into())
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err(MISSING_BRACE.into()),
            Err(e) => return Err(e),
        };
        let value = self.get_env(name);
        if self.opts.skip_unset && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let re = pattern_regex(&pattern, true, false)?;
        if all {
            return Ok(re.replace_all(&value, replacement.as_str()).into_owned());
        }
        Ok(match re.find(&value) {
            Some(m) => format!(
                "{}{}{}",
                &value[..m.start()],
                replacement,
                &value[m.end()..]
            ),
            None => value,
        })
    }
}

/// Turns a shell pattern (`*`, `?`, `\` escapes; no brackets) into a regex.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> R<regex::Regex> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut it = pattern.chars().peekable();
    while let Some(tok) = it.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` only protect the ${} syntax; the escape is not in the pattern.
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                match it.next() {
                    Some(c @ ('*' | '?' | '\\')) => out.push_str(&regex::escape(&c.to_string())),
                    Some(c) => {
                        return Err(bad_pattern(pattern, &format!("invalid escape '\\{c}'")))
                    }
                    None => return Err(bad_pattern(pattern, "invalid escape at end of pattern")),
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::RegexBuilder::new(&out)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| bad_pattern(pattern, &e.to_string()))
}

fn bad_pattern(pattern: &str, why: &str) -> String {
    format!("invalid pattern ({pattern}) in substitution: {why}")
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> R<String> {
    let re = pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Shortest/longest suffix removal: reverse both sides and remove a prefix, since a regex
/// finds leftmost matches only.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> R<String> {
    let reversed = reverse_pattern(pattern);
    let value: String = value.chars().rev().collect();
    Ok(trim_prefix(&reversed, &value, greedy)?
        .chars()
        .rev()
        .collect())
}

/// Reverses a pattern keeping each `\x` escape pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            out.push(chars[i + 1]);
            out.push('\\');
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.reverse();
    out.into_iter().collect()
}
