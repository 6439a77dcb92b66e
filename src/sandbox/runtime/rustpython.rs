//! The embedded RustPython guest (assets/python.wasm): its engine, its one import of its own
//! (`pyexec.reply`, guest/src/host.rs), the request document on its stdin and its `run` export.
//! What every runtime shares (the Store, limits, classification) is not here.

use serde::Serialize;
use serde_json::value::RawValue;
use wasmtime::{Caller, Engine, Instance, InstancePre, Linker, Module, ModuleExport, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::{GuestInput, Runtime, RuntimeInfo, probe};
use crate::sandbox::Limits;
use crate::sandbox::instance::{ExecutionState, Stop};
use crate::sandbox::wasi::{self, OutputCapture};

/// The pre-initialised guest, embedded so that `pyexec` is one self-contained file.
pub static GUEST_WASM: &[u8] = include_bytes!("../../../assets/python.wasm");

/// `sha256sum` line of [`GUEST_WASM`], committed beside it; identifies the module in the cache
/// without hashing 40 MB at every start.
pub static GUEST_SHA256: &str = include_str!("../../../assets/python.wasm.sha256");

/// The name requests select this runtime by.
pub const NAME: &str = "rustpython";

/// The guest, linked and ready to instantiate.
pub struct RustPython {
    info: RuntimeInfo,
    engine: Engine,
    pre: InstancePre<ExecutionState>,
    start: ModuleExport,
}

impl RustPython {
    /// Links `module` (compiled for `engine`); executions get `limits` by default.
    pub fn new(engine: Engine, module: &Module, limits: Limits) -> anyhow::Result<Self> {
        let mut linker: Linker<ExecutionState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state| state.wasi())?;
        wasi::add_poll_oneoff(&mut linker)?;
        add_protocol(&mut linker)?;
        let pre = linker.instantiate_pre(module)?;
        let start = module
            .get_export_index("run")
            .ok_or_else(|| anyhow::anyhow!("the guest module has no `run` export"))?;
        let mut runtime = Self {
            info: RuntimeInfo {
                name: NAME.into(),
                python_version: String::new(),
                description: "RustPython 0.6, a Python interpreter written in Rust, \
                              pre-initialised in a wasm snapshot; the standard library only"
                    .into(),
                preloaded: Vec::new(),
                packages: Vec::new(),
                limits,
            },
            engine,
            pre,
            start,
        };
        let guest = probe(&runtime)?;
        runtime.info.python_version = guest.python_version;
        runtime.info.preloaded = guest.preloaded;
        Ok(runtime)
    }
}

impl Runtime for RustPython {
    fn info(&self) -> &RuntimeInfo {
        &self.info
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn instance_pre(&self) -> &InstancePre<ExecutionState> {
        &self.pre
    }

    fn encode(&self, input: GuestInput<'_>) -> Vec<u8> {
        let request = GuestRequest {
            code: input.code,
            data: input.data,
            output_limit: input.output_limit,
        };
        serde_json::to_vec(&request).expect("a guest request serialises")
    }

    fn wasi(&self, request: Vec<u8>, output: &OutputCapture) -> WasiP1Ctx {
        wasi::context(request, output)
    }

    fn start(&self, store: &mut Store<ExecutionState>, instance: Instance) -> wasmtime::Result<()> {
        let run = instance
            .get_module_export(&mut *store, &self.start)
            .and_then(|export| export.into_func())
            .ok_or_else(|| wasmtime::format_err!("`run` is not a function"))?;
        run.typed::<(), ()>(&*store)?.call(store, ())
    }
}

/// The request document of the guest protocol (guest/src/lib.rs), written to the guest's stdin.
#[derive(Serialize)]
struct GuestRequest<'a> {
    code: &'a str,
    data: Option<&'a RawValue>,
    output_limit: usize,
}

/// The guest's one import of its own, `pyexec.reply` (see guest/src/host.rs).
fn add_protocol(linker: &mut Linker<ExecutionState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "pyexec",
        "reply",
        |mut caller: Caller<'_, ExecutionState>, ptr: u32, len: u32| -> wasmtime::Result<()> {
            // The guest caps the result at the output limit; the rest of the reply is small.
            if len as usize > caller.data().output_limit() + 64 * 1024 {
                return Err(Stop::OutputLimit.into());
            }
            let memory = caller
                .get_export("memory")
                .and_then(|export| export.into_memory())
                .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))?;
            let mut reply = vec![0; len as usize];
            memory.read(&caller, ptr as usize, &mut reply)?;
            Err(caller.data_mut().replied(reply).into())
        },
    )?;
    Ok(())
}
