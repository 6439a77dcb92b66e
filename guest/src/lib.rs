//! The pyexec guest: a RustPython interpreter for wasm32-wasip1 that runs a request and
//! replies; once per instance, or once per turn of a session.
//!
//! # Protocol
//! The host writes the request (`{"code": str, "data": any, "output_limit": int}`) to the
//! guest's WASI stdin, which [`host::read_request`] reads to the end before any Python runs, and
//! takes the reply from [`host::send_reply`], the private `pyexec.reply` import that only this
//! Rust code can reach. Python's stdout and stderr go to the ordinary WASI file descriptors,
//! which the host captures and caps: nothing the user's code prints, and no stream it replaces,
//! can pass for the reply. A panic replies too ([`host::reply_on_panic`]): its text goes to the
//! host's log, never to stderr.
//!
//! # Sessions
//! A request with `"session": true` runs in the globals the instance's earlier session requests
//! left (its own `__main__`, created by the first), with `data` rebound and `result` removed
//! first; a request without it runs in a fresh `__main__`. `"interactive": true` compiles the
//! code as Python's prompt does, printing an expression's value. The host keeps a session's instance
//! alive and calls `run` once per turn: [`host::send_reply`] returns there, and so does `run`.

//! # Pre-initialisation
//! The guest is a library module (a WASI "reactor" without `_initialize`): the host calls `run`
//! once per instance (or per session turn). `wizer-initialize` runs the module's constructors, builds the interpreter,
//! imports the modules users reach for and runs a few warm-up requests through the real code
//! path, so every instance of the snapshot starts with all of that done. Without a snapshot,
//! `run` does the initialisation itself (the cold path the benchmarks compare against).
//!
//! This crate may not touch anything outside the interpreter: no files, no environment, no
//! clock beyond what Python's own modules ask for.

mod convert;
mod host;
mod report;

use std::cell::{OnceCell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};

use rustpython::InterpreterBuilderExt;
use rustpython_vm::{
    builtins::{PyBaseExceptionRef, PyCode},
    compiler::Mode,
    scope::Scope,
    vm::VmCompileError,
    AsObject, Interpreter, InterpreterBuilder, PyObjectRef, PyResult, Settings, VirtualMachine,
};
use serde::Deserialize;

use crate::report::ErrorReport;

/// The file name user code runs under, as it appears in tracebacks.
const USER_FILENAME: &str = "<code>";

/// Modules imported into the snapshot: importing one that is not here costs ~20 ms per run.
const PRELOADED_MODULES: &[&str] = &[
    "__future__",
    "abc",
    "array",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "os",
    "pprint",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "threading",
    "time",
    "types",
    "typing",
    "unicodedata",
    "uuid",
];

/// Run once before the snapshot: there are no threads in the sandbox, and without this
/// RustPython's single-threaded `_thread` would run a "thread" synchronously instead of failing.
const REFUSE_THREADS: &str = "
import _thread, threading
def _refuse_thread(*args, **kwargs):
    raise RuntimeError(\"can't start new thread: threads are not available in the sandbox\")
for _module in (_thread, threading):
    for _name in ('start_new_thread', 'start_new', 'start_joinable_thread',
                  '_start_new_thread', '_start_joinable_thread'):
        if hasattr(_module, _name):
            setattr(_module, _name, _refuse_thread)
";

/// Run once before the snapshot: the sandbox is a machine without a network or a time zone, and
/// RustPython on WASI has neither `gethostname` nor `time.timezone`/`tzname`. Libraries that read
/// them when imported or parsing (boltons' `iterutils` and `timeutils`, dateutil's parser, logging
/// set-ups) get what such a machine has, a host called `localhost` on UTC, instead of an error.
const MACHINE_IDENTITY: &str = "
import socket, time
socket.gethostname = lambda: 'localhost'
for _name, _value in (('timezone', 0), ('altzone', 0), ('daylight', 0), ('tzname', ('UTC', 'UTC'))):
    if not hasattr(time, _name):
        setattr(time, _name, _value)
";

/// Run once before the snapshot: asyncio's event loop wakes itself through a socket pair and
/// waits in a selector, and WASI has neither sockets nor anything else to watch. Without the
/// self-pipe (no other thread can wake the loop) and with a selector that only waits out the
/// loop's timeouts, coroutines, tasks, `sleep`, queues and timeouts work; `time.sleep` is the
/// host's `poll_oneoff`, which never sleeps past the execution's deadline. WASI has no signals
/// either (not even `signal.SIGINT`), so `asyncio.run` is kept from handling Ctrl-C.
const ASYNCIO_WITHOUT_IO: &str = "
import errno, selectors, time, types
from asyncio import runners, selector_events

runners.signal = types.SimpleNamespace(
    SIGINT=None, getsignal=lambda signalnum: None, default_int_handler=object()
)

# A selector with nothing to watch: select() only waits for its timeout.
class WaitOnlySelector(selectors.BaseSelector):
    def register(self, fileobj, events, data=None):
        raise OSError(errno.ENOTSUP, 'there are no sockets or pipes to watch in the sandbox')

    def unregister(self, fileobj):
        raise KeyError(fileobj)

    def select(self, timeout=None):
        if timeout is None:
            # Nothing can ever become ready: wait, as CPython would, until the deadline.
            while True:
                time.sleep(3600)
        if timeout > 0:
            time.sleep(timeout)
        return []

    def get_map(self):
        return {}

def no_self_pipe(loop):
    pass

selectors.DefaultSelector = WaitOnlySelector
for name in ('_make_self_pipe', '_close_self_pipe', '_write_to_self'):
    setattr(selector_events.BaseSelectorEventLoop, name, no_self_pipe)
";

/// Requests run once during pre-initialisation so that every path a real request takes
/// (success, exception, syntax error, unserialisable result, each module's first use) is
/// already compiled and cached in the snapshot.
const WARM_UP_REQUESTS: &[&str] = &[
    r#"{"code": "result = sum(data['numbers']) / len(data['numbers'])", "data": {"numbers": [1, 2, 3, 4, 5]}}"#,
    r#"{"code": "import json, statistics\nresult = json.loads(json.dumps({'m': statistics.mean(data['x']), 's': statistics.stdev(data['x'])}))\nprint(result)", "data": {"x": [1.5, 2, 3, 123456789012345678901234567890]}}"#,
    r#"{"code": "from __future__ import annotations\nimport dataclasses, enum, typing, re, decimal, fractions, datetime, collections, random\n@dataclasses.dataclass\nclass P:\n    x: int\n    y: typing.Optional[str] = None\nclass C(enum.Enum):\n    A = 1\nresult = [repr(P(1)), C.A.name, re.sub(r'\\d+', '#', 'a1b22'), str(decimal.Decimal('1.1') * 3), str(fractions.Fraction(1, 3)), datetime.date(2024, 1, 2).isoformat(), collections.Counter('aab').most_common(1), random.random() < 1]", "data": {}}"#,
    r#"{"code": "def f(n):\n    return f(n + 1)\nf(0)", "data": {}}"#,
    r#"{"code": "def g(x):\n    return {}[x]\ntry:\n    g('k')\nexcept KeyError as e:\n    raise ValueError('bad') from e", "data": {}}"#,
    r#"{"code": "x = (", "data": {}}"#,
    r#"{"code": "s = '\u00a1", "data": {}}"#,
    r#"{"code": "result = {1, 2}", "data": {}}"#,
    r#"{"code": "import sys\nsys.exit(2)", "data": {}}"#,
    // The snapshot's clocks stand still: only zero-length sleeps end here.
    r#"{"code": "import asyncio\nasync def one(q):\n    await asyncio.sleep(0)\n    await q.put(1)\n    return await q.get()\nasync def main():\n    q = asyncio.Queue()\n    async with asyncio.timeout(5):\n        return await asyncio.gather(one(q), asyncio.wait_for(one(q), 5))\nresult = asyncio.run(main())", "data": {}}"#,
];

unsafe extern "C" {
    /// The linker-generated runner of the module's (C and Rust) constructors.
    fn __wasm_call_ctors();
}

/// Whether the constructors have run, in this instance or in the one the snapshot was taken of.
static CONSTRUCTED: AtomicBool = AtomicBool::new(false);

/// Runs the module's constructors, once.
fn construct() {
    if !CONSTRUCTED.swap(true, Ordering::Relaxed) {
        // SAFETY: runs once per instance, before anything else in the module.
        unsafe { __wasm_call_ctors() };
        host::reply_on_panic();
    }
}

thread_local! {
    /// The one interpreter of this instance. Built by `wizer-initialize` before the snapshot,
    /// so every instance of the snapshot starts with it ready.
    static INTERPRETER: OnceCell<Interpreter> = const { OnceCell::new() };

    /// The globals of a session's turns, from its first turn on (never in the snapshot).
    static SESSION_SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// The request the host sends. Unknown fields are ignored so the host can add some.
#[derive(Deserialize)]
struct Request {
    code: String,
    #[serde(default)]
    data: serde_json::Value,
    /// Bytes the serialised `result` may take; past it the run fails with `output_limit`.
    #[serde(default = "default_output_limit")]
    output_limit: usize,
    /// Run in the globals of this instance's earlier session turns (see the crate's docs).
    #[serde(default)]
    session: bool,
    /// Compile as Python's interactive prompt does (one statement; an expression's value is
    /// printed by `sys.displayhook`): `pyexec repl`.
    #[serde(default)]
    interactive: bool,
}

fn default_output_limit() -> usize {
    1 << 20
}

/// Builds the interpreter; called by pre-initialisation, or by `main` when there was none.
fn build_interpreter() -> Interpreter {
    let mut settings = Settings::default();
    settings.isolated = true;
    settings.ignore_environment = true;
    settings.import_site = false;
    settings.user_site_directory = false;
    settings.safe_path = true;
    settings.write_bytecode = false;
    settings.install_signal_handlers = false;
    // Unbuffered: every write reaches the host at once, so the output of a run that is stopped
    // by a limit is not lost in a buffer.
    settings.buffered_stdio = false;
    settings.argv = vec![String::new()];
    InterpreterBuilder::new()
        .settings(settings)
        .init_stdlib()
        .interpreter()
}

fn with_interpreter<R>(f: impl FnOnce(&VirtualMachine) -> R) -> R {
    INTERPRETER.with(|cell| cell.get_or_init(build_interpreter).enter(f))
}

/// Pre-initialisation entry point, called once by wasmtime-wizer before it snapshots memory.
#[unsafe(export_name = "wizer-initialize")]
pub extern "C" fn wizer_initialize() {
    construct();
    with_interpreter(|vm| {
        for module in PRELOADED_MODULES {
            if let Err(exc) = vm.import(*module, 0) {
                vm.print_exception(&exc);
                panic!("pre-initialisation could not import {module}");
            }
        }
        for (setup, what) in [
            (REFUSE_THREADS, "disable threads"),
            (ASYNCIO_WITHOUT_IO, "set up asyncio"),
            (MACHINE_IDENTITY, "name the host and its time zone"),
        ] {
            if let Err(exc) = vm.run_simple_string(setup) {
                vm.print_exception(&exc);
                panic!("pre-initialisation could not {what}");
            }
        }
        for request in WARM_UP_REQUESTS {
            execute(vm, request.as_bytes());
        }
        // Leave no trace of the warm-up requests in the snapshot.
        if let Ok(modules) = vm.sys_module.get_attr("modules", vm) {
            let _ = modules.del_item("__main__", vm);
        }
        if let Ok(gc) = vm.import("gc", 0) {
            let _ = vm.call_method(&gc, "collect", ());
        }
    });
}

/// Runs the request the host holds and hands it the reply. The host calls this once per
/// instance, or once per turn of a session.
#[unsafe(export_name = "run")]
pub extern "C" fn run_request() {
    construct();
    reseed_thread_rng();
    let request = host::read_request();
    let reply = with_interpreter(|vm| execute(vm, &request));
    host::send_reply(reply.as_bytes());
}

/// Runs one request and returns the reply document.
fn execute(vm: &VirtualMachine, request: &[u8]) -> String {
    let request: Request = match serde_json::from_slice(request) {
        Ok(request) => request,
        Err(err) => {
            return ErrorReport::plain("invalid_request", "ValueError", err.to_string()).to_reply();
        }
    };
    match run(vm, &request) {
        Ok(result) => format!(r#"{{"ok":true,"result":{result}}}"#),
        Err(report) => report.to_reply(),
    }
}

/// Runs the request's code as `__main__` and serialises its global `result`.
fn run(vm: &VirtualMachine, request: &Request) -> Result<String, ErrorReport> {
    let internal = |exc: PyBaseExceptionRef| ErrorReport::internal(vm, &exc);
    reseed_random(vm).map_err(internal)?;
    let scope = if request.session {
        session_scope(vm).map_err(internal)?
    } else {
        vm.new_scope_with_main().map_err(internal)?
    };
    let data = convert::json_to_python(vm, &request.data);
    scope.globals.set_item("data", data, vm).map_err(internal)?;

    // Not `vm.compile`: its warning passes run first, and their escape scanner panics on an
    // unterminated string that ends in a multi-byte character (`'¡`), which the compiler itself
    // reports as the SyntaxError it is. The price: no SyntaxWarnings on stderr.
    // Not `vm.ctx.new_code` either: its constant bag has no VM and panics on the frozenset
    // constants the compiler makes of `x in {1, 2}` and `for x in {1, 2}`; `PyCode`'s own, as
    // `vm.compile` uses, builds them.
    let mode = if request.interactive {
        Mode::Single
    } else {
        Mode::Exec
    };
    let code =
        rustpython_vm::compiler::compile(&request.code, mode, USER_FILENAME, vm.compile_opts())
            .map(|code| PyCode::new_ref_from_bytecode(vm, code))
            .map_err(|err| {
                let exc = VmCompileError::from(err).into_pyexception(vm, Some(&request.code));
                ErrorReport::from_exception(vm, &exc, &request.code)
            })?;
    if let Err(exc) = vm.run_code_obj(code, scope.clone()) {
        if !is_clean_exit(vm, &exc) {
            return Err(ErrorReport::from_exception(vm, &exc, &request.code));
        }
    }

    let result = scope
        .globals
        .get_item_opt("result", vm)
        .map_err(internal)?
        .unwrap_or_else(|| vm.ctx.none());
    convert::python_to_json(vm, &result, request.output_limit)
}

/// The session's globals, created by its first turn, without the `result` an earlier turn left.
fn session_scope(vm: &VirtualMachine) -> PyResult<Scope> {
    let existing = SESSION_SCOPE.with_borrow(Clone::clone);
    let scope = match existing {
        Some(scope) => scope,
        None => {
            let scope = vm.new_scope_with_main()?;
            SESSION_SCOPE.set(Some(scope.clone()));
            scope
        }
    };
    if scope.globals.get_item_opt("result", vm)?.is_some() {
        scope.globals.del_item("result", vm)?;
    }
    Ok(scope)
}

/// `sys.exit()` and `sys.exit(0)` end a script successfully, as in CPython.
fn is_clean_exit(vm: &VirtualMachine, exc: &PyBaseExceptionRef) -> bool {
    if !exc.class().fast_issubclass(vm.ctx.exceptions.system_exit) {
        return false;
    }
    let code: Option<PyObjectRef> = exc.args().as_slice().first().cloned();
    match code {
        None => true,
        Some(code) => {
            vm.is_none(&code)
                || code
                    .downcast_ref::<rustpython_vm::builtins::PyInt>()
                    .is_some_and(|i| i.as_bigint() == &malachite_bigint::BigInt::from(0))
        }
    }
}

/// RustPython seeds `random.Random` from `rand`'s thread-local generator, whose state is part of
/// the snapshot: give it fresh entropy (WASI `random_get`) before anything draws from it.
fn reseed_thread_rng() {
    rand::rng().reseed().expect("WASI random_get does not fail");
}

/// Every run draws fresh entropy: the snapshot's `random` state is the same in every instance.
fn reseed_random(vm: &VirtualMachine) -> PyResult<()> {
    let random = vm.import("random", 0)?;
    vm.call_method(random.as_object(), "seed", ())?;
    Ok(())
}
