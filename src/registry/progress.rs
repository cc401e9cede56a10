//! [`Progress`]: what a pull tells the user, through the build's event sink
//! ([`crate::events::Reporter`]) — a byte transfer per blob and one-line notes. A caller
//! that gives no reporter in [`RegistryOptions::events`](super::RegistryOptions) gets one
//! of its own (live view on a terminal, plain lines otherwise, nothing when quiet).

use crate::digest::Digest;
use crate::events::{Mode, Reporter, Transfer, TransferKind};

pub(crate) struct Progress {
    rep: Reporter,
}

impl Progress {
    pub(crate) fn new(opts: &super::RegistryOptions) -> Progress {
        let rep = match (&opts.events, opts.quiet) {
            (_, true) => Reporter::quiet(),
            (Some(r), false) => r.clone(),
            (None, false) => Reporter::new(Mode::auto(), false),
        };
        Progress { rep }
    }

    /// Reports the start of one blob download.
    pub(crate) fn blob(&self, d: &Digest, size: u64) -> BlobProgress {
        self.rep.transfer(TransferKind::Pull, d.short(), Some(size))
    }

    /// Reports the start of one blob upload.
    pub(crate) fn push_blob(&self, d: &Digest, size: u64) -> BlobProgress {
        self.rep.transfer(TransferKind::Push, d.short(), Some(size))
    }

    /// A one-line note (a blob the registry had, or mounted).
    pub(crate) fn note(&self, msg: &str) {
        self.rep.info(msg);
    }

    /// Reports the start of another transfer of unknown size (an `ADD` download).
    pub(crate) fn transfer(&self, kind: TransferKind, id: &str) -> Transfer {
        self.rep.transfer(kind, id, None)
    }

    /// A warning that does not tear the bars.
    pub(crate) fn warn(&self, msg: &str) {
        self.rep.warn(msg);
    }
}

/// One blob's download.
pub(crate) type BlobProgress = Transfer;

/// A byte count for people, in IEC units: the one helper every command uses.
pub fn human(n: u64) -> String {
    crate::events::human_size(n)
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_are_iec() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(2 << 40), "2.0 TiB");
    }
}
