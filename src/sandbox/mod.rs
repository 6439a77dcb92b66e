//! The sandbox owns everything between "here is code + data + limits" and "here is the
//! outcome": the embedded guest module, the wasmtime engine, the worker threads that run
//! executions off the async reactor, and the bounded queue in front of them. Nothing else in the
//! crate touches wasmtime; the sandbox knows nothing of keys, quotas or HTTP.
//!
//! Every execution gets a fresh `Store` and instance from one shared `InstancePre`, its own fuel,
//! wall-clock deadline, memory cap and output cap, and ends in an [`Outcome`] whose error, if
//! any, has a distinct [`ErrorKind`] per limit. A session ([`session`]) keeps one instance for
//! several turns, each with its own fuel, deadline and output cap.

mod engine;
mod instance;
mod outcome;
mod pool;
pub mod runtime;
mod session;
mod wasi;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

pub use self::engine::{MAX_WASM_STACK, POOL_SLOTS};
use self::instance::{EPOCH_TICK, Kept, RunLimits};
pub use self::outcome::{ErrorKind, ExecutionError, Image, Outcome, Rejected};
use self::pool::{FairQueue, Job, worker_lost};
use self::runtime::cpython::CPython;
use self::runtime::cpython::install::Installed;
use self::runtime::rustpython::RustPython;
pub use self::runtime::rustpython::{GUEST_SHA256, GUEST_WASM};
pub use self::runtime::{GuestInput, Runtime, RuntimeInfo};
use self::session::{Claim, Registry};
pub use self::session::{
    DEFAULT_MAX_OPEN, OpenSession, SessionConfig, SessionInfo, SessionStats, is_valid_node_name,
};
pub use self::wasi::CLOCK_RESOLUTION;

/// How deeply `data` may nest arrays and objects, its own object being the first level. The
/// guest parses the request document with serde_json's default limit of 128 nested arrays and
/// objects, refusing the 128th; the document's own object takes one level. Deeper `data` could
/// only fail inside the guest, so [`Sandbox::prepare`] refuses it before anything runs.
pub const MAX_DATA_DEPTH: usize = 126;

/// Limits applied to every execution of a runtime unless a key overrides its fuel; documents
/// (`GET /runtimes`, `GET /usage`) carry them as they are, the timeout in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Fuel (units of wasm work) per execution; 10^9 is roughly 0.1 s of CPU here.
    pub fuel: u64,
    /// Wall-clock time per execution, covering what fuel does not (sleeping, waiting).
    #[serde(rename = "timeout_ms", serialize_with = "whole_milliseconds")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    /// Linear memory per execution, in bytes.
    pub memory_bytes: usize,
    /// stdout + stderr per execution, in bytes; also the cap on the serialised `result`.
    pub output_bytes: usize,
    /// Code plus data per execution, in bytes.
    pub input_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            timeout: Duration::from_secs(5),
            memory_bytes: 256 << 20,
            output_bytes: 1 << 20,
            input_bytes: 1 << 20,
        }
    }
}

fn whole_milliseconds<S: serde::Serializer>(duration: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The CPython runtime's default memory limit: its snapshot's heap alone is ~130 MiB, and
/// numpy and pandas work on copies of their data.
pub const CPYTHON_MEMORY_BYTES: usize = 1 << 30;

/// How to build a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The default limits of every runtime (CPython's memory apart).
    pub limits: Limits,
    /// The CPython runtime's memory limit, in bytes: numpy and pandas need more than RustPython.
    pub cpython_memory_bytes: usize,
    /// Where optional runtimes are installed (`pyexec runtime install`); `None` serves the
    /// embedded RustPython alone.
    pub runtimes_dir: Option<PathBuf>,
    /// Worker threads, i.e. executions running at once.
    pub workers: usize,
    /// Executions that may wait for a worker; past that, [`Rejected::Overloaded`].
    pub queue: usize,
    /// Where the compiled guest is cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Use wasmtime's pooling allocator, which reuses memory slots and resets only the pages an
    /// execution dirtied, instead of mapping a fresh memory per execution. The default where
    /// the kernel can find dirtied pages (`PAGEMAP_SCAN`, Linux 6.7+): there an execution of
    /// the example takes no page faults and 0.27 ms instead of 0.81 (benches/sandbox.rs,
    /// `pooling` vs `on_demand`); elsewhere a slot is reset with `madvise` and pooling is no
    /// faster than on-demand.
    pub pooling: bool,
    /// How sessions are bounded.
    pub sessions: SessionConfig,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            limits: Limits::default(),
            cpython_memory_bytes: CPYTHON_MEMORY_BYTES,
            runtimes_dir: None,
            workers,
            queue: 64,
            cache_dir: None,
            pooling: wasmtime::PoolingAllocationConfig::is_pagemap_scan_available(),
            sessions: SessionConfig::default(),
        }
    }
}

/// One execution to run.
#[derive(Debug)]
pub struct Execution {
    /// Python source, run as `__main__`.
    pub code: String,
    /// JSON bound to the global `data` (`null` when absent).
    pub data: Option<Box<RawValue>>,
    /// Fuel for this execution instead of the default (a key's own limit).
    pub fuel: Option<u64>,
    /// Who runs it (an API key's id): waiting executions are served round-robin per tenant.
    /// `None` is one shared, anonymous tenant.
    pub tenant: Option<String>,
    /// The runtime to run it in, by name; `None` is the default (the first registered).
    pub runtime: Option<String>,
}

/// How busy the sandbox is, for metrics and load shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Executions running on a worker.
    pub running: usize,
    /// Executions waiting for a worker.
    pub queued: usize,
    /// Most executions running or queued at once.
    pub capacity: usize,
}

/// Cheap handle to the sandbox; clones share the workers and the compiled guest.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    /// By registration order; the first is the default.
    runtimes: Vec<Arc<dyn Runtime>>,
    capacity: usize,
    /// One permit per execution running or queued.
    permits: Arc<Semaphore>,
    queue: Arc<FairQueue>,
    running: Arc<AtomicUsize>,
    sessions: Arc<Registry>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: let the workers end, and return the sessions' memory.
        self.queue.close();
        self.sessions.close_all();
    }
}

impl Sandbox {
    /// Loads (or compiles and caches) the embedded guest and any installed runtime (see
    /// [`SandboxConfig::runtimes_dir`]) and starts the workers.
    pub fn new(config: SandboxConfig) -> anyhow::Result<Self> {
        Self::start(config, GUEST_WASM, GUEST_SHA256)
    }

    /// Like [`new`](Self::new), but runs `wasm`, another build of the guest speaking the same
    /// protocol, instead of the embedded snapshot. The benchmarks use it to compare with the
    /// unsnapshotted guest, which builds the interpreter in every execution.
    pub fn with_guest(config: SandboxConfig, wasm: &[u8]) -> anyhow::Result<Self> {
        let sha256 = hex::encode(Sha256::digest(wasm));
        Self::start(config, wasm, &sha256)
    }

    /// Whether `config`'s module cache holds the embedded guest compiled for `config`'s
    /// engine, so that [`new`](Self::new) starts in milliseconds instead of compiling.
    pub fn is_compiled(config: &SandboxConfig) -> anyhow::Result<bool> {
        let Some(cache_dir) = &config.cache_dir else {
            return Ok(false);
        };
        let (_, engine_key) = runtime::rustpython::engine(pool_slots(config))?;
        Ok(engine::cache_path(cache_dir, engine_key, GUEST_SHA256).exists())
    }

    /// Compiles the embedded guest into `config`'s module cache unless it is there already,
    /// as [`new`](Self::new) would, without starting anything; returns the cached file and
    /// whether it had to compile.
    pub fn compile_into_cache(config: &SandboxConfig) -> anyhow::Result<(PathBuf, bool)> {
        let cache_dir = config
            .cache_dir
            .as_deref()
            .context("no module cache directory to compile into")?;
        let (engine, engine_key) = runtime::rustpython::engine(pool_slots(config))?;
        engine::fill_cache(&engine, engine_key, GUEST_WASM, GUEST_SHA256, cache_dir)
    }

    fn start(config: SandboxConfig, wasm: &[u8], sha256: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(config.workers > 0, "the sandbox needs at least one worker");
        let started = Instant::now();
        let pooling = pool_slots(&config);
        if config.pooling && pooling.is_none() {
            tracing::info!(
                workers = config.workers,
                slots = engine::POOL_SLOTS,
                "more workers than pooled memory slots: allocating memory on demand"
            );
        }
        // A damaged installation stops the start before anything is compiled.
        let installed = (config.runtimes_dir.as_deref())
            .map(Installed::open)
            .transpose()?
            .flatten();
        let (engine, engine_key) = runtime::rustpython::engine(pooling)?;
        let module = engine::load_guest(
            &engine,
            engine_key,
            || Ok(wasm.into()),
            sha256,
            config.cache_dir.as_deref(),
        )?;
        // The registry: the first is the default.
        let mut runtimes: Vec<Arc<dyn Runtime>> =
            vec![Arc::new(RustPython::new(engine, &module, config.limits)?)];
        if let Some(installed) = installed {
            let limits = Limits {
                memory_bytes: config.cpython_memory_bytes,
                ..config.limits
            };
            let cpython = CPython::load(&installed, config.cache_dir.as_deref(), limits, pooling)
                .with_context(|| {
                format!("loading the CPython runtime in {}", installed.dir.display())
            })?;
            runtimes.push(Arc::new(cpython));
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "runtimes ready"
        );

        let weak_engines: Vec<_> = runtimes
            .iter()
            .map(|runtime| runtime.engine().weak())
            .collect();
        std::thread::Builder::new()
            .name("pyexec-epoch".into())
            .spawn(move || {
                // Ends once every runtime's engine is gone.
                loop {
                    let alive = weak_engines
                        .iter()
                        .filter_map(|weak| weak.upgrade())
                        .map(|engine| engine.increment_epoch())
                        .count();
                    if alive == 0 {
                        break;
                    }
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let queue = Arc::new(FairQueue::default());
        let running = Arc::new(AtomicUsize::new(0));
        for n in 0..config.workers {
            let (queue, running) = (queue.clone(), running.clone());
            std::thread::Builder::new()
                .name(format!("pyexec-worker-{n}"))
                // wasm runs on this thread's stack: room for the guest's plus the host's frames.
                .stack_size(MAX_WASM_STACK + (8 << 20))
                .spawn(move || pool::work(&queue, &running))?;
        }
        let capacity = config.workers + config.queue;
        let sessions = Arc::new(Registry::new(config.sessions));
        Registry::start_reaper(Arc::downgrade(&sessions))?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtimes,
                capacity,
                permits: Arc::new(Semaphore::new(capacity)),
                queue,
                running,
                sessions,
            }),
        })
    }

    /// The default runtime's default limits.
    pub fn limits(&self) -> Limits {
        self.default_runtime().info().limits
    }

    /// The runtimes there are, the default first.
    pub fn runtimes(&self) -> Vec<RuntimeInfo> {
        let runtimes = self.inner.runtimes.iter();
        runtimes.map(|runtime| runtime.info().clone()).collect()
    }

    /// The runtime used when an execution names none.
    pub fn default_runtime(&self) -> &dyn Runtime {
        &*self.inner.runtimes[0]
    }

    /// The runtime `name` names, or the default; refuses a name there is no runtime for.
    fn runtime(&self, name: Option<&str>) -> Result<&Arc<dyn Runtime>, Rejected> {
        let runtimes = &self.inner.runtimes;
        let Some(name) = name else {
            return Ok(&runtimes[0]);
        };
        runtimes
            .iter()
            .find(|runtime| runtime.info().name == name)
            .ok_or_else(|| Rejected::UnknownRuntime {
                requested: name.to_owned(),
                available: runtimes.iter().map(|r| r.info().name.clone()).collect(),
            })
    }

    /// Executions running and queued now.
    pub fn load(&self) -> Load {
        let in_flight = self.inner.capacity - self.inner.permits.available_permits();
        let running = self.inner.running.load(Ordering::Relaxed).min(in_flight);
        Load {
            running,
            queued: in_flight - running,
            capacity: self.inner.capacity,
        }
    }

    /// Checks an execution's runtime and input and takes a place for it in the queue. Refuses
    /// at once, without waiting, when the runtime is unknown, the input is too large or the
    /// sandbox is at capacity.
    pub fn prepare(&self, execution: Execution) -> Result<Prepared, Rejected> {
        let runtime = self.runtime(execution.runtime.as_deref())?.clone();
        let (request, limits) = check(&*runtime, &execution, None)?;
        let permit = self.place()?;
        Ok(Prepared {
            queue: self.inner.queue.clone(),
            tenant: execution.tenant.unwrap_or_default(),
            request,
            limits,
            permit,
            run: Run::Fresh(runtime),
        })
    }

    /// [`prepare`](Self::prepare)s and [`run`](Prepared::run)s one execution.
    pub async fn execute(&self, execution: Execution) -> Result<Outcome, Rejected> {
        Ok(self.prepare(execution)?.run().await)
    }

    /// A place in the queue, or [`Rejected::Overloaded`].
    fn place(&self) -> Result<OwnedSemaphorePermit, Rejected> {
        (self.inner.permits.clone().try_acquire_owned()).map_err(|_| Rejected::Overloaded {
            capacity: self.inner.capacity,
        })
    }

    /// Opens a session: a fresh instance of the runtime asked for, kept for `request.tenant`'s
    /// turns. Refuses an unknown runtime, a tenant at its cap ([`Rejected::SessionLimit`]) and
    /// a node at its cap or at capacity ([`Rejected::Overloaded`]).
    pub async fn open_session(&self, request: OpenSession) -> Result<SessionInfo, Rejected> {
        let runtime = self.runtime(request.runtime.as_deref())?.clone();
        let registry = self.inner.sessions.clone();
        let permit = self.place()?;
        let id = registry.reserve(&request, runtime.clone())?;
        let limits = run_limits(runtime.info().limits, None);
        let (done, started) = oneshot::channel();
        // The worker hands the instance to the registry itself: a caller that stops waiting
        // leaves an open session, which expires, rather than a place reserved for ever.
        let (registry_of_job, id_of_job) = (registry.clone(), id.clone());
        let start = move |_| {
            let instance = Kept::new(&*runtime, limits)
                .inspect_err(|error| {
                    let runtime = &runtime.info().name;
                    tracing::error!(%runtime, error = %error, "could not start a session's instance");
                })
                .ok();
            registry_of_job.started(&id_of_job, instance)
        };
        let job = Job::new(start, done, Arc::default(), permit);
        let overloaded = Rejected::Overloaded {
            capacity: self.inner.capacity,
        };
        if self.inner.queue.push(request.tenant, job).is_err() {
            registry.started(&id, None);
            return Err(overloaded);
        }
        started.await.ok().flatten().ok_or(overloaded)
    }

    /// `tenant`'s open sessions, oldest first.
    pub fn sessions(&self, tenant: &str) -> Vec<SessionInfo> {
        self.inner.sessions.list(tenant)
    }

    /// `tenant`'s open session `id`.
    pub fn session(&self, tenant: &str, id: &str) -> Result<SessionInfo, Rejected> {
        self.inner.sessions.get(tenant, id)
    }

    /// Closes `tenant`'s session `id` and returns its memory (at the end of its running turn,
    /// if one runs).
    pub fn close_session(&self, tenant: &str, id: &str) -> Result<(), Rejected> {
        self.inner.sessions.delete(tenant, id)
    }

    /// How many sessions are open and why others were closed.
    pub fn session_stats(&self) -> SessionStats {
        self.inner.sessions.stats()
    }

    /// The bounds sessions get.
    pub fn session_config(&self) -> &SessionConfig {
        self.inner.sessions.config()
    }

    /// Checks a turn of `tenant`'s session `id` (its runtime is the session's) and takes the
    /// session's instance and a place in the queue for it: [`Rejected::SessionNotFound`],
    /// [`Rejected::SessionBusy`] while another turn runs, or the checks of
    /// [`prepare`](Self::prepare). Dropping the turn unrun gives the instance back.
    pub fn prepare_turn(
        &self,
        id: &str,
        execution: Execution,
        mode: TurnMode,
    ) -> Result<Prepared, Rejected> {
        let tenant = execution.tenant.clone().unwrap_or_default();
        let claim = self.inner.sessions.claim(&tenant, id)?;
        let (request, limits) = check(&**claim.runtime(), &execution, Some(mode))?;
        let permit = self.place()?;
        Ok(Prepared {
            queue: self.inner.queue.clone(),
            tenant,
            request,
            limits,
            permit,
            run: Run::Turn(claim),
        })
    }
}

/// How a session's turn is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnMode {
    /// As a module, like an execution: `result` is the reply's result.
    Module,
    /// As Python's interactive prompt does: one statement, an expression's value printed.
    Interactive,
}

/// The request `runtime`'s guest gets for `execution` (a session's turn when `turn` says how
/// to compile it) and the limits it runs under, unless its input is too large or its data
/// nests too deeply.
fn check(
    runtime: &dyn Runtime,
    execution: &Execution,
    turn: Option<TurnMode>,
) -> Result<(Vec<u8>, RunLimits), Rejected> {
    let limits = runtime.info().limits;
    let input = execution.code.len() + execution.data.as_ref().map_or(0, |d| d.get().len());
    if input > limits.input_bytes {
        return Err(Rejected::InputTooLarge {
            size: input,
            limit: limits.input_bytes,
        });
    }
    if execution
        .data
        .as_ref()
        .is_some_and(|data| nests_deeper_than(data.get(), MAX_DATA_DEPTH))
    {
        return Err(Rejected::DataTooDeep {
            limit: MAX_DATA_DEPTH,
        });
    }
    let request = runtime.encode(GuestInput {
        code: &execution.code,
        data: execution.data.as_deref(),
        output_limit: limits.output_bytes,
        session: turn.is_some(),
        interactive: turn == Some(TurnMode::Interactive),
    });
    Ok((request, run_limits(limits, execution.fuel)))
}

/// The limits of one run under a runtime's `limits`, with `fuel` instead of its default.
fn run_limits(limits: Limits, fuel: Option<u64>) -> RunLimits {
    RunLimits {
        fuel: fuel.unwrap_or(limits.fuel),
        timeout: limits.timeout,
        memory_bytes: limits.memory_bytes,
        output_bytes: limits.output_bytes,
    }
}

/// An execution, or a session's turn, that passed its checks and holds a place in the queue;
/// dropping it unrun gives the place (and a session's instance) back.
pub struct Prepared {
    queue: Arc<FairQueue>,
    tenant: String,
    request: Vec<u8>,
    limits: RunLimits,
    permit: OwnedSemaphorePermit,
    run: Run,
}

/// Where a prepared run runs.
enum Run {
    /// A fresh instance of the runtime.
    Fresh(Arc<dyn Runtime>),
    /// A session's instance.
    Turn(Claim),
}

impl Prepared {
    /// Runs on the next free worker. Dropping the returned future cancels an execution; a
    /// session's turn runs on (within its limits), so that the session stays usable.
    pub async fn run(self) -> Outcome {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (done, outcome) = oneshot::channel();
        let (request, limits) = (self.request, self.limits);
        let (runtime, job) = match self.run {
            Run::Fresh(runtime) => {
                let name = runtime.info().name.clone();
                let work = move |cancelled| instance::run(&*runtime, request, limits, cancelled);
                (name, Job::new(work, done, cancelled.clone(), self.permit))
            }
            Run::Turn(claim) => {
                let name = claim.runtime().info().name.clone();
                let work = move |cancelled| claim.turn(request, limits, cancelled);
                (name, Job::new(work, done, Arc::default(), self.permit))
            }
        };
        if self.queue.push(self.tenant, job).is_err() {
            return worker_lost(&runtime);
        }
        let cancel_on_drop = CancelOnDrop(cancelled);
        let outcome = outcome.await.unwrap_or_else(|_| worker_lost(&runtime));
        std::mem::forget(cancel_on_drop);
        outcome
    }
}

/// The pooling allocator's slots for `config`, or `None` for memory mapped on demand: each
/// worker holds a slot while it runs and each open session one while it lives, so with more
/// workers than [`engine::POOL_SLOTS`] instantiation would fail under load.
fn pool_slots(config: &SandboxConfig) -> Option<usize> {
    (config.pooling && config.workers <= engine::POOL_SLOTS)
        .then_some(engine::POOL_SLOTS + config.sessions.max_open)
}

/// Whether the (valid) JSON text `json` nests arrays and objects more than `limit` levels deep.
fn nests_deeper_than(json: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut bytes = json.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'"' => {
                while let Some(byte) = bytes.next() {
                    match byte {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    false
}

/// Flags the execution as cancelled when the caller stops waiting for it.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::nests_deeper_than;

    #[test]
    fn nesting_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert!(!nests_deeper_than(r#"{"a": [1, {"b": []}]}"#, 4));
        assert!(nests_deeper_than(r#"{"a": [1, {"b": []}]}"#, 3));
        assert!(!nests_deeper_than(r#"{"a": "[[[{{{", "b": "\"[[[\\"}"#, 1));
        assert!(nests_deeper_than(r#"{"a": "\\", "b": [{}]}"#, 2));
        assert!(!nests_deeper_than(r#"[[]] "#, 2));
    }
}
