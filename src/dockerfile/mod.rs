//! [`Dockerfile`]: a Dockerfile read exactly as `docker build` (BuildKit) reads it — parser
//! directives, continuation lines, heredocs, typed instructions with source spans — grouped
//! into stages, with nothing expanded yet (that is `plan::Scope`'s job, because expansion
//! depends on build arguments and on each stage's environment).
//!
//! The front end has three steps, as BuildKit's: `lexer` joins physical lines into logical
//! ones, `convert` turns each into a typed [`Instruction`], and [`parse`] groups them into
//! stages. [`expand`] is BuildKit's shell-word lexer; [`to_json`] is what `cairn parse
//! --format json` prints.
//!
//! Robustness: no input may panic or hang. `tests/dockerfile_props.rs` is a proptest over
//! [`parse`] and [`expand::expand_word`]; run it with
//! `cargo test --test dockerfile_props` (set `PROPTEST_CASES=100000` for a longer run).

mod chmod;
mod convert;
pub mod directives;
pub mod expand;
mod flags;
pub mod ignore;
pub mod instructions;
mod json;
mod lexer;
pub mod suggest;
mod words;

pub use chmod::Chmod;
pub use directives::Directives;
pub use instructions::*;
pub use json::{to_json, to_text};

use std::fmt;

/// A Dockerfile error: where, what, and the offending source line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The source line at `line` (empty when there is none, e.g. an empty file).
    pub source_line: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if !self.source_line.is_empty() {
            write!(f, "\n  {}", self.source_line)?;
        }
        Ok(())
    }
}

/// An error before the file name and source line are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Fault {
    pub fn new(line: usize, col: usize, message: impl Into<String>) -> Fault {
        Fault {
            line,
            col,
            message: message.into(),
        }
    }

    fn into_error(self, file: &str, lines: &[&str]) -> Error {
        Error {
            file: file.to_string(),
            line: self.line,
            col: self.col,
            message: self.message,
            source_line: lines
                .get(self.line.wrapping_sub(1))
                .map_or(String::new(), |l| l.to_string()),
        }
    }
}

/// Where an instruction is: its first line, the column of its keyword, its last line
/// (heredoc bodies included). Lines and columns are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub end_line: usize,
}

/// A node with its span and the exact source text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
    /// The physical source lines of the instruction, `\n`-joined, as written.
    pub original: String,
}

/// A build stage: its `FROM` and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub from: FromInst,
    pub span: Span,
    /// The `FROM` line as written.
    pub original: String,
    pub instructions: Vec<Spanned<Instruction>>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG` instructions before the first `FROM`.
    pub global_args: Vec<Spanned<Instruction>>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The index of the stage named `name` (names are matched case-insensitively).
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.from.name.as_deref() == Some(lower.as_str()))
    }
}

/// Parses a Dockerfile. `file_name` is used in error messages only.
pub fn parse(src: &str, file_name: &str) -> Result<Dockerfile, Error> {
    let lines = split_lines(src);
    parse_lines(&lines).map_err(|f| f.into_error(file_name, &lines))
}

/// Physical lines with `\n` / `\r\n` endings removed, the BOM dropped.
fn split_lines(src: &str) -> Vec<&str> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    src.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

fn parse_lines(lines: &[&str]) -> Result<Dockerfile, Fault> {
    let directives = directives::scan(lines)?;
    let logical = lexer::logical_lines(lines, directives.escape)?;
    if logical.is_empty() {
        return Err(Fault::new(
            lines.len().max(1),
            1,
            "file with no instructions",
        ));
    }
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ll in &logical {
        let node = convert::instruction(ll, directives.escape)?;
        let (line, col) = ll.position(ll.text.len() - ll.text.trim_start().len());
        let span = Span {
            line,
            col,
            end_line: ll.end_line,
        };
        if let Instruction::From(from) = node {
            if let Some(name) = &from.name {
                if stages.iter().any(|s| s.from.name.as_ref() == Some(name)) {
                    return Err(Fault::new(
                        line,
                        col,
                        format!("duplicate stage name {name:?}"),
                    ));
                }
            }
            stages.push(Stage {
                from,
                span,
                original: ll.original.clone(),
                instructions: Vec::new(),
            });
            continue;
        }
        let spanned = Spanned {
            node,
            span,
            original: ll.original.clone(),
        };
        match stages.last_mut() {
            Some(stage) => stage.instructions.push(spanned),
            None if matches!(spanned.node, Instruction::Arg(_)) => global_args.push(spanned),
            None => {
                return Err(Fault::new(
                    line,
                    col,
                    format!(
                        "{} before the first FROM: only ARG may come before FROM",
                        spanned.node.keyword()
                    ),
                ))
            }
        }
    }
    if stages.is_empty() {
        let last = logical.last().map_or(1, |l| l.start_line);
        return Err(Fault::new(
            last,
            1,
            "dockerfile contains no stages to build",
        ));
    }
    Ok(Dockerfile {
        directives,
        global_args,
        stages,
    })
}

/// The heredoc a `COPY`/`ADD` source word stands for (`<<EOF`, `<<-"EOF"`), if it is a
/// heredoc marker whose delimiter names one of `heredocs`.
pub fn heredoc_source<'a>(word: &str, heredocs: &'a [Heredoc]) -> Option<&'a Heredoc> {
    let marker = lexer::parse_marker(word).ok().flatten()?;
    heredocs.iter().find(|h| h.name == marker.name)
}

/// Parses one instruction as an ONBUILD trigger is stored in an image config: one line
/// (backslash escape, no continuation), followed by the bodies of its heredocs, if any.
pub fn parse_instruction_line(text: &str) -> Result<Instruction, Error> {
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() > 1 {
        let err = |f: Fault| f.into_error("ONBUILD", &lines);
        let lls = lexer::logical_lines(&lines, '\\').map_err(err)?;
        if let [ll] = lls.as_slice() {
            return convert::instruction(ll, '\\').map_err(err);
        }
    }
    let ll = lexer::LogicalLine::single(text);
    convert::instruction(&ll, '\\').map_err(|f| f.into_error("ONBUILD", &[text]))
}
