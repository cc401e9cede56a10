//! Layers of a rootless step: its upper directory holds files of the step's users
//! (subordinate ids) that this user may not read — `/etc/shadow` after a `useradd`, a
//! `chmod 700` directory of user 1000 — so [`TarJob`], a job of the privilege broker,
//! writes the changeset tar as root of a user namespace with the user's maps, where they
//! belong to its root, and [`from_upper_as_owner`] stores it.

use super::{from_tar, from_upper, write_tar, Error, Layer, LayerOptions};
use crate::idmap::IdMap;
use crate::store::Store;
use crate::userns::{run_job, Job, Privilege, Report};
use serde::{Deserialize, Serialize};
use std::io::StdinLock;
use std::path::{Path, PathBuf};

/// Write the changeset tar of `dir` to the helper's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TarJob {
    pub dir: PathBuf,
    pub opts: LayerOptions,
}

impl Job for TarJob {
    const KIND: &'static str = "layer-tar";

    fn run(mut self, _input: StdinLock<'static>) -> Result<Report, String> {
        // Inside the namespace owners already read as the container's ids.
        self.opts.uid_maps = vec![IdMap::IDENTITY];
        self.opts.gid_maps = vec![IdMap::IDENTITY];
        let out = std::io::BufWriter::new(std::io::stdout().lock());
        write_tar(&self.dir, out, &self.opts)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("layer of {}: {e}", self.dir.display()))
    }
}

/// Writes the uncompressed changeset tar of `dir` (see [`write_tar`]) to `out`, reading it
/// inside a user namespace with `privilege`'s maps.
pub fn tar_as_owner(
    privilege: &Privilege,
    dir: &Path,
    opts: &LayerOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), Error> {
    let job = TarJob {
        dir: dir.to_path_buf(),
        opts: opts.clone(),
    };
    run_job(privilege, &job, None, Some(out))?;
    Ok(())
}

/// [`from_upper`], reading `upper` as the owner of its files: directly as root, else
/// through [`tar_as_owner`].
pub fn from_upper_as_owner(
    privilege: &Privilege,
    store: &Store,
    upper: &Path,
    opts: &LayerOptions,
) -> Result<Option<Layer>, Error> {
    if privilege.is_root() {
        return from_upper(store, upper, opts);
    }
    from_tar::<Error>(store, opts.compression, |out| {
        tar_as_owner(privilege, upper, opts, out)
    })
}
