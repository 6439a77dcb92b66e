//! Fidelity: the guest's Python answers exactly what CPython 3.11 answers where programs can tell
//! the difference — differential property tests against the local `python3` (CPython 3.11, the
//! reference) and fixed regressions recorded from it. Runs the guest through `pyexec::sandbox`
//! only; touches nothing else.

mod division;
mod set_order;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use proptest::test_runner::{Config, RngSeed, TestRunner};
use pyexec::sandbox::{Execution, Sandbox, SandboxConfig};
use serde_json::Value;

/// The module cache shared by every test binary of this crate.
fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(SandboxConfig {
        cache_dir: Some(cache_dir()),
        pooling: false,
        ..SandboxConfig::default()
    })
    .expect("the sandbox starts")
});

/// Drives the async sandbox from plain tests and proptest's synchronous cases.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

/// The global `result` of `code` run in the guest; panics with the error if it failed.
pub fn guest_result(code: &str) -> Value {
    let execution = Execution {
        code: code.to_owned(),
        data: None,
        fuel: None,
        tenant: None,
        runtime: None,
    };
    // Built outside the runtime: `Sandbox::new` runs a blocking warm-up execution, and a WASI
    // call made inside an async context panics.
    let sandbox = &*SANDBOX;
    let outcome = RUNTIME
        .block_on(sandbox.execute(execution))
        .expect("the execution is admitted");
    match outcome.result {
        Ok(raw) => serde_json::from_str(raw.get()).expect("the result is JSON"),
        Err(err) => panic!(
            "the guest failed: {err:#?}\ncode:\n{code}\nstderr: {}",
            outcome.stderr
        ),
    }
}

/// Runs the program on stdin as `__main__` and prints its global `result` as JSON.
const CPYTHON_DRIVER: &str = "import json, sys\n\
    namespace = {'__name__': '__main__'}\n\
    exec(compile(sys.stdin.read(), '<code>', 'exec'), namespace)\n\
    sys.stdout.write(json.dumps(namespace.get('result')))\n";

/// The global `result` of `code` run by the local `python3`, compiled and run the way the guest
/// runs it; panics if it failed or `python3` is not CPython 3.11.
pub fn cpython_result(code: &str) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", CPYTHON_DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (CPython 3.11) is on PATH");
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(code.as_bytes())
        .expect("python3 reads the program");
    let output = child.wait_with_output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 failed on:\n{code}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python3 prints the result as JSON")
}

/// The reference interpreter's version, checked once: another CPython orders sets differently.
pub fn assert_reference_is_cpython_3_11() {
    let version = cpython_result("import sys\nresult = list(sys.version_info[:2])");
    assert_eq!(
        version,
        serde_json::json!([3, 11]),
        "python3 must be CPython 3.11"
    );
}

/// A proptest runner: a fixed number of cases from a fixed seed in the fast tier, so CI is
/// reproducible; the long tier sets `PYEXEC_PROPTEST_CASES` and `PYEXEC_PROPTEST_SEED`.
pub fn runner(fast_tier_cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: setting("PYEXEC_PROPTEST_CASES").unwrap_or(fast_tier_cases),
        rng_seed: RngSeed::Fixed(setting("PYEXEC_PROPTEST_SEED").unwrap_or(0x7079_6578_6563)),
        failure_persistence: None,
        ..Config::default()
    })
}

/// An environment variable's value, if it is set and parses.
fn setting<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}
