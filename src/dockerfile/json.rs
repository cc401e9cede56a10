//! [`to_json`] and [`to_text`]: the two renderings `cairn parse` prints.
//!
//! The JSON shape is a contract (golden tests pin it): for each stage its index, base, name
//! and platform; for each instruction `cmd` (lower-case keyword), `flags` (as written),
//! `args` (exec-form elements, or the single shell-form text, or key/value words for ENV and
//! LABEL), `json` (exec form), `line`, `end_line` and `heredocs` (name, body, expand). Keys
//! are sorted (serde_json's map is a BTreeMap), so output is byte-stable.

use super::expand::{Lexer, Options};
use super::instructions::*;
use super::words::{self, JsonForm};
use super::{Dockerfile, Spanned};
use serde_json::{json, Value};

/// The JSON document `cairn parse --format json` prints.
pub fn to_json(df: &Dockerfile) -> Value {
    let stages: Vec<Value> = df
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "index": i,
                "name": s.from.name,
                "base": s.from.image,
                "platform": s.from.platform,
                "flags": s.from.flags,
                "line": s.span.line,
                "instructions": s.instructions.iter().map(|i| inst_json(i, df.directives.escape)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "directives": {
            "syntax": df.directives.syntax,
            "escape": df.directives.escape.to_string(),
            "check": df.directives.check,
        },
        "global_args": df.global_args.iter().map(|i| inst_json(i, df.directives.escape)).collect::<Vec<_>>(),
        "stages": stages,
    })
}

fn inst_json(s: &Spanned<Instruction>, escape: char) -> Value {
    let mut v = node_json(&s.node, &s.original, escape);
    v["line"] = json!(s.span.line);
    v["end_line"] = json!(s.span.end_line);
    v
}

fn shell_or_exec(c: &ShellOrExec) -> (Vec<String>, bool) {
    match c {
        ShellOrExec::Shell(s) if s.is_empty() => (Vec::new(), false),
        ShellOrExec::Shell(s) => (vec![s.clone()], false),
        ShellOrExec::Exec(v) => (v.clone(), true),
    }
}

/// A word with quotes and escapes resolved but `$VAR` left as written, for display.
fn unquote(word: &str, escape: char) -> String {
    let mut opts = Options::new(escape);
    opts.skip_unset = true;
    Lexer::new(opts)
        .process(word, &|_| None)
        .map_or_else(|_| word.to_string(), |e| e.result)
}

fn pairs(kv: &[(String, String)], escape: char) -> Vec<String> {
    kv.iter()
        .flat_map(|(k, v)| [unquote(k, escape), unquote(v, escape)])
        .collect()
}

/// Whether a VOLUME was written in JSON form (the typed node keeps only the paths).
fn volume_is_json(original: &str) -> bool {
    let lines: Vec<&str> = original.lines().collect();
    super::lexer::logical_lines(&lines, '\\')
        .ok()
        .and_then(|l| l.into_iter().next())
        .is_some_and(|ll| {
            matches!(
                words::parse_json(&words::split_command(&ll.text).rest),
                JsonForm::Exec(_)
            )
        })
}

fn node_json(node: &Instruction, original: &str, escape: char) -> Value {
    let (args, is_json): (Vec<String>, bool) = match node {
        Instruction::From(f) => {
            let mut a = vec![f.image.clone()];
            if let Some(n) = &f.name {
                a.extend(["AS".to_string(), n.clone()]);
            }
            (a, false)
        }
        Instruction::Run(r) => shell_or_exec(&r.cmd),
        Instruction::Cmd(c) | Instruction::Entrypoint(c) => shell_or_exec(c),
        Instruction::Copy(c) | Instruction::Add(c) => {
            let mut a = c.sources.clone();
            a.push(c.dest.clone());
            (a, c.json)
        }
        Instruction::Env(kv) | Instruction::Label(kv) => (pairs(kv, escape), false),
        Instruction::Arg(decls) => (
            decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={}", d.name, unquote(v, escape)),
                    None => d.name.clone(),
                })
                .collect(),
            false,
        ),
        Instruction::Workdir(s)
        | Instruction::User(s)
        | Instruction::StopSignal(s)
        | Instruction::Maintainer(s) => (vec![s.clone()], false),
        Instruction::Expose(v) => (v.clone(), false),
        Instruction::Volume(v) => (v.clone(), volume_is_json(original)),
        Instruction::Shell(v) => (v.clone(), true),
        Instruction::Healthcheck(Healthcheck::None) => (vec!["NONE".into()], false),
        Instruction::Healthcheck(Healthcheck::Cmd { cmd, .. }) => {
            let (a, j) = shell_or_exec(cmd);
            (std::iter::once("CMD".to_string()).chain(a).collect(), j)
        }
        Instruction::Onbuild(o) => (vec![o.trigger.clone()], false),
    };
    let mut v = json!({
        "cmd": node.keyword().to_ascii_lowercase(),
        "flags": node.flags(),
        "args": args,
        "json": is_json,
        "heredocs": node.heredocs().iter().map(|h| json!({
            "name": h.name,
            "body": h.body,
            "expand": h.expand,
        })).collect::<Vec<_>>(),
    });
    if let Instruction::Onbuild(o) = node {
        v["trigger"] = node_json(&o.inst, &o.trigger, escape);
    }
    v
}

/// The readable listing `cairn parse` prints without `--format json`.
pub fn to_text(df: &Dockerfile) -> String {
    let mut out = String::new();
    if let Some(s) = &df.directives.syntax {
        out.push_str(&format!("# syntax={s}\n"));
    }
    if df.directives.escape != '\\' {
        out.push_str(&format!("# escape={}\n", df.directives.escape));
    }
    for a in &df.global_args {
        out.push_str(&line_text(a, df.directives.escape));
    }
    for (i, s) in df.stages.iter().enumerate() {
        out.push_str(&format!("stage {i}"));
        if let Some(n) = &s.from.name {
            out.push_str(&format!(" {n:?}"));
        }
        out.push_str(&format!(": FROM {}", s.from.image));
        if let Some(p) = &s.from.platform {
            out.push_str(&format!(" (platform {p})"));
        }
        out.push_str(&format!("  [line {}]\n", s.span.line));
        for inst in &s.instructions {
            out.push_str("  ");
            out.push_str(&line_text(inst, df.directives.escape));
        }
    }
    out
}

fn line_text(s: &Spanned<Instruction>, escape: char) -> String {
    let v = node_json(&s.node, &s.original, escape);
    let mut t = format!("{:>4}  {}", s.span.line, s.node.keyword());
    for f in s.node.flags() {
        t.push(' ');
        t.push_str(f);
    }
    if v["json"] == json!(true) {
        t.push_str(&format!(" {}", v["args"]));
    } else if let Some(args) = v["args"].as_array() {
        let words: Vec<&str> = args.iter().filter_map(|a| a.as_str()).collect();
        let sep = if matches!(s.node, Instruction::Env(_) | Instruction::Label(_)) {
            words
                .chunks(2)
                .map(|kv| kv.join("="))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            words.join(" ")
        };
        if !sep.is_empty() {
            t.push(' ');
            t.push_str(&sep);
        }
    }
    t.push('\n');
    for h in s.node.heredocs() {
        for l in h.body.lines() {
            t.push_str(&format!("        | {l}\n"));
        }
        t.push_str(&format!("        {}\n", h.name));
    }
    t
}
