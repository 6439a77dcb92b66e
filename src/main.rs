//! The `pyexec` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pyexec::cli::Cli::parse();
    pyexec::cli::run(cli)
}
