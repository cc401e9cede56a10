//! [`Cancel`]: the token that asks a build to stop. The CLI creates it, its signal handler
//! cancels it, and the build checks it between steps and after each RUN, failing with
//! [`Error::Interrupted`] and cleaning up as it unwinds. No global state: two builds in one
//! process (tests, a library user) each have their own token.
//!
//! Work that must be stopped rather than merely not started — a running step's PID
//! namespace — registers a hook with [`Cancel::on_cancel`]; the sandbox still tracks its
//! running steps itself, so the executor registers `sandbox::kill_running` as that hook.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn Fn() + Send + Sync>;

/// A cancellation token; clones share one state.
#[derive(Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// A token not yet cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels: marks the token and runs every hook (each at most once per call).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        for h in hooks.iter() {
            h();
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// `Err(Error::Interrupted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// A token cancelled with this one that can also be cancelled alone: a build cancels
    /// its own when a stage fails, which stops the sibling stages and leaves the caller's
    /// token (and any other build sharing it) alone. The parent keeps only a weak handle.
    pub fn child(&self) -> Cancel {
        let child = Cancel::new();
        let weak = Arc::downgrade(&child.0);
        self.on_cancel(move || {
            if let Some(inner) = weak.upgrade() {
                Cancel(inner).cancel();
            }
        });
        child
    }

    /// Runs `hook` on every later [`Cancel::cancel`], and at once if already cancelled.
    pub fn on_cancel(&self, hook: impl Fn() + Send + Sync + 'static) {
        let mut hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_cancelled() {
            hook();
        }
        hooks.push(Box::new(hook));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_token_starts_clear_and_stays_cancelled() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        assert!(c.check().is_ok());
        let clone = c.clone();
        clone.cancel();
        assert!(c.is_cancelled());
        assert!(matches!(c.check(), Err(Error::Interrupted)));
    }

    #[test]
    fn tokens_are_independent() {
        let a = Cancel::new();
        let b = Cancel::new();
        a.cancel();
        assert!(!b.is_cancelled());
    }

    #[test]
    fn hooks_run_on_cancel_and_when_registered_late() {
        let c = Cancel::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n1 = n.clone();
        c.on_cancel(move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 0);
        c.cancel();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n2 = n.clone();
        c.on_cancel(move || {
            n2.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn a_child_follows_its_parent_but_not_the_other_way() {
        let parent = Cancel::new();
        let child = parent.child();
        let n = Arc::new(AtomicUsize::new(0));
        let n1 = n.clone();
        child.on_cancel(move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        let sibling = parent.child();
        child.cancel();
        assert!(child.is_cancelled());
        assert!(!parent.is_cancelled(), "a child cancelled its parent");
        assert!(!sibling.is_cancelled(), "a child cancelled its sibling");
        parent.cancel();
        assert!(sibling.is_cancelled());
        assert_eq!(n.load(Ordering::SeqCst), 2, "hooks run on each cancel");
        // A dropped child leaves the parent nothing to keep alive.
        let dropped = parent.child();
        let weak = Arc::downgrade(&dropped.0);
        drop(dropped);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_child_of_a_cancelled_token_starts_cancelled() {
        let parent = Cancel::new();
        parent.cancel();
        assert!(parent.child().is_cancelled());
    }
}
