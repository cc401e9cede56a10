//! [`Flags`]: instruction flags checked against what each instruction accepts, and the typed
//! flag values (`--mount` specs, `--network`, `--security`, healthcheck durations).
//!
//! The rules are BuildKit's `BFlags`: `--name=value` for string flags (a value is required),
//! `--name` or `--name=true|false` for booleans, repeatable list flags (`--mount`,
//! `--exclude`), and every other flag, or a repeated single flag, is an error.

use super::instructions::{Mount, MountType, Network, Security};
use super::lexer::LogicalLine;
use super::words::Word;
use super::Fault;
use std::time::Duration;

/// The kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    List,
}

/// Flags given to one instruction: `(name, value, offset)` in order.
#[derive(Debug, Default)]
pub struct Flags {
    given: Vec<(String, String, usize)>,
}

impl Flags {
    /// Checks `words` against `allowed`.
    pub fn parse(
        ll: &LogicalLine,
        words: &[Word],
        allowed: &[(&str, Kind)],
    ) -> Result<Flags, Fault> {
        let mut given: Vec<(String, String, usize)> = Vec::new();
        for w in words {
            let body = w.text.strip_prefix("--").unwrap_or(&w.text);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                let message = super::suggest::did_you_mean(
                    format!("unknown flag: --{name}"),
                    name,
                    &names,
                    true,
                );
                return Err(ll.fault(w.offset, message));
            };
            if kind != Kind::List && given.iter().any(|g| g.0 == name) {
                return Err(ll.fault(w.offset, format!("duplicate flag specified: --{name}")));
            }
            let value = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "" => {
                        return Err(ll.fault(w.offset, format!("missing a value on flag: {name}")))
                    }
                    l @ ("true" | "false") => l.to_string(),
                    _ => {
                        return Err(ll.fault(
                            w.offset,
                            format!("expecting boolean value for flag {name}, not: {v}"),
                        ))
                    }
                },
                (_, None) => {
                    return Err(ll.fault(w.offset, format!("missing a value on flag: {name}")))
                }
                (_, Some(v)) => v.to_string(),
            };
            given.push((name.to_string(), value, w.offset));
        }
        Ok(Flags { given })
    }

    pub fn str(&self, name: &str) -> Option<String> {
        self.given.iter().find(|g| g.0 == name).map(|g| g.1.clone())
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }

    /// Every value of a list flag, with the offset of its word.
    pub fn list(&self, name: &str) -> Vec<(String, usize)> {
        self.given
            .iter()
            .filter(|g| g.0 == name)
            .map(|g| (g.1.clone(), g.2))
            .collect()
    }

    pub fn offset(&self, name: &str) -> Option<usize> {
        self.given.iter().find(|g| g.0 == name).map(|g| g.2)
    }
}

pub fn network(v: &str) -> Result<Network, String> {
    Network::ALL
        .into_iter()
        .find(|n| n.as_str() == v)
        .ok_or_else(|| format!("unsupported network mode {v:?}"))
}

pub fn security(v: &str) -> Result<Security, String> {
    Security::ALL
        .into_iter()
        .find(|s| s.as_str() == v)
        .ok_or_else(|| format!("unsupported security mode {v:?}"))
}

/// Splits a CSV field list (`a=b,"c=d,e"`), as Go's csv reader does for `--mount`.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!("extraneous or missing \" in quoted-field: {s}"))
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                    }
                }
                at_start = false;
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    out.push(cur);
    Ok(out)
}

/// Parses one `--mount` value (unexpanded). Keys are BuildKit's, with its aliases.
pub fn mount(spec: &str) -> Result<Mount, String> {
    let mut kind = MountType::Bind;
    let mut options: Vec<(String, String)> = Vec::new();
    for field in csv_fields(spec)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        if value.is_none()
            && !matches!(
                key.as_str(),
                "ro" | "readonly" | "rw" | "readwrite" | "required"
            )
        {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        }
        let canonical = match key.as_str() {
            "type" => {
                let v = value.unwrap_or_default().to_ascii_lowercase();
                kind = match v.as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "secret" => MountType::Secret,
                    "tmpfs" => MountType::Tmpfs,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(super::suggest::did_you_mean(
                            format!("unsupported mount type {v:?}"),
                            &v,
                            &["bind", "cache", "tmpfs", "secret", "ssh"],
                            true,
                        ))
                    }
                };
                continue;
            }
            "ro" | "readonly" => "readonly",
            "rw" | "readwrite" => "readwrite",
            "required" => "required",
            "source" | "src" => "source",
            "target" | "dst" | "destination" => "target",
            "from" | "id" | "sharing" | "mode" | "uid" | "gid" | "size" | "env" => key.as_str(),
            _ => {
                return Err(super::suggest::did_you_mean(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    &[
                        "type",
                        "from",
                        "source",
                        "target",
                        "readonly",
                        "id",
                        "sharing",
                        "required",
                        "size",
                        "mode",
                        "uid",
                        "gid",
                        "src",
                        "dst",
                        "destination",
                        "ro",
                        "rw",
                        "readwrite",
                        "env",
                    ],
                    true,
                ))
            }
        };
        let value = value.unwrap_or_else(|| "true".into());
        options.push((canonical.to_string(), value));
    }
    let get = |k: &str| options.iter().rev().find(|o| o.0 == k).map(|o| o.1.clone());
    let m = Mount {
        kind,
        target: get("target"),
        source: get("source"),
        from: get("from"),
        id: get("id"),
        options: options.clone(),
    };
    if let Some(s) = get("sharing") {
        if kind != MountType::Cache {
            return Err(format!(
                "invalid cache sharing set for {} mount",
                kind.as_str()
            ));
        }
        if !s.contains('$') && !matches!(s.as_str(), "shared" | "private" | "locked") {
            return Err(format!("unrecognized sharing parameter '{s}'"));
        }
    }
    if kind == MountType::Secret && m.from.is_some() {
        return Err("secret mount should not have a from".into());
    }
    if m.target.is_none() && matches!(kind, MountType::Bind | MountType::Cache | MountType::Tmpfs) {
        return Err(format!("mount type {} requires a target", kind.as_str()));
    }
    Ok(m)
}

/// Parses a Go duration (`1h30m`, `1.5s`, `300ms`, `0`), as `HEALTHCHECK` flags take.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let s2 = s.strip_prefix('+').unwrap_or(s);
    let mut total: f64 = 0.0;
    let mut rest = s2;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let num: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        total += num * nanos_per;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 9.2e18 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for n in Network::ALL {
            assert_eq!(network(n.as_str()), Ok(n));
        }
        for s in Security::ALL {
            assert_eq!(security(s.as_str()), Ok(s));
        }
        assert!(network("Default").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert!(duration("5").is_err());
        assert!(duration("-1s").is_err());
        assert!(duration("1x").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn mounts() {
        let m = mount("type=cache,target=/root/.cache,sharing=locked,id=x").unwrap();
        assert_eq!(
            (m.kind, m.target.as_deref(), m.id.as_deref()),
            (MountType::Cache, Some("/root/.cache"), Some("x"))
        );
        let m = mount("target=/src,ro").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.options[1], ("readonly".into(), "true".into()));
        let m = mount("type=secret,id=tok,\"dst=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(mount("type=nfs,target=/x").is_err());
        assert!(mount("type=bind").is_err());
        assert!(mount("type=cache,target=/x,bogus=1").is_err());
        assert!(mount("type=bind,target=/x,sharing=shared").is_err());
    }
}
