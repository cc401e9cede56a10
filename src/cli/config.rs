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
//! [mirrors]                            # tried in order before the registry itself
//! "docker.io" = ["mirror.internal:5000"]
//! ```

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings a config file may hold; every field optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub root: Option<PathBuf>,
    pub platform: Option<String>,
    pub pull: Option<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// A size cap on blobs and unpacked layers (e.g. `"20GB"`), checked after each build.
    pub max_store_size: Option<String>,
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
        if let Some(p) = &c.pull {
            if !matches!(p.as_str(), "always" | "missing" | "never") {
                return Err(format!("pull = {p:?}: expected always, missing or never"));
            }
        }
        if let Some(m) = &c.max_store_size {
            crate::store::maintain::parse_size(m).map_err(|e| format!("max_store_size: {e}"))?;
        }
        Ok(c)
    }

    /// The size cap in bytes, when one is set (validated by [`Config::parse`]).
    pub fn max_store_bytes(&self) -> Option<u64> {
        self.max_store_size
            .as_deref()
            .and_then(|m| crate::store::maintain::parse_size(m).ok())
    }
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
        assert_eq!(c.pull.as_deref(), Some("never"));
        assert_eq!(c.mirrors["docker.io"], vec!["m:5000".to_string()]);
        assert!(Config::parse("bogus = 1").unwrap_err().contains("bogus"));
        assert!(Config::parse("pull = \"sometimes\"").is_err());
        let capped = Config::parse("max_store_size = \"2GiB\"").unwrap();
        assert_eq!(capped.max_store_bytes(), Some(2 << 30));
        assert!(Config::parse("max_store_size = \"lots\"")
            .unwrap_err()
            .contains("max_store_size"));
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
