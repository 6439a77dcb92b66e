//! The embedded RustPython guest (assets/python.wasm): its engine, its one import of its own
//! (`pyexec.reply`, guest/src/host.rs), the request document on its stdin and its `run` export
//! (once per instance, or once per turn of a session).
//! What every runtime shares (the Store, limits, classification) is not here.

use wasmtime::{Caller, Engine, Instance, InstancePre, Linker, Module, ModuleExport, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::{Runtime, RuntimeInfo, probe, read_reply};
use crate::sandbox::instance::ExecutionState;
use crate::sandbox::wasi::{self, OutputCapture, RequestInput};
use crate::sandbox::{Limits, engine};

/// The pre-initialised guest, embedded so that `pyexec` is one self-contained file.
pub static GUEST_WASM: &[u8] = include_bytes!("../../../assets/python.wasm");

/// `sha256sum` line of [`GUEST_WASM`], committed beside it; identifies the module in the cache
/// without hashing 40 MB at every start.
pub static GUEST_SHA256: &str = include_str!("../../../assets/python.wasm.sha256");

/// The name requests select this runtime by.
pub const NAME: &str = "rustpython";

/// The engine for this guest, with a pooling allocator of `pool_slots` instances or memory
/// mapped on demand, and the cache key of what it compiles. The guest is plain wasm32-wasip1
/// Rust: every proposal it does not use is off.
pub fn engine(pool_slots: Option<usize>) -> anyhow::Result<(Engine, u64)> {
    let mut config = engine::config();
    config
        .wasm_simd(false)
        .wasm_relaxed_simd(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_tail_call(false)
        .wasm_gc(false)
        .wasm_exceptions(false)
        .wasm_stack_switching(false)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false)
        .wasm_component_model(false);
    engine::build(config, pool_slots.map(engine::pool))
}

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
        runtime.info.complete(guest);
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

    fn wasi(&self, input: &RequestInput, output: &OutputCapture) -> wasmtime::Result<WasiP1Ctx> {
        Ok(wasi::context(input, output))
    }

    fn start(&self, store: &mut Store<ExecutionState>, instance: Instance) -> wasmtime::Result<()> {
        let run = instance
            .get_module_export(&mut *store, &self.start)
            .and_then(|export| export.into_func())
            .ok_or_else(|| wasmtime::format_err!("`run` is not a function"))?;
        run.typed::<(), ()>(&*store)?.call(store, ())
    }
}

/// The guest's one import of its own, `pyexec.reply` (see guest/src/host.rs).
fn add_protocol(linker: &mut Linker<ExecutionState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "pyexec",
        "reply",
        |mut caller: Caller<'_, ExecutionState>, ptr: u32, len: u32| -> wasmtime::Result<()> {
            let reply = read_reply(&mut caller, ptr, len)?;
            caller.data_mut().replied(reply)
        },
    )?;
    Ok(())
}
