//! The command line: `pyexec serve`, `pyexec run`, `pyexec keys …`, `pyexec store …`,
//! `pyexec repl`, `pyexec runtime …`, `pyexec compile`, `pyexec completions`.
//! Each subcommand lives in its own module with its `Args` and `run()`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod compile;
mod completions;
pub mod keys;
mod repl;
mod run;
mod runtime;
mod sandbox_args;
mod serve;
mod store;
mod store_args;

/// Runs untrusted Python safely and fast, behind an HTTP API.
#[derive(Debug, Parser)]
#[command(name = "pyexec", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding the key database and, while `pyexec serve` runs, its control socket
    #[arg(
        long,
        global = true,
        env = "PYEXEC_DATA_DIR",
        default_value = "data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub store: store_args::StoreArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    Run(run::RunArgs),
    Repl(repl::ReplArgs),
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    #[command(subcommand)]
    Store(store::StoreCommand),
    #[command(subcommand)]
    Runtime(runtime::RuntimeCommand),
    Compile(compile::CompileArgs),
    Completions(completions::CompletionsArgs),
}

/// A mistake in how a command was called (a file that cannot be read, an invalid value): exit
/// code 2, like clap's own usage errors, rather than 1 for a failure while doing the work.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct UsageError(anyhow::Error);

/// Runs the parsed command line; errors are printed once, here.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing("info");
            cli.store
                .location(&cli.data_dir)
                .and_then(|store| args.run(&cli.data_dir, &store))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            init_tracing("warn");
            args.run(&cli.data_dir)
        }
        Command::Repl(args) => {
            init_tracing("warn");
            args.run(&cli.data_dir)
        }
        Command::Keys(command) => {
            init_tracing("warn");
            cli.store
                .location(&cli.data_dir)
                .and_then(|store| command.run(&store))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Store(command) => {
            init_tracing("warn");
            cli.store
                .location(&cli.data_dir)
                .and_then(|store| command.run(&store))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Runtime(command) => {
            init_tracing("warn");
            command.run(&cli.data_dir).map(|()| ExitCode::SUCCESS)
        }
        Command::Compile(args) => {
            init_tracing("info");
            args.run(&cli.data_dir).map(|()| ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            args.run();
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs go to stderr, filtered by `PYEXEC_LOG` (e.g. `debug`, `pyexec=debug,info`), as JSON
/// lines when `PYEXEC_LOG_FORMAT=json`.
fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PYEXEC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("PYEXEC_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// Every subcommand has an about text and every argument a help text.
    #[test]
    fn help_is_complete() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                missing.push(format!("`{path}` has no about text"));
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("`{path}` argument `{}` has no help", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
