//! [`Platform`]: `os[(version)]/arch[/variant]` as `--platform` takes it and as manifests
//! list it, parsed as containerd's `platforms.Parse` does.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A target platform. Architecture names are normalised as containerd's platforms package
/// does (`x86_64` → `amd64`, `aarch64` → `arm64`, `arm64` implies variant `v8`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `10.0.17763.1234` of `windows(10.0.17763.1234)/amd64`: never part of `os`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

/// A `--platform` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os[(version)]/arch[/variant], e.g. linux/amd64")]
pub struct InvalidPlatform(pub String);

impl Platform {
    /// The platform this process runs on (what `docker build` defaults to).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(arch, variant);
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
            os_version: None,
        }
    }

    /// Whether an image built for `other` (as a manifest list states it) runs here.
    /// A missing variant on either side matches, as containerd's matcher does for amd64.
    pub fn matches(&self, other: &Platform) -> bool {
        let other = Platform::new(&other.os, &other.architecture, other.variant.as_deref());
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || other.variant.is_none() || self.variant == other.variant)
    }
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(|v| v.to_ascii_lowercase());
    match (arch.as_str(), variant.as_deref()) {
        ("x86_64" | "x86-64" | "amd64", v) => {
            ("amd64".into(), v.filter(|v| *v != "v1").map(Into::into))
        }
        ("aarch64" | "arm64", None | Some("8") | Some("v8")) => ("arm64".into(), Some("v8".into())),
        ("aarch64" | "arm64", v) => ("arm64".into(), v.map(Into::into)),
        ("armhf", _) => ("arm".into(), Some("v7".into())),
        ("armel", _) => ("arm".into(), Some("v6".into())),
        ("arm", None) => ("arm".into(), Some("v7".into())),
        ("arm", Some(v)) => (
            "arm".into(),
            Some(if v.starts_with('v') {
                v.into()
            } else {
                format!("v{v}")
            }),
        ),
        ("i386" | "i486" | "i586" | "i686", v) => ("386".into(), v.map(Into::into)),
        (a, v) => (a.into(), v.map(Into::into)),
    }
}

/// `os` or `os(version)`, as containerd's `osRe` (OS features after `+` are accepted and
/// dropped: nothing cairn builds uses them); the version `%`-unescaped.
fn os_and_version(s: &str) -> Option<(&str, Option<String>)> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let Some(open) = s.find('(') else {
        return name_ok(s).then_some((s, None));
    };
    let (os, rest) = (&s[..open], &s[open + 1..]);
    let inner = rest.strip_suffix(')')?;
    let option_ok = |v: &str| {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.%-".contains(&b))
    };
    let mut parts = inner.split('+');
    let version = parts.next().unwrap_or_default();
    if !name_ok(os) || !option_ok(version) || !parts.all(|f| !f.is_empty() && option_ok(f)) {
        return None;
    }
    let version = percent_decode(version)?;
    Some((os, (!version.is_empty()).then_some(version)))
}

/// Go's `url.PathUnescape` for the few characters a version may hold.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPlatform(s.to_string());
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, os_version) = os_and_version(parts[0]).ok_or_else(bad)?;
        let component_ok = |p: &&str| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !parts[1..].iter().all(component_ok) {
            return Err(bad());
        }
        let mut p = match parts.as_slice() {
            [_, arch] => Platform::new(os, arch, None),
            [_, arch, variant] => Platform::new(os, arch, Some(variant)),
            _ => return Err(bad()),
        };
        p.os_version = os_version;
        Ok(p)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.os)?;
        if let Some(v) = &self.os_version {
            write!(f, "({v})")?;
        }
        write!(f, "/{}", self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalise_match() {
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!(arm.matches(&Platform::new("linux", "aarch64", None)));
        assert!(!arm.matches(&p));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&Platform::new("linux", "arm", Some("v6"))));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }

    #[test]
    fn os_version_is_not_part_of_os() {
        let w: Platform = "windows(10.0.17763.1234)/amd64".parse().unwrap();
        assert_eq!(w.os, "windows");
        assert_eq!(w.os_version.as_deref(), Some("10.0.17763.1234"));
        assert_eq!(w.architecture, "amd64");
        // Shown (and keyed) as written, so keys of such platforms did not change.
        assert_eq!(w.to_string(), "windows(10.0.17763.1234)/amd64");
        let f: Platform = "linux(5.4+feat)/arm64".parse().unwrap();
        assert_eq!(
            (f.os.as_str(), f.os_version.as_deref()),
            ("linux", Some("5.4"))
        );
        let e: Platform = "linux(1%2E0)/amd64".parse().unwrap();
        assert_eq!(e.os_version.as_deref(), Some("1.0"));
        let plain: Platform = "linux()/amd64".parse().unwrap();
        assert_eq!(plain, Platform::new("linux", "amd64", None));
        for bad in [
            "linux(5.4/amd64",
            "linux5.4)/amd64",
            "linux(a b)/amd64",
            "lin ux/amd64",
            "linux/am d64",
            "linux(1%zz)/amd64",
            "linux(5)(6)/amd64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }
}
