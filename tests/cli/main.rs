//! Integration tests of the `pyexec` binary, compiled as one test binary.

mod completions;
mod help;
mod helpers;
mod keys;
mod keys_via_server;
mod repl;
mod run;
mod serve;
mod server;
