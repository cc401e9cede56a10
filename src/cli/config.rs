//! [`Config`]: `$XDG_CONFIG_HOME/cairn/config.toml` (else `~/.config/cairn/config.toml`, or
//! the file `CAIRN_CONFIG` names). Precedence, lowest first: this file, environment
//! variables, command-line flags.
//!
//! ```toml
//! root = "/var/cache/cairn"            # store directory
//! platform = "linux/amd64"             # default --platform
//! pull = "missing"                     # default --pull: always | missing | never
//! insecure_registries = ["registry.internal:5000"]
//! max_store_size = "20GB"              # collect LRU cache entries after builds past this
//!
//! cache_from = ["type=registry,ref=registry.internal:5000/team/cache"]   # default --cache-from
//! cache_to = ["type=registry,ref=registry.internal:5000/team/cache,mode=max"]  # default --cache-to
//!
//! [mirrors]                            # tried in order before the registry itself
//! "docker.io" = ["mirror.internal:5000"]
//! ```

use super::PullPolicy;
use crate::error::{Error, Result};
use crate::platform::Platform;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings a config file may hold; every field optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub root: Option<PathBuf>,
    /// The default `--platform` of every command (see [`super::Cli::platform`]).
    #[serde(default, deserialize_with = "platform")]
    pub platform: Option<Platform>,
    /// The default `--pull` (see [`super::Cli::pull_policy`]).
    pub pull: Option<PullPolicy>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Default `--cache-from` specs.
    #[serde(default)]
    pub cache_from: Vec<String>,
    /// Default `--cache-to` specs.
    #[serde(default)]
    pub cache_to: Vec<String>,
    /// A cap in bytes on blobs and unpacked layers (`"20GB"`), checked after each build.
    #[serde(default, deserialize_with = "size")]
    pub max_store_size: Option<u64>,
}

impl Config {
    /// Where the config file is looked for.
    pub fn path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CAIRN_CONFIG") {
            return Some(PathBuf::from(p));
        }
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("cairn/config.toml"))
    }

    /// Loads the config file; a missing file is an empty config, a bad one an error that
    /// names it.
    pub fn load() -> Result<Config> {
        let Some(path) = Config::path() else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Config::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::Usage(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Parses config text.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        for spec in &c.cache_from {
            crate::remote_cache::parse_cache_from(spec).map_err(|e| format!("cache_from: {e}"))?;
        }
        for spec in &c.cache_to {
            crate::remote_cache::parse_cache_to(spec).map_err(|e| format!("cache_to: {e}"))?;
        }
        Ok(c)
    }
}

/// `platform = "os/arch[/variant]"`, parsed as `--platform` is.
fn platform<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Platform>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// `max_store_size = "20GB"`, parsed as `cache prune --max-size` is.
fn size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    crate::store::maintain::parse_size(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_setting_and_rejects_unknown_ones() {
        let c = Config::parse(
            "root = \"/s\"\nplatform = \"linux/arm64\"\npull = \"never\"\ninsecure_registries = [\"r:5000\"]\n[mirrors]\n\"docker.io\" = [\"m:5000\"]\n",
        )
        .unwrap();
        assert_eq!(c.root, Some(PathBuf::from("/s")));
        assert_eq!(c.pull, Some(PullPolicy::Never));
        assert_eq!(c.platform, Some(Platform::new("linux", "arm64", None)));
        assert_eq!(c.mirrors["docker.io"], vec!["m:5000".to_string()]);
        assert!(Config::parse("bogus = 1").unwrap_err().contains("bogus"));
        let c = Config::parse(
            "cache_from = [\"type=registry,ref=r:5000/c\"]\ncache_to = [\"type=registry,ref=r:5000/c,mode=max\"]\n",
        )
        .unwrap();
        assert_eq!(c.cache_to.len(), 1);
        assert!(Config::parse("cache_to = [\"type=local,dest=x\"]")
            .unwrap_err()
            .contains("cache_to"));
        let e = Config::parse("pull = \"sometimes\"").unwrap_err();
        assert!(e.contains("sometimes") && e.contains("never"), "{e}");
        let e = Config::parse("platform = \"linux\"").unwrap_err();
        assert!(e.contains("invalid platform"), "{e}");
        let capped = Config::parse("max_store_size = \"2GiB\"").unwrap();
        assert_eq!(capped.max_store_size, Some(2 << 30));
        let e = Config::parse("max_store_size = \"lots\"").unwrap_err();
        assert!(e.contains("max_store_size") && e.contains("lots"), "{e}");
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
