//! pyexec runs untrusted Python for API clients inside a fuel-metered, memory-capped
//! WebAssembly sandbox.
//!
//! # Layout
//! - [`sandbox`] owns wasmtime: the embedded guest module, its compiled-module cache, and one
//!   bounded execution per fresh instance. Nothing else touches wasmtime.
//! - [`keys`] owns the sled database: API keys (hashed), quotas, usage accounting and rate
//!   limits, and the control socket through which `pyexec keys` reaches a running server.
//! - [`api`] owns HTTP: routing, authentication, the error model and the JSON shapes.
//! - [`cli`] owns the command line: one module per subcommand.

pub mod cli;
pub mod keys;
pub mod sandbox;
