//! pyexec runs untrusted Python for API clients inside a fuel-metered, memory-capped
//! WebAssembly sandbox.
//!
//! # Layout
//! - [`sandbox`] owns wasmtime: the runtimes (the embedded RustPython guest, and CPython once
//!   `pyexec runtime install` has installed and pre-initialised it), the compiled-module cache,
//!   one bounded execution per fresh instance, and sessions (an instance kept for one
//!   tenant's turns). Nothing else touches wasmtime.
//! - [`keys`] owns the key store: API keys (hashed), quotas, usage accounting and rate limits,
//!   behind one [`keys::KeyStore`] with two backends — sled in the data directory (and the
//!   control socket through which `pyexec keys` reaches a running server), or PostgreSQL
//!   shared by many nodes.
//! - [`api`] owns HTTP: routing, authentication, the error model and the JSON shapes.
//! - [`cli`] owns the command line: one module per subcommand.
//! - [`clock`]: monotonic time that tests move by hand (rate limits, session deadlines).

pub mod api;
pub mod cli;
pub mod clock;
pub mod keys;
pub mod sandbox;

/// `error: source: source…`, the way `anyhow`'s `{:#}` prints a chain: for messages and logs of
/// typed errors.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
