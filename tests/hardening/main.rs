//! Hardening, fast tier: adversarial code, abuse of HTTP, accounting and fairness under load,
//! full and read-only disks, and property tests of request decoding and JSON↔Python conversion.
//! Tests marked `#[ignore]` are the long tier (`scripts/long-tier.sh`).

mod adversarial;
#[path = "../api/sled_backend.rs"]
mod backend;
mod disk;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod http;
#[path = "../cpython/installed.rs"]
mod installed;
mod load;
mod properties;
#[allow(dead_code)]
#[path = "../cli/server.rs"]
mod server;

/// A sandbox with the CPython runtime too, when one is installed (see tests/cpython).
fn cpython_sandbox() -> Option<pyexec::sandbox::Sandbox> {
    let dir = installed::installed()?;
    let sandbox = pyexec::sandbox::Sandbox::new(pyexec::sandbox::SandboxConfig {
        limits: helpers::test_limits(),
        cpython_memory_bytes: 512 << 20,
        runtimes_dir: Some(dir.join("runtimes")),
        cache_dir: Some(dir.join("cache")),
        workers: 2,
        ..pyexec::sandbox::SandboxConfig::default()
    });
    Some(sandbox.expect("the sandbox starts with the installed CPython runtime"))
}
