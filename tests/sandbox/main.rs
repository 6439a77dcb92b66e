//! The sandbox with the real guest: every outcome kind, the guest protocol, isolation between
//! executions and the queue. One `Sandbox` serves the whole binary; the compiled module is
//! cached in the target directory so test binaries do not recompile it.

mod asyncio;
mod constants;
mod guest;
mod limits;
mod pooling;
mod queue;

use std::sync::LazyLock;

use pyexec::sandbox::{Execution, Limits, Outcome, Sandbox, SandboxConfig};
use serde_json::Value;
use serde_json::value::RawValue;

/// The module cache shared by every test binary of this crate.
pub fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

/// Limits small enough that tests hitting them finish quickly.
pub fn test_limits() -> Limits {
    Limits {
        fuel: 2_000_000_000,
        timeout: std::time::Duration::from_secs(3),
        memory_bytes: 128 << 20,
        output_bytes: 64 << 10,
        input_bytes: 256 << 10,
    }
}

static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(SandboxConfig {
        limits: test_limits(),
        workers: 2,
        queue: 64,
        cache_dir: Some(cache_dir()),
        pooling: false,
        ..SandboxConfig::default()
    })
    .expect("the sandbox starts")
});

pub fn sandbox() -> &'static Sandbox {
    &SANDBOX
}

/// An execution of `code` with no data, the default fuel and the anonymous tenant.
pub fn execution(code: impl Into<String>) -> Execution {
    Execution {
        code: code.into(),
        data: None,
        fuel: None,
        tenant: None,
        runtime: None,
    }
}

/// Runs `code` with `data`, given as JSON text: a `serde_json::Value` would round big integers
/// and reorder keys before the guest ever saw them.
pub async fn run_with(code: &str, data: &str) -> Outcome {
    let data = RawValue::from_string(data.to_owned()).unwrap();
    sandbox()
        .execute(Execution {
            data: Some(data),
            ..execution(code)
        })
        .await
        .expect("the execution is admitted")
}

pub async fn run(code: &str) -> Outcome {
    run_with(code, "{}").await
}

/// The result as a JSON value; panics with the error if the execution failed.
pub fn result(outcome: &Outcome) -> Value {
    match &outcome.result {
        Ok(raw) => serde_json::from_str(raw.get()).unwrap(),
        Err(err) => panic!(
            "execution failed: {err:#?}\nstdout: {}\nstderr: {}",
            outcome.stdout, outcome.stderr
        ),
    }
}

/// The error of a failed execution; panics if it succeeded.
pub fn error(outcome: &Outcome) -> &pyexec::sandbox::ExecutionError {
    match &outcome.result {
        Ok(raw) => panic!("expected a failure, got result {}", raw.get()),
        Err(err) => err,
    }
}
