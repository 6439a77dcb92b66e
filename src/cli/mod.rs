//! The command line: `pyexec serve`, `pyexec run`, `pyexec keys …`, `pyexec completions`.
//! Each subcommand lives in its own module with its `Args` and `run()`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs untrusted Python safely and fast, behind an HTTP API.
#[derive(Debug, Parser)]
#[command(name = "pyexec", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

/// Runs the parsed command line; errors are printed once, here.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
