//! [`apply`]: how each instruction changes the image config — BuildKit's per-instruction
//! dispatch as one pure function over (config, stage facts, expanded instruction), kept out
//! of the orchestrator so that every rule has a table test and no step code holds one.
//!
//! Also the pieces every step shares: the default shell ([`shell_argv`]), a step's history
//! entry ([`history`], [`created_by`]) and its time ([`step_time`]). The image ID is the
//! digest of the config these functions write, so their output must not drift: the tests
//! pin it.

use crate::dockerfile::{Instruction, ShellOrExec, Spanned};
use crate::image::{self, History, ImageConfig};
use crate::plan::Expanded;

/// The shell a shell-form instruction runs under when the stage set no `SHELL`.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Facts about the stage so far that change how a later instruction applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageFacts {
    /// Whether this stage set CMD (an ENTRYPOINT clears an inherited CMD otherwise, as
    /// BuildKit's `dispatchEntrypoint` does).
    pub cmd_set: bool,
}

/// The argv of a shell-form command: the `SHELL` in force (default `/bin/sh -c`) and the
/// script as its last argument.
pub fn shell_argv(shell: Option<&[String]>, script: String) -> Vec<String> {
    let mut argv = match shell {
        Some(s) => s.to_vec(),
        None => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    };
    argv.push(script);
    argv
}

/// A command's argv as the config stores it: exec form as written, shell form under the
/// config's `SHELL`.
fn command(cfg: &ImageConfig, c: &ShellOrExec) -> Vec<String> {
    match c {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => shell_argv(cfg.config.shell.as_deref(), s.clone()),
    }
}

/// Applies one instruction to the config and records its history entry (`history`, marked
/// as adding no layer). RUN, COPY and ADD change nothing here but their history; ARG
/// changes the scope, not the image, and leaves no history (as BuildKit).
pub fn apply(cfg: &mut ImageConfig, facts: &mut StageFacts, exp: &Expanded, history: History) {
    let c = &mut cfg.config;
    match exp {
        Expanded::Env(pairs) => c.env = with_env(&c.env, pairs),
        Expanded::Label(kvs) => {
            for (k, v) in kvs {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        Expanded::User(u) => c.user = Some(u.clone()).filter(|u| !u.is_empty()),
        Expanded::Workdir(w) => {
            let p = if w.starts_with('/') {
                w.clone()
            } else {
                let base = c.working_dir.as_deref().unwrap_or("/");
                format!("{}/{}", base.trim_end_matches('/'), w)
            };
            c.working_dir = Some(clean_path(&p));
        }
        Expanded::Cmd(cmd) => {
            cfg.config.cmd = Some(command(cfg, cmd));
            facts.cmd_set = true;
        }
        Expanded::Entrypoint(cmd) => {
            cfg.config.entrypoint = Some(command(cfg, cmd));
            if !facts.cmd_set {
                cfg.config.cmd = None;
            }
        }
        Expanded::Expose(ports) => {
            for p in ports {
                c.exposed_ports.insert(port_key(p), Default::default());
            }
        }
        Expanded::Volume(vs) => {
            for v in vs {
                c.volumes.insert(v.clone(), Default::default());
            }
        }
        Expanded::Shell(s) => c.shell = Some(s.clone()),
        Expanded::StopSignal(s) => c.stop_signal = Some(s.clone()),
        Expanded::Healthcheck(h) => c.healthcheck = Some(healthcheck(h)),
        Expanded::Onbuild(t) => c.on_build.push(t.clone()),
        Expanded::Maintainer(m) => cfg.author = Some(m.clone()),
        Expanded::Arg(_) => return,
        Expanded::Run(_) | Expanded::Copy(_) | Expanded::Add(_) => {}
    }
    cfg.push_step(history, None);
}

/// The config's `Env` after `ENV pairs`: a key set again keeps its place and takes the
/// new value; an entry without `=` counts as an empty value (as the scope reads it).
fn with_env(env: &[String], pairs: &[(String, String)]) -> Vec<String> {
    let mut list: Vec<(&str, &str)> = Vec::new();
    let entries = env
        .iter()
        .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
        .chain(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in entries {
        match list.iter_mut().find(|(key, _)| *key == k) {
            Some(e) => e.1 = v,
            None => list.push((k, v)),
        }
    }
    list.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// An `EXPOSE` port as the config's key: a bare port is TCP.
fn port_key(p: &str) -> String {
    if p.contains('/') {
        p.to_string()
    } else {
        format!("{p}/tcp")
    }
}

/// `HEALTHCHECK` as Docker stores it: the test with its `CMD`/`CMD-SHELL` marker,
/// durations in nanoseconds.
fn healthcheck(h: &crate::dockerfile::Healthcheck) -> image::Healthcheck {
    use crate::dockerfile::Healthcheck as H;
    let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64);
    match h {
        H::None => image::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        H::Cmd {
            cmd,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
            ..
        } => image::Healthcheck {
            test: match cmd {
                ShellOrExec::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                ShellOrExec::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
            interval: ns(interval),
            timeout: ns(timeout),
            start_period: ns(start_period),
            start_interval: ns(start_interval),
            retries: retries.map(i64::from),
        },
    }
}

/// Lexically cleans an absolute path (`/a/./b/../c` → `/a/c`), as Go's path.Clean.
pub fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}

/// The history entry of a step, created at `created`.
pub fn history(inst: &Spanned<Instruction>, created: String) -> History {
    History {
        created: Some(created),
        created_by: Some(created_by(inst)),
        comment: Some("cairn".into()),
        ..History::default()
    }
}

/// The history text of a step: its source text on one line, as `docker history` shows it
/// ([`display_text`]: an `ADD` URL's credentials masked).
pub fn created_by(inst: &Spanned<Instruction>) -> String {
    display_text(inst, &inst.original)
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` (from `inst`'s source) as cairn shows or keeps it: an `ADD`'s URLs (also as an
/// `ONBUILD` trigger, whose config entry keeps them for the child) with their user-info
/// masked ([`crate::redact`]); any other instruction as written.
pub fn display_text(inst: &Spanned<Instruction>, text: &str) -> String {
    match &inst.node {
        Instruction::Add(_) => crate::redact::text(text),
        Instruction::Onbuild(o) if matches!(*o.inst, Instruction::Add(_)) => {
            crate::redact::text(text)
        }
        _ => text.to_string(),
    }
}

/// A step's time in RFC 3339: `SOURCE_DATE_EPOCH`'s when given, else now.
pub fn step_time(source_date_epoch: Option<i64>) -> String {
    match source_date_epoch {
        Some(t) => image::rfc3339(t),
        None => image::now_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::Healthcheck as H;
    use crate::image::EmptyObject;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn sh(s: &str) -> ShellOrExec {
        ShellOrExec::Shell(s.into())
    }

    fn exec(v: &[&str]) -> ShellOrExec {
        ShellOrExec::Exec(v.iter().map(|s| s.to_string()).collect())
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn hist() -> History {
        History {
            created: Some("1970-01-01T00:00:00Z".into()),
            created_by: Some("X".into()),
            comment: Some("cairn".into()),
            ..History::default()
        }
    }

    /// The config after applying `steps` in order to `start`, with fresh stage facts.
    fn after(start: &ImageConfig, steps: &[Expanded]) -> ImageConfig {
        let mut cfg = start.clone();
        let mut facts = StageFacts::default();
        for s in steps {
            apply(&mut cfg, &mut facts, s, hist());
        }
        cfg
    }

    fn base() -> ImageConfig {
        let mut c = ImageConfig::default();
        c.config.env = strs(&["PATH=/bin", "A=1"]);
        c.config.cmd = Some(strs(&["inherited"]));
        c.config.working_dir = Some("/srv".into());
        c
    }

    /// One row per instruction form: the instructions, and what the config must then say.
    #[test]
    fn each_instruction_changes_the_config_as_docker_does() {
        type Check = fn(&ImageConfig);
        let rows: Vec<(&str, Vec<Expanded>, Check)> = vec![
            (
                "ENV replaces in place, appends new",
                vec![Expanded::Env(pairs(&[("A", "2"), ("B", "3")]))],
                |c| assert_eq!(c.config.env, strs(&["PATH=/bin", "A=2", "B=3"])),
            ),
            (
                "ENV twice in one stage",
                vec![
                    Expanded::Env(pairs(&[("B", "1")])),
                    Expanded::Env(pairs(&[("B", "2"), ("PATH", "/x")])),
                ],
                |c| assert_eq!(c.config.env, strs(&["PATH=/x", "A=1", "B=2"])),
            ),
            (
                "LABEL adds and overrides",
                vec![
                    Expanded::Label(pairs(&[("a", "1"), ("b", "2")])),
                    Expanded::Label(pairs(&[("a", "3")])),
                ],
                |c| {
                    assert_eq!(
                        c.config.labels,
                        BTreeMap::from([("a".into(), "3".into()), ("b".into(), "2".into())])
                    )
                },
            ),
            ("USER sets", vec![Expanded::User("app:app".into())], |c| {
                assert_eq!(c.config.user.as_deref(), Some("app:app"))
            }),
            (
                "USER empty unsets",
                vec![Expanded::User("x".into()), Expanded::User(String::new())],
                |c| assert_eq!(c.config.user, None),
            ),
            (
                "WORKDIR absolute is cleaned",
                vec![Expanded::Workdir("/a/./b/../c/".into())],
                |c| assert_eq!(c.config.working_dir.as_deref(), Some("/a/c")),
            ),
            (
                "WORKDIR relative joins the current one",
                vec![
                    Expanded::Workdir("app".into()),
                    Expanded::Workdir("../lib".into()),
                ],
                |c| assert_eq!(c.config.working_dir.as_deref(), Some("/srv/lib")),
            ),
            (
                "WORKDIR .. cannot climb above /",
                vec![Expanded::Workdir("/../../x".into())],
                |c| assert_eq!(c.config.working_dir.as_deref(), Some("/x")),
            ),
            (
                "CMD exec form",
                vec![Expanded::Cmd(exec(&["run", "it"]))],
                |c| assert_eq!(c.config.cmd, Some(strs(&["run", "it"]))),
            ),
            (
                "CMD shell form uses /bin/sh -c",
                vec![Expanded::Cmd(sh("echo $HOME"))],
                |c| assert_eq!(c.config.cmd, Some(strs(&["/bin/sh", "-c", "echo $HOME"]))),
            ),
            (
                "CMD shell form uses the SHELL in force",
                vec![
                    Expanded::Shell(strs(&["/bin/bash", "-eo", "pipefail", "-c"])),
                    Expanded::Cmd(sh("ls | wc")),
                ],
                |c| {
                    assert_eq!(
                        c.config.cmd,
                        Some(strs(&["/bin/bash", "-eo", "pipefail", "-c", "ls | wc"]))
                    )
                },
            ),
            (
                "ENTRYPOINT clears an inherited CMD",
                vec![Expanded::Entrypoint(exec(&["/tini"]))],
                |c| {
                    assert_eq!(c.config.entrypoint, Some(strs(&["/tini"])));
                    assert_eq!(c.config.cmd, None);
                },
            ),
            (
                "ENTRYPOINT keeps a CMD this stage set",
                vec![
                    Expanded::Cmd(exec(&["serve"])),
                    Expanded::Entrypoint(sh("exec app")),
                ],
                |c| {
                    assert_eq!(
                        c.config.entrypoint,
                        Some(strs(&["/bin/sh", "-c", "exec app"]))
                    );
                    assert_eq!(c.config.cmd, Some(strs(&["serve"])));
                },
            ),
            (
                "CMD after ENTRYPOINT sets CMD",
                vec![
                    Expanded::Entrypoint(exec(&["e"])),
                    Expanded::Cmd(exec(&["c"])),
                ],
                |c| assert_eq!(c.config.cmd, Some(strs(&["c"]))),
            ),
            (
                "EXPOSE bare port is tcp, protocol kept",
                vec![Expanded::Expose(strs(&["80", "53/udp", "443/tcp"]))],
                |c| {
                    let keys: Vec<&String> = c.config.exposed_ports.keys().collect();
                    assert_eq!(keys, ["443/tcp", "53/udp", "80/tcp"]);
                },
            ),
            (
                "VOLUME adds each",
                vec![Expanded::Volume(strs(&["/data", "/logs"]))],
                |c| {
                    assert_eq!(
                        c.config.volumes,
                        BTreeMap::from([
                            ("/data".into(), EmptyObject {}),
                            ("/logs".into(), EmptyObject {})
                        ])
                    )
                },
            ),
            (
                "SHELL sets",
                vec![Expanded::Shell(strs(&["pwsh", "-c"]))],
                |c| assert_eq!(c.config.shell, Some(strs(&["pwsh", "-c"]))),
            ),
            (
                "STOPSIGNAL sets",
                vec![Expanded::StopSignal("SIGQUIT".into())],
                |c| assert_eq!(c.config.stop_signal.as_deref(), Some("SIGQUIT")),
            ),
            (
                "HEALTHCHECK NONE",
                vec![Expanded::Healthcheck(H::None)],
                |c| assert_eq!(c.config.healthcheck.as_ref().unwrap().test, strs(&["NONE"])),
            ),
            (
                "HEALTHCHECK CMD exec form with durations",
                vec![Expanded::Healthcheck(H::Cmd {
                    cmd: exec(&["curl", "-f", "http://localhost/"]),
                    interval: Some(Duration::from_secs(30)),
                    timeout: Some(Duration::from_millis(1500)),
                    start_period: None,
                    start_interval: Some(Duration::from_secs(2)),
                    retries: Some(3),
                    flags: vec![],
                })],
                |c| {
                    let h = c.config.healthcheck.as_ref().unwrap();
                    assert_eq!(h.test, strs(&["CMD", "curl", "-f", "http://localhost/"]));
                    assert_eq!(h.interval, Some(30_000_000_000));
                    assert_eq!(h.timeout, Some(1_500_000_000));
                    assert_eq!(h.start_period, None);
                    assert_eq!(h.start_interval, Some(2_000_000_000));
                    assert_eq!(h.retries, Some(3));
                },
            ),
            (
                "HEALTHCHECK CMD shell form is CMD-SHELL, not the SHELL",
                vec![
                    Expanded::Shell(strs(&["/bin/bash", "-c"])),
                    Expanded::Healthcheck(H::Cmd {
                        cmd: sh("true"),
                        interval: None,
                        timeout: None,
                        start_period: None,
                        start_interval: None,
                        retries: None,
                        flags: vec![],
                    }),
                ],
                |c| {
                    assert_eq!(
                        c.config.healthcheck.as_ref().unwrap().test,
                        strs(&["CMD-SHELL", "true"])
                    )
                },
            ),
            (
                "ONBUILD keeps the trigger text",
                vec![
                    Expanded::Onbuild("RUN make".into()),
                    Expanded::Onbuild("COPY . /".into()),
                ],
                |c| assert_eq!(c.config.on_build, strs(&["RUN make", "COPY . /"])),
            ),
            (
                "MAINTAINER sets the author",
                vec![Expanded::Maintainer("me <me@x>".into())],
                |c| assert_eq!(c.author.as_deref(), Some("me <me@x>")),
            ),
            (
                "ARG changes nothing and leaves no history",
                vec![Expanded::Arg(vec![("V".into(), Some("1".into()))])],
                |c| assert_eq!(c, &base()),
            ),
        ];
        for (name, steps, check) in rows {
            let c = after(&base(), &steps);
            check(&c);
            let expected_history = steps
                .iter()
                .filter(|s| !matches!(s, Expanded::Arg(_)))
                .count();
            assert_eq!(c.history.len(), expected_history, "{name}");
            assert!(
                c.history.iter().all(|h| h.empty_layer == Some(true)),
                "{name}"
            );
            assert!(c.rootfs.diff_ids.is_empty(), "{name}");
        }
    }

    /// The bytes the image ID is the digest of: a pinned config after one of every
    /// config-changing instruction.
    #[test]
    fn the_config_bytes_are_pinned() {
        let c = after(
            &ImageConfig::new_scratch(&crate::Platform::new("linux", "amd64", None)),
            &[
                Expanded::Env(pairs(&[("A", "1")])),
                Expanded::Workdir("app".into()),
                Expanded::Expose(strs(&["80"])),
                Expanded::Entrypoint(sh("run")),
                Expanded::Label(pairs(&[("l", "v")])),
            ],
        );
        let json = String::from_utf8(c.to_canonical_json()).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","config":{"Entrypoint":["/bin/sh","-c","run"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=1"],"ExposedPorts":{"80/tcp":{}},"Labels":{"l":"v"},"WorkingDir":"/app"},"history":[{"comment":"cairn","created":"1970-01-01T00:00:00Z","created_by":"X","empty_layer":true},{"comment":"cairn","created":"1970-01-01T00:00:00Z","created_by":"X","empty_layer":true},{"comment":"cairn","created":"1970-01-01T00:00:00Z","created_by":"X","empty_layer":true},{"comment":"cairn","created":"1970-01-01T00:00:00Z","created_by":"X","empty_layer":true},{"comment":"cairn","created":"1970-01-01T00:00:00Z","created_by":"X","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }

    #[test]
    fn env_entries_without_a_value_read_as_empty() {
        let env = strs(&["BARE", "A=1", "A=2"]);
        assert_eq!(
            with_env(&env, &pairs(&[("C", "x=y")])),
            strs(&["BARE=", "A=2", "C=x=y"])
        );
    }

    #[test]
    fn shell_argv_defaults_to_bin_sh() {
        assert_eq!(
            shell_argv(None, "a b".into()),
            strs(&["/bin/sh", "-c", "a b"])
        );
        let custom = strs(&["cmd", "/S", "/C"]);
        assert_eq!(
            shell_argv(Some(&custom), "dir".into()),
            strs(&["cmd", "/S", "/C", "dir"])
        );
    }

    /// An ADD URL's credentials (also in an ONBUILD trigger) are masked in the history;
    /// other instructions are kept as written, as BuildKit keeps them.
    #[test]
    fn history_masks_add_url_credentials_only() {
        let df = crate::dockerfile::parse(
            "FROM scratch\nADD https://u:pw1@h/f /\nONBUILD ADD http://t@h/g /\nRUN curl https://u:pw2@h/\n",
            "Dockerfile",
        )
        .unwrap();
        let texts: Vec<String> = df.stages[0].instructions.iter().map(created_by).collect();
        assert_eq!(
            texts,
            [
                "ADD https://xxxxx:xxxxx@h/f /",
                "ONBUILD ADD http://xxxxx@h/g /",
                "RUN curl https://u:pw2@h/"
            ]
        );
    }

    #[test]
    fn history_text_is_one_line_without_comments_or_continuations() {
        let inst = Spanned {
            node: Instruction::Cmd(sh("x")),
            span: crate::dockerfile::Span {
                line: 1,
                col: 1,
                end_line: 3,
            },
            original: "RUN a \\\n  # note\n  && b".into(),
        };
        let h = history(&inst, step_time(Some(86400)));
        assert_eq!(h.created_by.as_deref(), Some("RUN a && b"));
        assert_eq!(h.created.as_deref(), Some("1970-01-02T00:00:00Z"));
        assert_eq!(h.comment.as_deref(), Some("cairn"));
    }
}
