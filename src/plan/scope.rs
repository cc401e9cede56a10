//! [`Scope`]: one stage's variables while its instructions are dispatched, with BuildKit's
//! semantics, so that every word an instruction expands gets exactly the value `docker
//! build` would give it.
//!
//! BuildKit keeps two environments per stage. The *state* environment starts as the base
//! image's `Env`; `ENV` and every `ARG` that has a value (from `--build-arg`, its default
//! expanded in the state environment, or the global ARG of the same name) add to it,
//! replacing an earlier entry of the same name in place. It is what words expand against and
//! what `RUN` sees. The *config* environment (image `Env`) gets only `ENV`. A multi-pair
//! `ENV` expands all its words before setting any of them. `RUN`, `CMD`, `ENTRYPOINT`,
//! `SHELL`, `HEALTHCHECK`, `ONBUILD` and `MAINTAINER` are never expanded; `COPY --from` and
//! `--mount=from=` expand against the global ARGs only (the stage graph is fixed before any
//! stage runs); COPY heredoc bodies with an unquoted delimiter expand without quote removal.

use super::expanded::{CopySource, Expanded, ExpandedCopy, ExpandedMount, ExpandedRun};
use super::{expand_with, resolve_from, Error, Plan, PlannedStage};
use crate::dockerfile;
use crate::dockerfile::expand::{self, Lexer, Options};
use crate::dockerfile::{Copy, Heredoc, Instruction, Mount, Network, Run, Security, Spanned};
use std::collections::BTreeMap;

/// Per-stage dispatch state. Create one per stage with the base image's `Env`, then call
/// [`Scope::apply`] for every instruction in order.
#[derive(Debug, Clone)]
pub struct Scope {
    escape: char,
    /// The state environment, in BuildKit order.
    env: Vec<(String, String)>,
    /// The image config environment.
    config: Vec<(String, String)>,
    globals: BTreeMap<String, String>,
    build_args: BTreeMap<String, String>,
    stage_names: BTreeMap<String, usize>,
    stage_map: BTreeMap<usize, usize>,
    stage_count: usize,
}

fn add_or_replace(list: &mut Vec<(String, String)>, k: &str, v: &str) {
    match list.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_string(),
        None => list.push((k.to_string(), v.to_string())),
    }
}

/// BuildKit's `proxyEnvFromBuildArgs` and the executor's `proxyEnvList`: per proxy kind,
/// the value of the last build arg (by sorted name) spelled that way in any case, exported
/// upper-case and lower-case.
fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<(String, String)> {
    const KINDS: [&str; 5] = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    let mut out = Vec::new();
    for kind in KINDS {
        let value = build_args
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(kind))
            .map(|(_, v)| v);
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push((kind.to_string(), v.clone()));
            out.push((kind.to_ascii_lowercase(), v.clone()));
        }
    }
    out
}

fn joined(list: &[(String, String)]) -> Vec<String> {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl Scope {
    pub fn new(plan: &Plan, stage: &PlannedStage, image_env: &[String]) -> Scope {
        let mut env = Vec::new();
        for e in image_env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            add_or_replace(&mut env, k, v);
        }
        Scope {
            escape: plan.escape,
            config: env.clone(),
            env,
            globals: stage.global_args.clone(),
            build_args: plan.build_args.clone(),
            stage_names: plan.stage_names.clone(),
            stage_map: plan.stage_map.clone(),
            stage_count: plan.stage_count,
        }
    }

    /// The scope a stage built `FROM` an earlier stage starts with: BuildKit carries the
    /// parent's state environment (ARG values included) and config environment over, so
    /// use this instead of [`Scope::new`] when `stage.base` is `Base::Stage`.
    pub fn for_child_stage(&self, stage: &PlannedStage) -> Scope {
        Scope {
            globals: stage.global_args.clone(),
            ..self.clone()
        }
    }

    /// The value of a variable in the state environment.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The environment a `RUN` sees: the state environment, then the proxy `--build-arg`s
    /// in both spellings (`HTTP_PROXY` and `http_proxy`, as BuildKit's executor sets them;
    /// of two spellings given, the lower-case one wins) where the state does not set that
    /// name.
    pub fn run_env(&self) -> Vec<String> {
        let mut env = self.env.clone();
        for (k, v) in proxy_env(&self.build_args) {
            if self.get(&k).is_none() {
                env.push((k, v));
            }
        }
        joined(&env)
    }

    /// The environment that goes into a step's cache key: the state environment only.
    /// Proxy `--build-arg`s reach `RUN` without an `ARG` but, as in BuildKit, never the key,
    /// so a different proxy does not rebuild anything.
    pub fn key_env(&self) -> Vec<String> {
        joined(&self.env)
    }

    /// `ENV` only: what goes into the image config.
    pub fn config_env(&self) -> Vec<String> {
        joined(&self.config)
    }

    fn word(&self, w: &str, line: usize) -> Result<String, Error> {
        let env = &self.env;
        let lookup = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        expand::expand_word(w, &lookup, self.escape).map_err(|e| Error::at(line, e.to_string()))
    }

    fn opt_word(&self, w: &Option<String>, line: usize) -> Result<Option<String>, Error> {
        w.as_deref().map(|w| self.word(w, line)).transpose()
    }

    fn source(&self, from: &Option<String>, line: usize) -> Result<Option<CopySource>, Error> {
        let Some(f) = from else { return Ok(None) };
        let v = expand_with(f, &self.globals, self.escape, line)?;
        Ok(Some(
            match resolve_from(&v, &self.stage_names, self.stage_count, line)? {
                Some(i) => CopySource::Stage(*self.stage_map.get(&i).ok_or_else(|| {
                    Error::at(line, format!("stage {v:?} is not part of this build plan"))
                })?),
                None => CopySource::Image(v),
            },
        ))
    }

    /// Expands the words `inst` expands; ARG and ENV update the scope.
    pub fn apply(&mut self, inst: &Spanned<Instruction>) -> Result<Expanded, Error> {
        let line = inst.span.line;
        Ok(match &inst.node {
            Instruction::From(_) => return Err(Error::at(line, "FROM inside a stage")),
            Instruction::Run(r) => Expanded::Run(self.run(r, line)?),
            Instruction::Cmd(c) => Expanded::Cmd(c.clone()),
            Instruction::Entrypoint(c) => Expanded::Entrypoint(c.clone()),
            Instruction::Copy(c) => Expanded::Copy(self.copy(c, line)?),
            Instruction::Add(c) => Expanded::Add(self.copy(c, line)?),
            Instruction::Env(kv) => {
                let kv = self.pairs(kv, line)?;
                for (k, v) in &kv {
                    add_or_replace(&mut self.env, k, v);
                    add_or_replace(&mut self.config, k, v);
                }
                Expanded::Env(kv)
            }
            Instruction::Label(kv) => Expanded::Label(self.pairs(kv, line)?),
            Instruction::Arg(decls) => {
                let mut out = Vec::new();
                for d in decls {
                    let value = match (self.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.word(def, line)?),
                        (None, None) => self.globals.get(&d.name).cloned(),
                    };
                    if let Some(v) = &value {
                        add_or_replace(&mut self.env, &d.name, v);
                    }
                    out.push((d.name.clone(), value));
                }
                Expanded::Arg(out)
            }
            Instruction::Workdir(w) => Expanded::Workdir(self.word(w, line)?),
            Instruction::User(u) => Expanded::User(self.word(u, line)?),
            Instruction::StopSignal(s) => {
                let s = self.word(s, line)?;
                super::signal::check_stop_signal(&s).map_err(|m| Error::at(line, m))?;
                Expanded::StopSignal(s)
            }
            Instruction::Expose(ports) => {
                let env = &self.env;
                let lookup = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                let mut out = Vec::new();
                for p in ports {
                    out.extend(
                        expand::expand_words(p, &lookup, self.escape)
                            .map_err(|e| Error::at(line, e.to_string()))?,
                    );
                }
                Expanded::Expose(out)
            }
            Instruction::Volume(v) => Expanded::Volume(
                v.iter()
                    .map(|p| self.word(p, line))
                    .collect::<Result<_, _>>()?,
            ),
            Instruction::Shell(s) => Expanded::Shell(s.clone()),
            Instruction::Healthcheck(h) => Expanded::Healthcheck(h.clone()),
            Instruction::Onbuild(o) => Expanded::Onbuild(o.trigger.clone()),
            Instruction::Maintainer(m) => Expanded::Maintainer(m.clone()),
        })
    }

    fn pairs(&self, kv: &[(String, String)], line: usize) -> Result<Vec<(String, String)>, Error> {
        kv.iter()
            .map(|(k, v)| Ok((self.word(k, line)?, self.word(v, line)?)))
            .collect()
    }

    fn run(&self, r: &Run, line: usize) -> Result<ExpandedRun, Error> {
        Ok(ExpandedRun {
            cmd: r.cmd.clone(),
            mounts: r
                .mounts
                .iter()
                .map(|m| self.mount(m, line))
                .collect::<Result<_, _>>()?,
            network: r.network.unwrap_or(Network::Default),
            security: r.security.unwrap_or(Security::Sandbox),
            heredocs: r.heredocs.clone(),
        })
    }

    fn mount(&self, m: &Mount, line: usize) -> Result<ExpandedMount, Error> {
        let mut options = Vec::new();
        for (k, v) in &m.options {
            let v = if k == "from" {
                v.clone()
            } else {
                self.word(v, line)?
            };
            check_mount_value(k, &v).map_err(|m| Error::at(line, m))?;
            options.push((k.clone(), v));
        }
        let get = |k: &str| options.iter().rev().find(|o| o.0 == k).map(|o| o.1.clone());
        Ok(ExpandedMount {
            kind: m.kind,
            target: get("target"),
            source: get("source"),
            from: self.source(&m.from, line)?,
            id: get("id"),
            options: options.clone(),
        })
    }

    fn copy(&self, c: &Copy, line: usize) -> Result<ExpandedCopy, Error> {
        let words = |v: &[String]| {
            v.iter()
                .map(|w| self.word(w, line))
                .collect::<Result<Vec<_>, _>>()
        };
        // Heredoc sources are content, not paths: they go to `heredocs` only.
        let paths: Vec<String> = c
            .sources
            .iter()
            .filter(|s| dockerfile::heredoc_source(s, &c.heredocs).is_none())
            .cloned()
            .collect();
        Ok(ExpandedCopy {
            sources: words(&paths)?,
            dest: self.word(&c.dest, line)?,
            from: self.source(&c.from, line)?,
            chown: self.opt_word(&c.chown, line)?,
            chmod: self
                .opt_word(&c.chmod, line)?
                .map(|m| dockerfile::Chmod::parse(&m).map_err(|e| Error::at(line, e)))
                .transpose()?,
            link: c.link,
            parents: c.parents,
            exclude: words(&c.exclude)?,
            checksum: self.opt_word(&c.checksum, line)?,
            keep_git_dir: c.keep_git_dir,
            unpack: c.unpack,
            heredocs: c
                .heredocs
                .iter()
                .map(|h| self.heredoc(h, line))
                .collect::<Result<_, _>>()?,
        })
    }

    /// COPY heredoc bodies expand like BuildKit's `ExpandRaw`: backslash escape, quotes kept.
    fn heredoc(&self, h: &Heredoc, line: usize) -> Result<Heredoc, Error> {
        if !h.expand {
            return Ok(h.clone());
        }
        let mut opts = Options::new('\\');
        opts.skip_quotes = true;
        let env = &self.env;
        let lookup = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let body = Lexer::new(opts)
            .process(&h.body, &lookup)
            .map_err(|e| Error::at(line, e.to_string()))?
            .result;
        Ok(Heredoc { body, ..h.clone() })
    }
}

/// Values BuildKit parses after expansion: numeric ids, an octal mode, booleans, sharing.
fn check_mount_value(key: &str, v: &str) -> Result<(), String> {
    let ok = match key {
        "uid" | "gid" => v.parse::<u32>().is_ok(),
        "mode" => u32::from_str_radix(v, 8).is_ok(),
        "readonly" | "readwrite" | "required" => {
            matches!(
                v,
                "1" | "t"
                    | "T"
                    | "true"
                    | "TRUE"
                    | "True"
                    | "0"
                    | "f"
                    | "F"
                    | "false"
                    | "FALSE"
                    | "False"
            )
        }
        "sharing" => matches!(v, "shared" | "private" | "locked"),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {v:?} for mount option {key}"))
    }
}
