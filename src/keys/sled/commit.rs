//! Group commit: many concurrent `commit()` calls share one `sled` flush (fsync).
//! Owns the commit tickets and the flusher thread; touches the database only to flush it.
//!
//! Each `commit()` takes a ticket (a counter incremented under a mutex) *after* the writes it
//! must cover have returned. A single leader thread loops: read the highest ticket issued,
//! flush, publish "durable through that ticket" on a `watch` channel, and exit once no newer
//! ticket was issued meanwhile. Because a flush starts after every ticket it covers was
//! taken, it covers every write those callers made. Writers arriving during a flush are
//! batched into the next one, so N concurrent requests cost about two fsyncs, not N.
//!
//! The leader is a plain thread calling the blocking flush (not a tokio task,
//! not `flush_async`): a dropped request future or a runtime shutting down cannot strand the
//! waiters of a batch, and sled 0.34's `flush_async` deadlocks when called concurrently
//! (spacejam/sled#1308).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::keys::error::StoreError;

/// Makes everything written so far durable (the store's flush + fdatasync outside tests).
type FlushFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

pub(crate) struct GroupCommit {
    flush: FlushFn,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    /// Flushes performed so far (batches, not callers).
    flushes: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Highest ticket handed out.
    issued: u64,
    leader_running: bool,
}

#[derive(Clone, Default)]
struct Progress {
    /// Every ticket ≤ this is durable.
    durable: u64,
    /// The latest failed flush covered tickets up to this one…
    failed: u64,
    /// …with this error.
    error: Option<Arc<str>>,
}

impl GroupCommit {
    pub(crate) fn new(flush: FlushFn) -> Arc<GroupCommit> {
        Arc::new(GroupCommit {
            flush,
            state: Mutex::new(State::default()),
            progress: watch::Sender::new(Progress::default()),
            flushes: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many flushes the group commit has done (each covering one or more callers).
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Resolves once every write that returned before this call is on disk.
    pub(crate) async fn commit(self: &Arc<Self>) -> Result<(), StoreError> {
        let (ticket, start_leader) = {
            let mut state = self.state();
            state.issued += 1;
            let start = !state.leader_running;
            state.leader_running = true;
            (state.issued, start)
        };
        if start_leader {
            let this = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("pyexec-commit".into())
                .spawn(move || this.lead());
            if let Err(e) = spawned {
                self.state().leader_running = false;
                return Err(StoreError::Commit(format!(
                    "cannot start the flusher thread: {e}"
                )));
            }
        }
        let mut rx = self.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.durable >= ticket || p.failed >= ticket)
            .await
            .map_err(|_| StoreError::Commit("the flusher stopped".into()))?
            .clone();
        if progress.durable >= ticket {
            Ok(())
        } else {
            let error = progress.error.as_deref().unwrap_or("flush failed");
            Err(StoreError::Commit(error.to_owned()))
        }
    }

    fn lead(&self) {
        let guard = LeaderGuard { gc: self };
        loop {
            let target = self.state().issued;
            let result = (self.flush)();
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.progress.send_modify(|p| match result {
                Ok(()) => p.durable = p.durable.max(target),
                Err(e) => {
                    p.failed = p.failed.max(target);
                    p.error = Some(e.into());
                }
            });
            let mut state = self.state();
            if state.issued == target {
                state.leader_running = false;
                drop(state);
                std::mem::forget(guard);
                return;
            }
        }
    }
}

/// If the leader panics, fail every outstanding ticket and let the next caller lead.
struct LeaderGuard<'a> {
    gc: &'a GroupCommit,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.gc.state();
        state.leader_running = false;
        let issued = state.issued;
        drop(state);
        self.gc.progress.send_modify(|p| {
            p.failed = p.failed.max(issued);
            p.error = Some("the flusher thread panicked".into());
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::keys::tests::runtime;

    #[test]
    fn concurrent_commits_share_flushes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&flushes);
        let gc = GroupCommit::new(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }));
        runtime().block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let gc = Arc::clone(&gc);
                    tokio::spawn(async move { gc.commit().await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "64 commits took {n} flushes");
        assert_eq!(gc.flushes(), n as u64);
    }

    #[test]
    fn a_failed_flush_fails_its_waiters_and_the_next_one_can_succeed() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = Arc::clone(&fail);
        let gc = GroupCommit::new(Box::new(move || {
            if failing.load(Ordering::SeqCst) {
                Err("disk on fire".into())
            } else {
                Ok(())
            }
        }));
        let rt = runtime();
        match rt.block_on(gc.commit()) {
            Err(StoreError::Commit(message)) => assert_eq!(message, "disk on fire"),
            other => panic!("expected a commit error, got {other:?}"),
        }
        fail.store(false, Ordering::SeqCst);
        rt.block_on(gc.commit()).unwrap();
    }

    #[test]
    fn a_panicking_flush_fails_its_waiters_instead_of_hanging_them() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let gc = GroupCommit::new(Box::new(move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("flush exploded");
            }
            Ok(())
        }));
        let rt = runtime();
        let first = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), gc.commit()).await
        });
        match first {
            Ok(Err(StoreError::Commit(message))) => assert!(message.contains("panicked")),
            other => panic!("expected a commit error, got {other:?}"),
        }
        // The next caller becomes the leader again.
        rt.block_on(gc.commit()).unwrap();
    }
}
