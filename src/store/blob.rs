//! [`BlobWriter`]: the only way bytes become a blob. It hashes while writing into a temp file
//! under the store's `tmp/`, and [`BlobWriter::commit`] publishes the file under its digest
//! only after fsync and verification, so no reader ever sees a partial or wrong blob.

use super::{io_err, sync_parent, Error, Store};
use crate::digest::{Digest, HashingWriter};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use tempfile::NamedTempFile;

/// A blob being written. Dropping it without committing removes its temp file.
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<NamedTempFile>>,
    store: Store,
}

impl BlobWriter {
    pub(super) fn new(store: &Store) -> Result<BlobWriter, Error> {
        let tmp = store.tmp_root();
        let file = tempfile::Builder::new()
            .prefix(&store.temp_prefix("blob"))
            .tempfile_in(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(256 * 1024, file)),
            store: store.clone(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.count()
    }

    /// Flushes and fsyncs the temp file, checks it against `expected` (when given), and
    /// renames it to `blobs/sha256/<hex>`. On a mismatch the temp file is removed and
    /// nothing is stored. Returns the digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let (buf, digest, size) = self.inner.finish();
        let file = buf.into_inner().map_err(|e| Error::Io {
            path: PathBuf::from("blob temp file"),
            source: e.into_error(),
        })?;
        if let Some(expected) = expected {
            if expected != &digest {
                // `file` drops here, which removes the temp file.
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                    size,
                });
            }
        }
        file.as_file().sync_all().map_err(io_err(file.path()))?;
        self.store.pin([&digest])?;
        let dest = self.store.blob_path(&digest);
        file.persist(&dest).map_err(|e| Error::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        sync_parent(&dest)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
