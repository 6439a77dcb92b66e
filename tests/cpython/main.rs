//! The CPython runtime (`"runtime": "cpython"`), compiled as one test binary: executions in
//! process and over a real `pyexec serve`, and installing it (`pyexec runtime install`).
//!
//! Most tests need an installed runtime (installed.rs says where it comes from). Without it
//! the tests that need it say so and pass, except in CI (`CI` set), where they fail.

mod execute;
mod install;
// Shared with the `compat` and `hardening` binaries, which run their suites on it too.
mod installed;
mod server;
// Shared with the `cli` and `hardening` binaries, which use more of it.
#[allow(dead_code)]
#[path = "../cli/server.rs"]
mod server_process;

use std::sync::LazyLock;
use std::time::Duration;

use pyexec::sandbox::{Execution, Limits, Outcome, Sandbox, SandboxConfig};

pub use installed::installed;

pub fn test_limits() -> Limits {
    Limits {
        fuel: 20_000_000_000,
        timeout: Duration::from_secs(5),
        memory_bytes: 128 << 20,
        output_bytes: 64 << 10,
        input_bytes: 64 << 10,
    }
}

/// The sandbox with both runtimes the in-process tests share.
pub static SANDBOX: LazyLock<Option<Sandbox>> = LazyLock::new(|| {
    let dir = installed()?;
    Some(
        Sandbox::new(SandboxConfig {
            limits: test_limits(),
            cpython_memory_bytes: 512 << 20,
            runtimes_dir: Some(dir.join("runtimes")),
            cache_dir: Some(dir.join("cache")),
            workers: 2,
            ..SandboxConfig::default()
        })
        .expect("the sandbox starts with the installed CPython runtime"),
    )
});

/// Runs `code` with `data` on CPython, or `None` when no runtime is installed.
pub async fn cpython(code: &str, data: Option<&str>) -> Option<Outcome> {
    let sandbox = SANDBOX.as_ref()?;
    let execution = Execution {
        code: code.into(),
        data: data.map(|data| serde_json::value::RawValue::from_string(data.into()).unwrap()),
        fuel: None,
        tenant: None,
        runtime: Some("cpython".into()),
    };
    Some(
        sandbox
            .execute(execution)
            .await
            .expect("the execution is accepted"),
    )
}
