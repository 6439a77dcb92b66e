//! One run, whatever the runtime: a `Store` and instance (fresh for an execution, kept for a
//! session's turns), the run's limits (fuel, epoch deadline, memory limiter, output capture),
//! and the classification of how it ended. What is particular to a guest (its imports, its
//! request, its start) comes from its `Runtime`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::outcome::{ErrorKind, ExecutionError, Image, Outcome};
use super::runtime::Runtime;
use super::wasi::{OutputCapture, RequestInput};

/// How often the engine's epoch advances; deadlines and cancellation are checked this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of linear-memory tables may hold; the guest's one table never grows.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Why the host stopped an execution. Travels through wasmtime as the error of a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The guest delivered its reply; nothing may run after it (but a session's instance,
    /// whose reply returns to the guest).
    #[error("the guest replied")]
    Replied,
    /// The wall-clock deadline passed.
    #[error("the wall-clock deadline passed")]
    Timeout,
    /// The caller gave up on the execution (e.g. the client disconnected).
    #[error("the execution was cancelled")]
    Cancelled,
    /// The guest asked for more linear memory than its limit.
    #[error("the memory limit was reached")]
    MemoryLimit,
    /// stdout + stderr, or the reply, outgrew the output limit.
    #[error("the output limit was reached")]
    OutputLimit,
}

/// The limits of one execution.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub fuel: u64,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
}

/// The `T` of each execution's `Store`.
pub struct ExecutionState {
    wasi: WasiP1Ctx,
    /// The reply document, once the guest has sent it.
    reply: Option<Vec<u8>>,
    limits: RunLimits,
    deadline: Instant,
    cancelled: Arc<AtomicBool>,
    /// Whether the instance outlives the run (a session's): its reply returns to the guest,
    /// whose turn then returns, instead of stopping it.
    lives_on: bool,
}

impl ExecutionState {
    /// The state of a run under `limits` from now, seeing `wasi`, until `cancelled`; of an
    /// instance that runs again (a session's) when `lives_on`.
    pub fn new(
        wasi: WasiP1Ctx,
        limits: RunLimits,
        cancelled: Arc<AtomicBool>,
        lives_on: bool,
    ) -> Self {
        Self {
            wasi,
            reply: None,
            limits,
            deadline: Instant::now() + limits.timeout,
            cancelled,
            lives_on,
        }
    }

    /// Starts another run of the same instance (a session's next turn) under `limits` from now.
    fn begin(&mut self, limits: RunLimits, cancelled: Arc<AtomicBool>) {
        self.reply = None;
        self.limits = limits;
        self.deadline = Instant::now() + limits.timeout;
        self.cancelled = cancelled;
    }

    /// Whether the guest has sent its reply in this run.
    pub fn has_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Takes the guest's reply document, if it sent one.
    pub fn take_reply(&mut self) -> Option<Vec<u8>> {
        self.reply.take()
    }

    /// The execution's WASI context, for a runtime's linker.
    pub fn wasi(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }

    /// The output limit, which also caps a reply.
    pub fn output_limit(&self) -> usize {
        self.limits.output_bytes
    }

    /// Keeps the guest's reply document (a later one of the same run replaces it) and ends the
    /// run with [`Stop::Replied`], unless the instance lives on: then the guest goes on, to
    /// return from its turn.
    pub fn replied(&mut self, reply: Vec<u8>) -> wasmtime::Result<()> {
        self.reply = Some(reply);
        if self.lives_on {
            Ok(())
        } else {
            Err(Stop::Replied.into())
        }
    }

    /// Time since the execution started, as its monotonic clock counts it.
    pub fn elapsed(&self) -> Duration {
        (Instant::now() + self.limits.timeout).saturating_duration_since(self.deadline)
    }

    /// Whether the execution may go on: not past its deadline, not cancelled.
    fn check(&self) -> Result<(), Stop> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(Stop::Timeout)
        } else {
            Ok(())
        }
    }

    /// Blocks the calling (worker) thread until `wake`, but never past the deadline or a
    /// cancellation.
    pub fn sleep_until(&self, wake: Instant) -> Result<(), Stop> {
        loop {
            let now = Instant::now();
            if now >= wake {
                return Ok(());
            }
            self.check()?;
            let until = wake.min(self.deadline).min(now + EPOCH_TICK);
            std::thread::sleep(until.saturating_duration_since(now));
        }
    }
}

impl ResourceLimiter for ExecutionState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            return Err(Stop::MemoryLimit.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Runs `request` (from the runtime's `encode`) in a fresh instance of `runtime`.
pub fn run(
    runtime: &dyn Runtime,
    request: Vec<u8>,
    limits: RunLimits,
    cancelled: Arc<AtomicBool>,
) -> Outcome {
    let started = Instant::now();
    let output = OutputCapture::new(limits.output_bytes);
    let input = RequestInput::new(request);
    let mut store = match new_store(runtime, &input, &output, limits, cancelled, false) {
        Ok(store) => store,
        Err(error) => return failed_to_start(runtime, &error, started),
    };
    let ended = runtime
        .instance_pre()
        .instantiate(&mut store)
        .and_then(|instance| runtime.start(&mut store, instance));
    let (outcome, _) = finish(runtime, &mut store, ended, &output, limits, started);
    outcome
}

/// An instance of `runtime` kept for a session's turns, with the stdin and output its turns
/// share.
pub struct Kept {
    store: Store<ExecutionState>,
    instance: wasmtime::Instance,
    input: RequestInput,
    output: OutputCapture,
}

impl Kept {
    /// Instantiates `runtime` for a session whose turns get `limits`' memory.
    pub fn new(runtime: &dyn Runtime, limits: RunLimits) -> wasmtime::Result<Self> {
        let input = RequestInput::default();
        let output = OutputCapture::new(limits.output_bytes);
        let mut store = new_store(runtime, &input, &output, limits, Arc::default(), true)?;
        let instance = runtime.instance_pre().instantiate(&mut store)?;
        Ok(Self {
            store,
            instance,
            input,
            output,
        })
    }

    /// Runs `request` as the next turn; returns its outcome and whether the instance may run
    /// another (the turn ended with the guest's reply, not stopped by a limit or a failure).
    pub fn turn(
        &mut self,
        runtime: &dyn Runtime,
        request: Vec<u8>,
        limits: RunLimits,
        cancelled: Arc<AtomicBool>,
    ) -> (Outcome, bool) {
        let started = Instant::now();
        self.input.refill(request);
        self.output.restart(limits.output_bytes);
        self.store.data_mut().begin(limits, cancelled);
        let ended = arm(&mut self.store, limits.fuel)
            .and_then(|()| runtime.start(&mut self.store, self.instance));
        finish(
            runtime,
            &mut self.store,
            ended,
            &self.output,
            limits,
            started,
        )
    }
}

/// A store for `runtime` with the memory limiter and the deadline check, its fuel set for a
/// run under `limits`; stdin from `input`, stdout and stderr into `output`.
fn new_store(
    runtime: &dyn Runtime,
    input: &RequestInput,
    output: &OutputCapture,
    limits: RunLimits,
    cancelled: Arc<AtomicBool>,
    lives_on: bool,
) -> wasmtime::Result<Store<ExecutionState>> {
    let wasi = runtime.wasi(input, output)?;
    let state = ExecutionState::new(wasi, limits, cancelled, lives_on);
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|state| state);
    store.epoch_deadline_callback(|context| {
        context.data().check()?;
        Ok(UpdateDeadline::Continue(1))
    });
    arm(&mut store, limits.fuel)?;
    Ok(store)
}

/// Gives a run its fuel and checks its deadline from the next epoch tick on.
fn arm(store: &mut Store<ExecutionState>, fuel: u64) -> wasmtime::Result<()> {
    store.set_fuel(fuel)?;
    store.set_epoch_deadline(1);
    Ok(())
}

/// The outcome of a run that `ended` as it did, and whether its instance may run again.
fn finish(
    runtime: &dyn Runtime,
    store: &mut Store<ExecutionState>,
    ended: wasmtime::Result<()>,
    output: &OutputCapture,
    limits: RunLimits,
    started: Instant,
) -> (Outcome, bool) {
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let reply = store.data_mut().take_reply();
    let duration = started.elapsed();
    let returned = ended.is_ok();
    let mut images = Vec::new();
    let result = classify(ended, reply, &limits, &mut images);
    let internal = matches!(&result, Err(error) if error.kind == ErrorKind::Internal);
    // A sandbox failure may have left its own text (a trap, a panic) in the output: the
    // client gets `internal` and nothing more.
    let (stdout, stderr) = output.take();
    let (stdout, stderr) = if internal {
        tracing::debug!(%stdout, %stderr, "what the failed guest wrote");
        Default::default()
    } else {
        (stdout, stderr)
    };
    let outcome = Outcome {
        runtime: runtime.info().name.clone(),
        result,
        images,
        stdout,
        stderr,
        fuel_used,
        duration,
        session_closed: false,
    };
    (outcome, returned && !internal)
}

/// The outcome of an execution whose guest could not be given its world (a runtime's
/// directory gone): the sandbox's failure, logged, answered as `internal`.
fn failed_to_start(runtime: &dyn Runtime, error: &wasmtime::Error, started: Instant) -> Outcome {
    let name = &runtime.info().name;
    tracing::error!(runtime = %name, error = %error, "could not set up the guest's WASI context");
    Outcome::internal(name, started.elapsed())
}

/// The guest's reply document.
#[derive(Deserialize)]
struct Reply {
    ok: bool,
    result: Option<Box<RawValue>>,
    error: Option<ExecutionError>,
    /// The text of a panic in the guest (with its source location): for the log only.
    panic: Option<String>,
    /// The figures the code left open, with a result.
    #[serde(default)]
    images: Vec<Image>,
}

/// Maps how the guest's `run` ended to the execution's result, and the images of a reply to
/// `images`.
fn classify(
    ended: wasmtime::Result<()>,
    reply: Option<Vec<u8>>,
    limits: &RunLimits,
    images: &mut Vec<Image>,
) -> Result<Box<RawValue>, ExecutionError> {
    let error = match ended {
        // A session's guest returns from its turn after replying.
        Ok(()) if reply.is_some() => {
            return parse_reply(reply.as_deref().unwrap_or_default(), images);
        }
        Ok(()) => wasmtime::format_err!("the guest returned without replying"),
        Err(error) => error,
    };
    if let Some(stop) = error.downcast_ref::<Stop>() {
        return match stop {
            Stop::Replied => parse_reply(reply.as_deref().unwrap_or_default(), images),
            Stop::Timeout | Stop::Cancelled => Err(ExecutionError::limit(
                ErrorKind::Timeout,
                "TimeoutError",
                format!(
                    "the execution ran past its wall-clock limit of {}",
                    format_duration(limits.timeout)
                ),
            )),
            Stop::MemoryLimit => Err(ExecutionError::limit(
                ErrorKind::MemoryLimit,
                "MemoryError",
                format!(
                    "the execution needed more than its memory limit of {} MiB",
                    limits.memory_bytes >> 20
                ),
            )),
            Stop::OutputLimit => Err(ExecutionError::limit(
                ErrorKind::OutputLimit,
                "OutputLimitExceeded",
                format!(
                    "the execution wrote more than its output limit of {} bytes",
                    limits.output_bytes
                ),
            )),
        };
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => {
                return Err(ExecutionError::limit(
                    ErrorKind::FuelExhausted,
                    "FuelExhausted",
                    format!(
                        "the execution used up its fuel ({} units of CPU work)",
                        limits.fuel
                    ),
                ));
            }
            Trap::StackOverflow => {
                return Err(ExecutionError::limit(
                    ErrorKind::StackOverflow,
                    "StackOverflow",
                    "the execution exhausted the interpreter's stack (recursion too deep)".into(),
                ));
            }
            _ => {}
        }
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Err(ExecutionError::limit(
            ErrorKind::ProcessExit,
            "ProcessExit",
            format!(
                "the code ended the interpreter with exit status {} before it finished",
                exit.0
            ),
        ));
    }
    // User code can provoke this (crafted bytecode panics RustPython), so it is a warning
    // without the long wasm backtrace, which goes to the debug log.
    let trap = error
        .downcast_ref::<Trap>()
        .map_or_else(|| error.to_string(), |trap| trap.to_string());
    tracing::warn!(%trap, "the guest failed outside any limit; answered as internal");
    tracing::debug!(error = ?error, "guest failure");
    Err(ExecutionError::internal())
}

/// Whether `reply` is a reply document a guest makes: a result, or an error of a kind the guest
/// decides (an exception, a syntax error, an unserialisable or too large result, `MemoryError`).
pub fn is_guest_reply(reply: &[u8]) -> bool {
    match serde_json::from_slice::<Reply>(reply) {
        Ok(Reply {
            ok: true,
            panic: None,
            ..
        }) => true,
        Ok(Reply {
            ok: false,
            error: Some(error),
            panic: None,
            ..
        }) => matches!(
            error.kind,
            ErrorKind::PythonException
                | ErrorKind::SyntaxError
                | ErrorKind::ResultNotSerializable
                | ErrorKind::SystemExit
                | ErrorKind::MemoryLimit
                | ErrorKind::OutputLimit
        ),
        _ => false,
    }
}

fn parse_reply(reply: &[u8], images: &mut Vec<Image>) -> Result<Box<RawValue>, ExecutionError> {
    match serde_json::from_slice::<Reply>(reply) {
        Ok(Reply {
            panic: Some(panic), ..
        }) => {
            tracing::warn!(%panic, "the guest panicked; answered as internal");
            Err(ExecutionError::internal())
        }
        // serde reads a `null` result as `None`.
        Ok(Reply {
            ok: true,
            result,
            images: drawn,
            ..
        }) => {
            *images = drawn;
            Ok(result.unwrap_or_else(|| RawValue::NULL.to_owned()))
        }
        Ok(Reply {
            ok: false,
            error: Some(error),
            ..
        }) => Err(error),
        Ok(_) => {
            tracing::error!("guest reply has neither a result nor an error");
            Err(ExecutionError::internal())
        }
        Err(err) => {
            tracing::error!(error = %err, "guest reply is not valid");
            Err(ExecutionError::internal())
        }
    }
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}
