//! The worker threads and the fair queue in front of them: waiting executions are taken
//! round-robin per tenant, so one tenant's backlog of CPU hogs delays another tenant's request
//! by at most the executions already running, never by the whole backlog.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::outcome::Outcome;

/// One run (an execution, a session's turn or its start) waiting for, or on, a worker.
pub struct Job {
    /// The run; it returns how to deliver what it made, which the worker does after freeing
    /// the job's place, so a caller never sees its own job as load.
    pub work: Box<dyn FnOnce(Arc<AtomicBool>) -> Delivery + Send>,
    pub cancelled: Arc<AtomicBool>,
    /// Held until the job is finished or dropped, so a cancelled job frees its place.
    pub permit: OwnedSemaphorePermit,
}

/// Hands a finished job's result to its caller.
pub type Delivery = Box<dyn FnOnce() + Send>;

impl Job {
    /// A job running `work` and sending its result to `done`.
    pub fn new<R: Send + 'static>(
        work: impl FnOnce(Arc<AtomicBool>) -> R + Send + 'static,
        done: oneshot::Sender<R>,
        cancelled: Arc<AtomicBool>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            work: Box::new(move |cancelled| {
                let result = work(cancelled);
                Box::new(move || {
                    let _ = done.send(result);
                })
            }),
            cancelled,
            permit,
        }
    }
}

/// Waiting jobs, one FIFO per tenant, served in turn.
#[derive(Default)]
pub struct FairQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    waiting: HashMap<String, VecDeque<Job>>,
    /// Tenants with waiting jobs, in the order they are served.
    turns: VecDeque<String>,
    closed: bool,
}

impl FairQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` behind the tenant's earlier jobs; gives it back once the queue is closed.
    pub fn push(&self, tenant: String, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        let jobs = state.waiting.entry(tenant.clone()).or_default();
        jobs.push_back(job);
        if jobs.len() == 1 {
            state.turns.push_back(tenant);
        }
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, from the tenant whose turn it is; `None` once closed.
    fn pop(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(tenant) = state.turns.pop_front() {
                let jobs = state
                    .waiting
                    .get_mut(&tenant)
                    .expect("a tenant with a turn has jobs");
                let job = jobs.pop_front().expect("a tenant with a turn has jobs");
                if jobs.is_empty() {
                    state.waiting.remove(&tenant);
                } else {
                    state.turns.push_back(tenant);
                }
                return Some(job);
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops the workers; jobs still waiting are dropped (their callers see an internal error).
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.waiting.clear();
        state.turns.clear();
        drop(state);
        self.ready.notify_all();
    }
}

/// A worker thread's loop: runs jobs until the queue closes.
pub fn work(queue: &FairQueue, running: &AtomicUsize) {
    while let Some(job) = queue.pop() {
        let Job {
            work,
            cancelled,
            permit,
        } = job;
        if cancelled.load(Ordering::Relaxed) {
            continue;
        }
        running.fetch_add(1, Ordering::Relaxed);
        // A panic drops the job's sender: its caller answers `internal` (`worker_lost`).
        let delivery = std::panic::catch_unwind(AssertUnwindSafe(|| work(cancelled)));
        running.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        match delivery {
            Ok(deliver) => deliver(),
            Err(_) => tracing::error!("a run panicked in the host"),
        }
    }
}

/// The outcome of an execution on `runtime` whose worker failed.
pub fn worker_lost(runtime: &str) -> Outcome {
    Outcome::internal(runtime, std::time::Duration::ZERO)
}
