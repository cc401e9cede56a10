//! Cache keys: the product's promise. A step's key is a sha256 over a canonical,
//! length-framed encoding of its parent key, expanded instruction, environment and inputs.

use crate::digest::Digest;
use std::fmt;

/// The key of one build step. Equal keys promise equal results; keys never depend on
/// mtimes, host names, clocks, image names or tags.
#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CacheKey(pub Digest);

impl CacheKey {
    /// 64 hex digits, for file names in the cache index.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
