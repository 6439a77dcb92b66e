//! The seam between the shared execution machinery and one guest interpreter: what a runtime
//! supplies (its engine, its linked module, how a request goes in and how the run starts) and
//! how it describes itself. The Store, fuel, deadline, memory limiter, output capture and the
//! classification of how a run ended stay in `instance.rs`, shared by every runtime; a runtime
//! may not touch the worker pool or the queue.
//!
//! Adding a runtime is a module implementing [`Runtime`] and one registration in
//! `Sandbox::start`.

pub mod cpython;
pub mod rustpython;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use wasmtime::{Caller, Engine, Instance, InstancePre, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::Limits;
use super::instance::{self, ExecutionState, RunLimits, Stop};
use super::wasi::{OutputCapture, RequestInput};

/// One execution's input, as a runtime encodes it for its guest.
pub struct GuestInput<'a> {
    /// Python source, run as `__main__`.
    pub code: &'a str,
    /// JSON bound to the global `data`.
    pub data: Option<&'a RawValue>,
    /// The cap on the serialised `result`.
    pub output_limit: usize,
    /// A session's turn: run in the globals its earlier turns left.
    pub session: bool,
    /// Compile as Python's interactive prompt does: one statement, an expression's value
    /// printed (`pyexec repl`).
    pub interactive: bool,
}

/// A guest interpreter the sandbox can run code in. Built once; shared by every worker.
pub trait Runtime: Send + Sync {
    /// What the runtime is, for `GET /runtimes` and the registry.
    fn info(&self) -> &RuntimeInfo;

    /// The engine the runtime's module is compiled for (its own configuration: features,
    /// fuel, epochs); the sandbox advances its epoch.
    fn engine(&self) -> &Engine;

    /// The linked module, with the runtime's own imports (WASI, the reply channel).
    fn instance_pre(&self) -> &InstancePre<ExecutionState>;

    /// The request as the runtime hands it to the guest, prepared before the job is queued:
    /// unless a runtime says otherwise, the request document both guests read from stdin.
    fn encode(&self, input: GuestInput<'_>) -> Vec<u8> {
        encode_request(input)
    }

    /// The WASI context of one execution or session: stdin from `input` (which holds the
    /// request from [`encode`](Self::encode)), stdout and stderr into `output`, plus any files
    /// or variables the runtime's guest needs.
    fn wasi(&self, input: &RequestInput, output: &OutputCapture) -> wasmtime::Result<WasiP1Ctx>;

    /// Runs the request on `instance` (fresh, or a session's): it ends with the guest's reply
    /// ([`ExecutionState::replied`]) as a `Stop::Replied` trap, or, in a session, by returning
    /// after it; or with any other error, which the shared code classifies.
    fn start(&self, store: &mut Store<ExecutionState>, instance: Instance) -> wasmtime::Result<()>;
}

/// The request document both guests read from stdin (guest/src/lib.rs, cpython/driver.py).
#[derive(Serialize)]
struct GuestRequest<'a> {
    code: &'a str,
    data: Option<&'a RawValue>,
    output_limit: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    session: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    interactive: bool,
}

/// `input` as the request document both guests read.
fn encode_request(input: GuestInput<'_>) -> Vec<u8> {
    let request = GuestRequest {
        code: input.code,
        data: input.data,
        output_limit: input.output_limit,
        session: input.session,
        interactive: input.interactive,
    };
    serde_json::to_vec(&request).expect("a guest request serialises")
}

/// The reply a guest hands its import: `len` bytes at `ptr` in its memory. A reply larger than
/// any the guest can make (its result is capped at the output limit; the rest is small) is
/// [`Stop::OutputLimit`].
fn read_reply(
    caller: &mut Caller<'_, ExecutionState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<Vec<u8>> {
    if len as usize > caller.data().output_limit() + 64 * 1024 {
        return Err(Stop::OutputLimit.into());
    }
    let memory = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))?;
    let mut reply = vec![0; len as usize];
    memory.read(&*caller, ptr as usize, &mut reply)?;
    Ok(reply)
}

/// What a runtime is and offers, as `GET /runtimes` describes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuntimeInfo {
    /// The name a request selects it by (`"runtime"`).
    #[schema(example = "rustpython")]
    pub name: String,
    /// The Python language version the interpreter implements.
    #[schema(example = "3.14.0")]
    pub python_version: String,
    /// One line on what it is.
    pub description: String,
    /// Modules imported before the code runs (importing them costs nothing).
    pub preloaded: Vec<String>,
    /// Third-party packages installed beside the standard library.
    pub packages: Vec<Package>,
    /// The limits an execution gets unless a key overrides its fuel.
    pub limits: Limits,
}

impl RuntimeInfo {
    /// Completes the description with what the runtime's interpreter says of itself.
    fn complete(&mut self, probe: Probe) {
        self.python_version = probe.python_version;
        self.preloaded = probe.preloaded;
    }
}

/// A package installed in a runtime.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// What a runtime's interpreter says of itself.
#[derive(Deserialize)]
pub struct Probe {
    pub python_version: String,
    /// Public top-level modules already imported when user code starts: what the snapshot
    /// imported.
    pub preloaded: Vec<String>,
}

/// Asks `runtime`'s interpreter, in one execution, for its version and the modules its snapshot
/// imported, so `GET /runtimes` reports the guest as built rather than a copy kept by hand.
/// The execution also builds the module's copy-on-write memory image (~40 ms), paid here, not
/// in the first client's request. It runs under the default limits, not the configured ones,
/// which may be too small for it (`pyexec run --fuel 1000000`). On a thread of its own:
/// reading stdin through WASI must not happen inside an async runtime's context, which the
/// caller may have entered.
pub fn probe(runtime: &dyn Runtime) -> anyhow::Result<Probe> {
    const PROBE: &str = "import sys\n\
        result = {'python_version': '%d.%d.%d' % sys.version_info[:3],\n\
        'preloaded': sorted(m for m in sys.modules if not m.startswith('_') and '.' not in m)}";
    const OUTPUT_LIMIT: usize = 64 << 10;
    let request = runtime.encode(GuestInput {
        code: PROBE,
        data: None,
        output_limit: OUTPUT_LIMIT,
        session: false,
        interactive: false,
    });
    let limits = RunLimits {
        fuel: Limits::default().fuel,
        timeout: Duration::from_secs(10),
        memory_bytes: Limits::default().memory_bytes,
        output_bytes: OUTPUT_LIMIT,
    };
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| instance::run(runtime, request, limits, Arc::default()))
            .join()
            .map_err(|_| anyhow::anyhow!("the probe run panicked"))
    })?;
    let name = &runtime.info().name;
    let result = outcome
        .result
        .map_err(|err| anyhow::anyhow!("the {name} runtime failed its probe run: {err:?}"))?;
    serde_json::from_str(result.get())
        .map_err(|err| anyhow::anyhow!("the {name} runtime's probe answered {result}: {err}"))
}
