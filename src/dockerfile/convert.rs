//! [`instruction`]: one [`LogicalLine`] to one typed [`Instruction`], with BuildKit's argument
//! rules per keyword (counts, JSON versus shell form, legacy `ENV k v`, accepted flags).
//!
//! Errors point at the offending word: the keyword for argument-count problems, the flag for
//! flag problems, the word for a malformed `key=value`.

use super::flags::{self, Flags, Kind};
use super::instructions::*;
use super::lexer::LogicalLine;
use super::words::{self, Command, JsonForm, Word};
use super::Fault;

type R<T> = Result<T, Fault>;

/// Parses a logical line into an instruction.
pub fn instruction(ll: &LogicalLine, escape: char) -> R<Instruction> {
    instruction_in(ll, &ll.text, 0, escape)
}

/// Parses `text`, which starts at byte `base` of `ll.text` (ONBUILD parses its tail).
fn instruction_in(ll: &LogicalLine, text: &str, base: usize, escape: char) -> R<Instruction> {
    let mut cmd = words::split_command(text);
    cmd.keyword.offset += base;
    cmd.rest_offset += base;
    for f in &mut cmd.flags {
        f.offset += base;
    }
    let c = Ctx {
        ll,
        cmd: &cmd,
        escape,
    };
    let kw = cmd.keyword.text.to_ascii_lowercase();
    let takes_flags = matches!(kw.as_str(), "from" | "run" | "copy" | "add" | "healthcheck");
    if !takes_flags && KEYWORDS.contains(&kw.as_str()) {
        Flags::parse(ll, &cmd.flags, &[])?;
    }
    Ok(match kw.as_str() {
        "from" => Instruction::From(c.from()?),
        "run" => Instruction::Run(c.run()?),
        "cmd" => Instruction::Cmd(c.shell_or_exec(&cmd.rest)?),
        "entrypoint" => Instruction::Entrypoint(c.shell_or_exec(&cmd.rest)?),
        "copy" => Instruction::Copy(c.copy(false)?),
        "add" => Instruction::Add(c.copy(true)?),
        "env" => Instruction::Env(c.name_vals("ENV")?),
        "label" => Instruction::Label(c.name_vals("LABEL")?),
        "arg" => Instruction::Arg(c.args()?),
        "workdir" => Instruction::Workdir(c.one("WORKDIR")?),
        "user" => Instruction::User(c.one("USER")?),
        "stopsignal" => Instruction::StopSignal(c.one("STOPSIGNAL")?),
        "maintainer" => Instruction::Maintainer(c.one("MAINTAINER")?),
        "expose" => {
            Instruction::Expose(c.at_least_one("EXPOSE", words::split_blank(&cmd.rest, 0))?)
        }
        "volume" => Instruction::Volume(c.volume()?),
        "shell" => Instruction::Shell(c.shell()?),
        "healthcheck" => Instruction::Healthcheck(c.healthcheck()?),
        "onbuild" => Instruction::Onbuild(c.onbuild(text, base)?),
        _ => {
            return Err(ll.fault(
                cmd.keyword.offset,
                super::suggest::did_you_mean(
                    format!("unknown instruction: {}", cmd.keyword.text),
                    &cmd.keyword.text,
                    KEYWORDS,
                    false,
                ),
            ))
        }
    })
}

const KEYWORDS: &[&str] = &[
    "from",
    "run",
    "cmd",
    "entrypoint",
    "copy",
    "add",
    "env",
    "label",
    "arg",
    "workdir",
    "user",
    "stopsignal",
    "maintainer",
    "expose",
    "volume",
    "shell",
    "healthcheck",
    "onbuild",
];

struct Ctx<'a> {
    ll: &'a LogicalLine,
    cmd: &'a Command,
    escape: char,
}

fn texts(w: Vec<Word>) -> Vec<String> {
    w.into_iter().map(|w| w.text).collect()
}

impl Ctx<'_> {
    fn fail(&self, msg: impl Into<String>) -> Fault {
        self.ll.fault(self.cmd.keyword.offset, msg)
    }

    fn flags(&self, allowed: &[(&str, Kind)]) -> R<Flags> {
        Flags::parse(self.ll, &self.cmd.flags, allowed)
    }

    fn written_flags(&self) -> Vec<String> {
        self.cmd.flags.iter().map(|f| f.text.clone()).collect()
    }

    fn shell_or_exec(&self, rest: &str) -> R<ShellOrExec> {
        match words::parse_json(rest) {
            JsonForm::Exec(v) => Ok(ShellOrExec::Exec(v)),
            JsonForm::NotStrings => {
                Err(self
                    .fail("when using JSON array syntax, arrays must be comprised of strings only"))
            }
            JsonForm::NotJson => Ok(ShellOrExec::Shell(rest.to_string())),
        }
    }

    fn json_or_blank(&self) -> R<(Vec<String>, bool)> {
        match words::parse_json(&self.cmd.rest) {
            JsonForm::Exec(v) => Ok((v, true)),
            JsonForm::NotStrings => {
                Err(self
                    .fail("when using JSON array syntax, arrays must be comprised of strings only"))
            }
            JsonForm::NotJson => Ok((texts(words::split_blank(&self.cmd.rest, 0)), false)),
        }
    }

    fn at_least_one(&self, kw: &str, w: Vec<Word>) -> R<Vec<String>> {
        if w.is_empty() {
            return Err(self.fail(format!("{kw} requires at least one argument")));
        }
        Ok(texts(w))
    }

    fn one(&self, kw: &str) -> R<String> {
        if self.cmd.rest.is_empty() {
            return Err(self.fail(format!("{kw} requires exactly one argument")));
        }
        Ok(self.cmd.rest.clone())
    }

    fn from(&self) -> R<FromInst> {
        let f = self.flags(&[("platform", Kind::Str)])?;
        let args = words::split_blank(&self.cmd.rest, self.cmd.rest_offset);
        let name = match args.as_slice() {
            [_] => None,
            [_, as_, name] if as_.text.eq_ignore_ascii_case("as") => {
                let lower = name.text.to_ascii_lowercase();
                if !valid_stage_name(&lower) {
                    return Err(self.ll.fault(
                        name.offset,
                        format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            name.text
                        ),
                    ));
                }
                Some(lower)
            }
            _ => return Err(self.fail("FROM requires either one or three arguments")),
        };
        Ok(FromInst {
            image: args[0].text.clone(),
            platform: f.str("platform"),
            name,
            flags: self.written_flags(),
        })
    }

    fn run(&self) -> R<Run> {
        let f = self.flags(&[
            ("mount", Kind::List),
            ("network", Kind::Str),
            ("security", Kind::Str),
        ])?;
        if self.cmd.rest.is_empty() {
            return Err(self.fail("RUN requires at least one argument"));
        }
        let mut mounts = Vec::new();
        for (spec, off) in f.list("mount") {
            mounts.push(flags::mount(&spec).map_err(|m| self.ll.fault(off, m))?);
        }
        let at = |name| f.offset(name).unwrap_or(self.cmd.keyword.offset);
        let network = f
            .str("network")
            .map(|v| flags::network(&v))
            .transpose()
            .map_err(|m| self.ll.fault(at("network"), m))?;
        let security = f
            .str("security")
            .map(|v| flags::security(&v))
            .transpose()
            .map_err(|m| self.ll.fault(at("security"), m))?;
        let cmd = self.shell_or_exec(&self.cmd.rest)?;
        let heredocs = if cmd.is_exec() {
            Vec::new()
        } else {
            self.ll.heredocs.clone()
        };
        Ok(Run {
            cmd,
            mounts,
            network,
            security,
            heredocs,
            flags: self.written_flags(),
        })
    }

    fn copy(&self, add: bool) -> R<Copy> {
        let f = if add {
            self.flags(&[
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("exclude", Kind::List),
                ("checksum", Kind::Str),
                ("keep-git-dir", Kind::Bool),
                ("unpack", Kind::Bool),
            ])?
        } else {
            self.flags(&[
                ("from", Kind::Str),
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("parents", Kind::Bool),
                ("exclude", Kind::List),
            ])?
        };
        let kw = if add { "ADD" } else { "COPY" };
        let (mut args, json) = self.json_or_blank()?;
        if args.len() < 2 {
            return Err(self.fail(format!(
                "{kw} requires at least two arguments, but only one was provided. destination could not be determined"
            )));
        }
        let dest = args.pop().unwrap_or_default();
        Ok(Copy {
            sources: args,
            dest,
            json,
            from: f.str("from"),
            chown: f.str("chown"),
            chmod: f.str("chmod"),
            link: f.bool("link").unwrap_or(false),
            parents: f.bool("parents").unwrap_or(false),
            exclude: f.list("exclude").into_iter().map(|e| e.0).collect(),
            checksum: f.str("checksum"),
            keep_git_dir: f.bool("keep-git-dir"),
            unpack: f.bool("unpack"),
            heredocs: if json {
                Vec::new()
            } else {
                self.ll.heredocs.clone()
            },
            flags: self.written_flags(),
        })
    }

    /// ENV and LABEL: `k=v ...`, or the legacy `k v...` when the first word has no `=`.
    fn name_vals(&self, kw: &str) -> R<Vec<(String, String)>> {
        let rest = &self.cmd.rest;
        let ws = words::parse_words(rest, self.cmd.rest_offset, self.escape);
        let Some(first) = ws.first() else {
            return Err(self.fail(format!("{kw} requires at least one argument")));
        };
        if !first.text.contains('=') {
            let parts = words::split_blank(rest, 0);
            if parts.len() < 2 {
                return Err(self.fail(format!("{kw} must have two arguments")));
            }
            let value = rest[parts[1].offset..].to_string();
            return Ok(vec![(parts[0].text.clone(), value)]);
        }
        let mut out = Vec::new();
        for w in &ws {
            let Some((k, v)) = w.text.split_once('=') else {
                return Err(self.ll.fault(
                    w.offset,
                    format!(
                        "syntax error - can't find = in {:?}. must be of the form: name=value",
                        w.text
                    ),
                ));
            };
            if k.is_empty() {
                return Err(self
                    .ll
                    .fault(w.offset, format!("{kw} names can not be blank")));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    fn args(&self) -> R<Vec<ArgDecl>> {
        let ws = words::parse_words(&self.cmd.rest, self.cmd.rest_offset, self.escape);
        if ws.is_empty() {
            return Err(self.fail("ARG requires at least one argument"));
        }
        ws.into_iter()
            .map(|w| {
                let (name, default) = match w.text.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.text.clone(), None),
                };
                if name.is_empty() {
                    return Err(self.ll.fault(w.offset, "ARG names can not be blank"));
                }
                Ok(ArgDecl { name, default })
            })
            .collect()
    }

    fn volume(&self) -> R<Vec<String>> {
        let (v, _) = self.json_or_blank()?;
        if v.is_empty() {
            return Err(self.fail("VOLUME requires at least one argument"));
        }
        if v.iter().any(|p| p.trim().is_empty()) {
            return Err(self.fail("VOLUME specified can not be an empty string"));
        }
        Ok(v)
    }

    fn shell(&self) -> R<Vec<String>> {
        match words::parse_json(&self.cmd.rest) {
            JsonForm::Exec(v) if v.is_empty() => {
                Err(self.fail("SHELL requires at least one argument"))
            }
            JsonForm::Exec(v) => Ok(v),
            JsonForm::NotStrings => {
                Err(self
                    .fail("when using JSON array syntax, arrays must be comprised of strings only"))
            }
            JsonForm::NotJson => Err(self.fail("SHELL requires the arguments to be in JSON form")),
        }
    }

    fn healthcheck(&self) -> R<Healthcheck> {
        let rest = &self.cmd.rest;
        let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if sep == 0 {
            return Err(self.fail("HEALTHCHECK requires at least one argument"));
        }
        let typ = rest[..sep].to_ascii_uppercase();
        let after = rest[sep..].trim_start();
        match typ.as_str() {
            // BuildKit never reads flags for NONE.
            "NONE" if after.is_empty() => Ok(Healthcheck::None),
            "NONE" => Err(self.fail("HEALTHCHECK NONE takes no arguments")),
            "CMD" => {
                let f = self.flags(&[
                    ("interval", Kind::Str),
                    ("timeout", Kind::Str),
                    ("start-period", Kind::Str),
                    ("start-interval", Kind::Str),
                    ("retries", Kind::Str),
                ])?;
                let cmd = self.shell_or_exec(after)?;
                if matches!(&cmd, ShellOrExec::Shell(s) if s.is_empty())
                    || matches!(&cmd, ShellOrExec::Exec(v) if v.is_empty())
                {
                    return Err(self.fail("missing command after HEALTHCHECK CMD"));
                }
                let dur = |name: &str| -> R<Option<std::time::Duration>> {
                    let Some(v) = f.str(name) else {
                        return Ok(None);
                    };
                    let at = f.offset(name).unwrap_or(0);
                    let d = flags::duration(&v).map_err(|m| self.ll.fault(at, m))?;
                    if !d.is_zero() && d < std::time::Duration::from_millis(1) {
                        return Err(self
                            .ll
                            .fault(at, format!("interval {name:?} cannot be less than 1ms")));
                    }
                    Ok(Some(d))
                };
                let retries = match f.str("retries") {
                    None => None,
                    Some(v) => Some(
                        v.parse::<i64>()
                            .ok()
                            .filter(|r| *r >= 0)
                            .and_then(|r| u32::try_from(r).ok())
                            .ok_or_else(|| {
                                self.ll.fault(
                                    f.offset("retries").unwrap_or(0),
                                    format!("--retries must be a non-negative integer, not {v:?}"),
                                )
                            })?,
                    ),
                };
                Ok(Healthcheck::Cmd {
                    cmd,
                    interval: dur("interval")?,
                    timeout: dur("timeout")?,
                    start_period: dur("start-period")?,
                    start_interval: dur("start-interval")?,
                    retries,
                    flags: self.written_flags(),
                })
            }
            _ => Err(self.fail(format!(
                "unknown type {:?} in HEALTHCHECK (try CMD)",
                &rest[..sep]
            ))),
        }
    }

    fn onbuild(&self, text: &str, base: usize) -> R<Onbuild> {
        let rest = &self.cmd.rest;
        if rest.is_empty() {
            return Err(self.fail("ONBUILD requires at least one argument"));
        }
        let sub = words::split_command(rest);
        let sub_kw = sub.keyword.text.to_ascii_uppercase();
        let at = self.cmd.rest_offset;
        match sub_kw.as_str() {
            "ONBUILD" => {
                return Err(self
                    .ll
                    .fault(at, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"))
            }
            "FROM" | "MAINTAINER" => {
                return Err(self
                    .ll
                    .fault(at, format!("{sub_kw} isn't allowed as an ONBUILD trigger")))
            }
            _ => {}
        }
        let local = self.cmd.rest_offset - base;
        let inst = instruction_in(self.ll, &text[local..local + rest.len()], at, self.escape)?;
        // As BuildKit stores it: the trigger line, then each heredoc's body and delimiter
        // line, so the child build runs the body (the line alone would be `RUN <<EOF`).
        let mut trigger = rest.clone();
        for h in &self.ll.heredocs {
            trigger.push('\n');
            trigger.push_str(&h.body);
            trigger.push_str(&h.name);
        }
        Ok(Onbuild {
            trigger,
            inst: Box::new(inst),
        })
    }
}

/// BuildKit's stage-name rule (after lower-casing): `^[a-z][a-z0-9-_.]*$`.
pub fn valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}
