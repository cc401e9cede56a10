//! [`run_stages`]: runs a build's stages, independent ones at the same time, as BuildKit
//! runs its graph. Each stage gets a thread; a step waits for a stage it reads (its base, a
//! `COPY --from`, a `RUN --mount=from=`) only when it gets there, and holds one of a
//! bounded number of job tokens while it works — never while it waits for another stage,
//! so waiting cannot deadlock (a stage only ever waits for an earlier one in plan order).
//!
//! The first stage to fail stops the build: it cancels the build's own token, which kills
//! the running steps of this build (see [`crate::sandbox::kill_group`]), and the others
//! end with [`Error::Interrupted`] at their next check; the build returns the first error.
//! Every thread is joined before [`run_stages`] returns, so no step outlives the build.
//!
//! Hand-written rather than a thread pool crate: what it needs — results other stages
//! wait for, a failure that wakes every waiter, a semaphore — is a condition variable and
//! fifty lines, and rayon's work stealing would run a blocked stage's waiter on the very
//! thread that should be running the stage it waits for.

use super::Cancel;
use crate::error::{Error, Result};
use std::sync::{Arc, Condvar, Mutex};

/// The environment variable that bounds how many steps run at once (`1`: one stage after
/// the other, in plan order, as before stages ran in parallel).
pub const JOBS_ENV: &str = "CAIRN_JOBS";

/// How many steps run at once when nothing says: one per core, but at least four, since
/// a RUN step often waits on the network rather than the CPU (BuildKit sets no bound).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

/// A stage's finished result, as the stages that read it see it.
enum Slot<T> {
    Pending,
    Done(Arc<T>),
    Failed,
}

/// What a stage may ask of the others while it runs.
pub(super) struct Stages<'s, T> {
    slots: &'s Mutex<Vec<Slot<T>>>,
    changed: &'s Condvar,
    jobs: &'s Jobs,
    me: usize,
}

impl<T> Stages<'_, T> {
    /// The result of stage `i` (an earlier one in plan order), waiting until it is done;
    /// [`Error::Interrupted`] when it failed (its error is the build's).
    pub fn get(&self, i: usize) -> Result<Arc<T>> {
        if i >= self.me {
            return Err(Error::Internal(format!(
                "stage {} reads stage {i}, which is not built before it",
                self.me
            )));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &slots[i] {
                Slot::Done(v) => return Ok(v.clone()),
                Slot::Failed => return Err(Error::Interrupted),
                Slot::Pending => {
                    slots = self.changed.wait(slots).unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }

    /// A job token: held while a step works, so at most `jobs` steps work at once.
    pub fn job(&self) -> Job<'_> {
        self.jobs.take()
    }
}

/// A counting semaphore of job tokens.
struct Jobs {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Jobs {
    fn take(&self) -> Job<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Job(self)
    }
}

/// A held job token; returned on drop.
pub(super) struct Job<'a>(&'a Jobs);

impl Drop for Job<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// Marks a stage failed unless it finished: a stage that returns an error, or panics,
/// wakes whatever waits for it and stops its siblings.
struct Finish<'s, T> {
    slots: &'s Mutex<Vec<Slot<T>>>,
    changed: &'s Condvar,
    cancel: &'s Cancel,
    me: usize,
    done: bool,
}

impl<T> Finish<'_, T> {
    fn set(&mut self, slot: Slot<T>) {
        let failed = matches!(slot, Slot::Failed);
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[self.me] = slot;
        self.changed.notify_all();
        self.done = true;
        if failed {
            self.cancel.cancel();
        }
    }
}

impl<T> Drop for Finish<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            self.set(Slot::Failed);
        }
    }
}

/// Runs `stage(i, ..)` for every stage `i < n`, at most `jobs` steps at a time, and returns
/// their results in plan order, or the first error. With `jobs == 1` the stages run one
/// after the other on this thread, in plan order. `cancel` is the build's own token: it
/// is cancelled when a stage fails.
pub(super) fn run_stages<T, F>(
    n: usize,
    jobs: usize,
    cancel: &Cancel,
    stage: F,
) -> Result<Vec<Arc<T>>>
where
    T: Send + Sync,
    F: Fn(usize, &Stages<'_, T>) -> Result<T> + Sync,
{
    let serial = jobs <= 1;
    let slots = Mutex::new((0..n).map(|_| Slot::Pending).collect::<Vec<_>>());
    let changed = Condvar::new();
    let jobs = Jobs {
        free: Mutex::new(jobs.max(1)),
        returned: Condvar::new(),
    };
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let one = |i: usize| {
        let mut finish = Finish {
            slots: &slots,
            changed: &changed,
            cancel,
            me: i,
            done: false,
        };
        let ctx = Stages {
            slots: &slots,
            changed: &changed,
            jobs: &jobs,
            me: i,
        };
        match stage(i, &ctx) {
            Ok(v) => finish.set(Slot::Done(Arc::new(v))),
            Err(e) => {
                // Recorded before the siblings are cancelled, so their `Interrupted`
                // never hides the error that stopped them.
                first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                finish.set(Slot::Failed);
            }
        }
    };
    if serial {
        for i in 0..n {
            one(i);
            if first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                break;
            }
        }
    } else {
        std::thread::scope(|s| {
            for i in 0..n {
                let one = &one;
                std::thread::Builder::new()
                    .name(format!("cairn-stage-{i}"))
                    .spawn_scoped(s, move || one(i))
                    .map(drop)
                    .unwrap_or_else(|_| one(i));
            }
        });
    }
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let slots = slots.into_inner().unwrap_or_else(|p| p.into_inner());
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Done(v) => Ok(v),
            _ => Err(Error::Internal("a stage ended without a result".into())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stage reads the result of the stage it depends on, whenever that finishes.
    #[test]
    fn a_stage_gets_what_the_stages_it_reads_made() {
        for jobs in [1, 2, 8] {
            let cancel = Cancel::new();
            // As the executor does: the stages read are waited for before the job token
            // is taken (holding it while waiting could starve the stages waited for).
            let out = run_stages(4, jobs, &cancel, |i, st: &Stages<'_, usize>| {
                let v = match i {
                    0 | 1 => i + 10,
                    2 => *st.get(0)? + *st.get(1)?,
                    _ => *st.get(2)? * 2,
                };
                let _job = st.job();
                Ok(v)
            })
            .unwrap();
            let got: Vec<usize> = out.iter().map(|v| **v).collect();
            assert_eq!(got, [10, 11, 21, 42], "jobs {jobs}");
            assert!(!cancel.is_cancelled());
        }
    }

    /// Independent stages really run at once: each waits (no timeout) until all three
    /// have started, which only a parallel run gets past.
    #[test]
    fn independent_stages_run_at_the_same_time() {
        let started = AtomicUsize::new(0);
        let cancel = Cancel::new();
        let out = run_stages(3, 3, &cancel, |_, st: &Stages<'_, ()>| {
            let _job = st.job();
            started.fetch_add(1, Ordering::SeqCst);
            while started.load(Ordering::SeqCst) < 3 {
                std::thread::yield_now();
            }
            Ok(())
        });
        assert_eq!(out.unwrap().len(), 3);
    }

    /// Never more steps at once than job tokens.
    #[test]
    fn jobs_bound_how_many_work_at_once() {
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let cancel = Cancel::new();
        run_stages(6, 2, &cancel, |_, st: &Stages<'_, ()>| {
            for _ in 0..20 {
                let _job = st.job();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::yield_now();
                now.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(())
        })
        .unwrap();
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    /// The failing stage's error is the build's; the stages waiting for it and the
    /// siblings (which see the build's token cancelled) stop.
    #[test]
    fn the_first_failure_stops_the_others_and_is_the_error() {
        for jobs in [1, 3] {
            let cancel = Cancel::new();
            let err = run_stages(3, jobs, &cancel, |i, st: &Stages<'_, ()>| match i {
                0 => Err(Error::Usage("stage 0 broke".into())),
                1 => {
                    // A sibling: runs until the build is cancelled.
                    while !cancel.is_cancelled() {
                        std::thread::yield_now();
                    }
                    cancel.check()
                }
                _ => st.get(0).map(|_| ()),
            })
            .unwrap_err();
            assert!(
                matches!(&err, Error::Usage(m) if m == "stage 0 broke"),
                "{err}"
            );
            assert!(cancel.is_cancelled());
        }
    }

    /// A panicking stage still wakes its waiters (the panic then reaches the caller).
    #[test]
    fn a_panicking_stage_does_not_leave_its_waiters_hanging() {
        let cancel = Cancel::new();
        let waiter_saw = Mutex::new(None);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_stages(2, 2, &cancel, |i, st: &Stages<'_, ()>| {
                if i == 0 {
                    panic!("stage 0 panics");
                }
                let got = st.get(0).map(|_| ());
                *waiter_saw.lock().unwrap() = Some(matches!(got, Err(Error::Interrupted)));
                got
            })
        }));
        assert!(r.is_err(), "the panic reaches the caller");
        assert_eq!(*waiter_saw.lock().unwrap(), Some(true));
    }

    #[test]
    fn a_stage_cannot_wait_for_itself_or_a_later_one() {
        let cancel = Cancel::new();
        let err = run_stages(2, 2, &cancel, |i, st: &Stages<'_, ()>| {
            if i == 0 {
                st.get(1).map(|_| ())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }
}
