//! `pyexec compile`: fills the module cache with the compiled guest and exits. `serve` runs it
//! as a child process on a cold cache; operators run it at deploy time.

use std::path::Path;
use std::time::Instant;

use clap::Args;

use super::sandbox_args::SandboxArgs;
use crate::sandbox::Sandbox;

/// Compile the guest into the module cache, so that `serve` starts in milliseconds
///
/// What a first `pyexec serve` does (~15 s), ahead of time: at deploy or image build time.
/// Takes `serve`'s sandbox options, since the worker count decides which engine the module is
/// compiled for.
#[derive(Debug, Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

impl CompileArgs {
    pub fn run(self, data_dir: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        let (path, compiled) = Sandbox::compile_into_cache(&self.sandbox.config(data_dir))?;
        if compiled {
            println!(
                "Compiled the guest into {} in {:.1} s.",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        } else {
            println!("The guest is already compiled: {}", path.display());
        }
        Ok(())
    }
}
