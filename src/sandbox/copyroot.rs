//! The copy-based root ([`super::fallback`]) run with the right privileges: in this
//! process as real root; rootless, as jobs of the privilege broker ([`CopyRootJob`],
//! [`CopyChangesJob`]) inside a user namespace with the user's maps, because the layers
//! and the step's files belong to subordinate ids the user alone can neither read nor
//! recreate.

use super::fallback::{merge_layers, write_changes, Snapshot};
use super::Error;
use crate::userns::{run_job, Job, Privilege, Report};
use serde::{Deserialize, Serialize};
use std::io::StdinLock;
use std::path::{Path, PathBuf};

/// Copies `layers` into `dest` and saves the snapshot of the copy to `snapshot`.
fn make(layers: &[PathBuf], dest: &Path, snapshot: &Path) -> std::io::Result<()> {
    merge_layers(layers, dest)?;
    Snapshot::take(dest)?.save(snapshot)
}

/// Writes the changes of `root` since `snapshot` into `upper`.
fn changes(snapshot: &Path, root: &Path, upper: &Path) -> std::io::Result<()> {
    write_changes(&Snapshot::load(snapshot)?, root, upper)
}

/// Copy `layers` into `dest` for a copy-based root and save its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRootJob {
    pub layers: Vec<PathBuf>,
    pub dest: PathBuf,
    pub snapshot: PathBuf,
}

impl Job for CopyRootJob {
    const KIND: &'static str = "copy-root";

    fn run(self, _input: StdinLock<'static>) -> Result<Report, String> {
        make(&self.layers, &self.dest, &self.snapshot)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("copy-based root: {e}"))
    }
}

/// Write what changed in a copy-based root since its snapshot into `upper`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyChangesJob {
    pub snapshot: PathBuf,
    pub root: PathBuf,
    pub upper: PathBuf,
}

impl Job for CopyChangesJob {
    const KIND: &'static str = "copy-changes";

    fn run(self, _input: StdinLock<'static>) -> Result<Report, String> {
        changes(&self.snapshot, &self.root, &self.upper)
            .map(|()| Report::Exit(0))
            .map_err(|e| format!("copy-based root: {e}"))
    }
}

/// [`make`] as the owner of the layers' ids.
pub fn make_as_owner(
    privilege: &Privilege,
    layers: &[PathBuf],
    dest: &Path,
    snapshot: &Path,
) -> Result<(), Error> {
    if privilege.is_root() {
        return make(layers, dest, snapshot)
            .map_err(|e| Error::Message(format!("copy-based root: {e}")));
    }
    let job = CopyRootJob {
        layers: layers.to_vec(),
        dest: dest.to_path_buf(),
        snapshot: snapshot.to_path_buf(),
    };
    run_job(privilege, &job, None, None)?;
    Ok(())
}

/// [`changes`] as the owner of the step's ids.
pub fn changes_as_owner(
    privilege: &Privilege,
    snapshot: &Path,
    root: &Path,
    upper: &Path,
) -> Result<(), Error> {
    if privilege.is_root() {
        return changes(snapshot, root, upper)
            .map_err(|e| Error::Message(format!("copy-based root: {e}")));
    }
    let job = CopyChangesJob {
        snapshot: snapshot.to_path_buf(),
        root: root.to_path_buf(),
        upper: upper.to_path_buf(),
    };
    run_job(privilege, &job, None, None)?;
    Ok(())
}
