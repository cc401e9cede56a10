//! [`State`]: the image as it stands after a step — its config and its layers. A cache entry
//! points at a stored `State` blob, so a hit restores exactly what the miss produced
//! (including history times, which is why a fully cached build keeps its image ID).

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{ImageConfig, LayerDesc};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// An image under construction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub config: ImageConfig,
    pub layers: Vec<LayerDesc>,
}

impl State {
    /// Stores this state as a blob; returns its digest and every blob it references.
    pub fn save(&self, store: &Store) -> Result<(Digest, Vec<Digest>)> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Json {
            what: "cannot serialize a cache state".into(),
            source: e,
        })?;
        let digest = store.put_bytes(&bytes)?;
        let refs = self.layers.iter().map(|l| l.digest.clone()).collect();
        Ok((digest, refs))
    }

    /// Loads a state saved by [`State::save`].
    pub fn load(store: &Store, digest: &Digest) -> Result<State> {
        let bytes = store.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            what: format!("cache state {digest} is not valid"),
            source: e,
        })
    }
}
