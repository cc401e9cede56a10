//! [`Reporting`]: a way to the engine that tells the build's event sink how many bytes of
//! the archive a load has streamed, and how fast. It wraps whichever way [`LoadVia`]
//! picked, so the load itself stays the same code with or without a reporter.
//!
//! [`LoadVia`]: super::LoadVia

use super::docker::{EngineOps, Info, Inspected, WriteArchive};
use super::Error;
use crate::events::{Reporter, Transfer, TransferKind};
use std::io::Write;

pub(crate) struct Reporting<'a> {
    pub inner: &'a dyn EngineOps,
    pub rep: &'a Reporter,
    /// What the view calls the load (the first tag, else the image ID).
    pub name: &'a str,
}

impl EngineOps for Reporting<'_> {
    fn inspect(&self, reference: &str) -> Result<Option<Inspected>, Error> {
        self.inner.inspect(reference)
    }

    fn image_id(&self, reference: &str) -> Result<Option<String>, Error> {
        self.inner.image_id(reference)
    }

    fn load(&self, write: &mut WriteArchive) -> Result<String, Error> {
        let t = self.rep.transfer(TransferKind::Load, self.name, None);
        let printed = self.inner.load(&mut |w: &mut dyn Write| {
            write(&mut Counted {
                inner: w,
                transfer: &t,
            })
        })?;
        t.finish();
        Ok(printed)
    }

    fn tag(&self, id: &str, tag: &str) -> Result<(), Error> {
        self.inner.tag(id, tag)
    }

    fn info(&self) -> Result<Info, Error> {
        self.inner.info()
    }

    fn remove(&self, id: &str) -> Result<(), Error> {
        self.inner.remove(id)
    }
}

/// A writer that counts what passes through it into a [`Transfer`].
struct Counted<'a> {
    inner: &'a mut dyn Write,
    transfer: &'a Transfer,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.transfer.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
