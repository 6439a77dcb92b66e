//! The HTTP API over real HTTP: a server on 127.0.0.1:0 per test, a temp data directory each,
//! one sandbox (and one compiled module) for the whole binary.

#[path = "sled_backend.rs"]
mod backend;
mod errors;
mod execute;
mod helpers;
mod observability;
mod playground;
mod runtimes;
mod sessions;
mod usage_history;
