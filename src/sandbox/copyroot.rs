//! The copy-based root (`rootfs::fallback`) run with the right privileges: in this
//! process as real root; rootless, inside a user namespace with the sandbox's maps,
//! because the layers and the step's files belong to subordinate ids the user alone can
//! neither read nor recreate.

use super::protocol::Job;
use super::Error;
use crate::rootfs::fallback::{merge_layers, write_changes, Snapshot};
use std::path::{Path, PathBuf};

/// Copies `layers` into `dest` and saves the snapshot of the copy to `snapshot`.
pub fn make(layers: &[PathBuf], dest: &Path, snapshot: &Path) -> std::io::Result<()> {
    merge_layers(layers, dest)?;
    Snapshot::take(dest)?.save(snapshot)
}

/// Writes the changes of `root` since `snapshot` into `upper`.
pub fn changes(snapshot: &Path, root: &Path, upper: &Path) -> std::io::Result<()> {
    write_changes(&Snapshot::load(snapshot)?, root, upper)
}

/// [`make`] as the owner of the layers' ids.
pub fn make_as_owner(layers: &[PathBuf], dest: &Path, snapshot: &Path) -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        return make(layers, dest, snapshot)
            .map_err(|e| Error::Message(format!("copy-based root: {e}")));
    }
    super::userns::run_job(
        &Job::CopyRoot {
            layers: layers.to_vec(),
            dest: dest.to_path_buf(),
            snapshot: snapshot.to_path_buf(),
        },
        None,
    )
}

/// [`changes`] as the owner of the step's ids.
pub fn changes_as_owner(snapshot: &Path, root: &Path, upper: &Path) -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        return changes(snapshot, root, upper)
            .map_err(|e| Error::Message(format!("copy-based root: {e}")));
    }
    super::userns::run_job(
        &Job::CopyChanges {
            snapshot: snapshot.to_path_buf(),
            root: root.to_path_buf(),
            upper: upper.to_path_buf(),
        },
        None,
    )
}
