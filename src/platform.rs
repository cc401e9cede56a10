//! [`Platform`]: `os/arch[/variant]` as `--platform` takes it and as manifests list it.

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
}

/// A `--platform` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
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

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(InvalidPlatform(s.to_string()));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(InvalidPlatform(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
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
}
