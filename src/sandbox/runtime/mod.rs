//! The seam between the shared execution machinery and one guest interpreter: what a runtime
//! supplies (its engine, its linked module, how a request goes in and how the run starts) and
//! how it describes itself. The Store, fuel, deadline, memory limiter, output capture and the
//! classification of how a run ended stay in `instance.rs`, shared by every runtime; a runtime
//! may not touch the worker pool or the queue.
//!
//! Adding a runtime is a module implementing [`Runtime`] and one registration in
//! `Sandbox::start`.

pub mod rustpython;

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use wasmtime::{Engine, Instance, InstancePre, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::Limits;
use super::instance::ExecutionState;
use super::wasi::OutputCapture;

/// One execution's input, as a runtime encodes it for its guest.
pub struct GuestInput<'a> {
    /// Python source, run as `__main__`.
    pub code: &'a str,
    /// JSON bound to the global `data`.
    pub data: Option<&'a RawValue>,
    /// The cap on the serialised `result`.
    pub output_limit: usize,
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

    /// The request as the runtime hands it to the guest, prepared before the job is queued.
    fn encode(&self, input: GuestInput<'_>) -> Vec<u8>;

    /// The WASI context of one execution: `request` (from [`encode`](Self::encode)) wherever
    /// the guest reads it, stdout and stderr into `output`, plus any files or variables the
    /// runtime's guest needs.
    fn wasi(&self, request: &[u8], output: &OutputCapture) -> WasiP1Ctx;

    /// Starts the run on a fresh instance; it ends with the guest's reply
    /// ([`ExecutionState::reply`]) as a `Stop::Replied` trap, or with any other error, which the
    /// shared code classifies.
    fn start(
        &self,
        store: &mut Store<ExecutionState>,
        instance: Instance,
        request: &[u8],
    ) -> wasmtime::Result<()>;
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
    pub limits: LimitsInfo,
}

/// A package installed in a runtime.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// [`Limits`] as documents carry them.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct LimitsInfo {
    /// Fuel (units of wasm work) per execution.
    pub fuel: u64,
    /// Wall-clock time per execution, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory per execution, in bytes.
    pub memory_bytes: usize,
    /// stdout + stderr per execution, in bytes.
    pub output_bytes: usize,
    /// Code plus data per execution, in bytes.
    pub input_bytes: usize,
}

impl From<Limits> for LimitsInfo {
    fn from(limits: Limits) -> Self {
        Self {
            fuel: limits.fuel,
            timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_bytes: limits.memory_bytes,
            output_bytes: limits.output_bytes,
            input_bytes: limits.input_bytes,
        }
    }
}

impl LimitsInfo {
    /// The limits these describe.
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            timeout: Duration::from_millis(self.timeout_ms),
            memory_bytes: self.memory_bytes,
            output_bytes: self.output_bytes,
            input_bytes: self.input_bytes,
        }
    }
}
