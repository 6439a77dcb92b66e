//! `pyexec keys …`: API key administration, one module per subcommand, plus the shared
//! output formatting in [`output`]. Owns argument parsing and printing only; every
//! operation goes through [`crate::keys::KeyAdmin`], which opens the database directly or,
//! while `pyexec serve` holds it, talks to the server's control socket.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use crate::keys::{AdminError, KeyAdmin, KeyRecord, KeyRef};

mod add;
mod list;
mod output;
mod reset_executions;
mod revoke;
mod show;
mod update_limit;

/// Manage API keys: create, list, show, revoke, and change execution quotas
///
/// Works whether or not `pyexec serve` is running on the data directory: without a server
/// the key database is opened directly; while a server holds it, the command goes through
/// the server's control socket (`<DIR>/control.sock`) and takes effect immediately. Either
/// way a change is on disk before the command reports success.
///
/// KEY arguments accept a key's ID as shown by `list` (for example `sk_test_AbCd1234`) or
/// the full secret key.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    Add(add::Args),
    List(list::Args),
    Show(show::Args),
    ResetExecutions(reset_executions::Args),
    UpdateLimit(update_limit::Args),
    Revoke(revoke::Args),
}

impl KeysCommand {
    pub fn run(self, data_dir: &Path) -> anyhow::Result<()> {
        match self {
            KeysCommand::Add(args) => add::run(args, data_dir),
            KeysCommand::List(args) => list::run(args, data_dir),
            KeysCommand::Show(args) => show::run(args, data_dir),
            KeysCommand::ResetExecutions(args) => reset_executions::run(args, data_dir),
            KeysCommand::UpdateLimit(args) => update_limit::run(args, data_dir),
            KeysCommand::Revoke(args) => revoke::run(args, data_dir),
        }
    }
}

/// The output option every `keys` subcommand takes.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Print JSON instead of human-readable text, for scripts
    #[arg(long)]
    pub json: bool,
}

/// The `KEY` argument of the subcommands that act on one key.
#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The key's ID as shown by `list` (e.g. sk_test_AbCd1234), or the full secret key
    #[arg(value_name = "KEY")]
    pub key: String,
}

impl KeyArg {
    fn parse(&self) -> anyhow::Result<KeyRef> {
        Ok(self.key.parse()?)
    }
}

/// Opens the key database in `data_dir`, or connects to the server that holds it.
fn open(data_dir: &Path) -> anyhow::Result<KeyAdmin> {
    KeyAdmin::open(data_dir)
        .with_context(|| format!("cannot open the key store in {}", data_dir.display()))
}

/// What the subcommands acting on one key share: parse KEY, apply `change` (directly or through
/// the server), then print the resulting record as JSON, or as `describe` puts it.
fn act_on_key(
    key: &KeyArg,
    output: &OutputArgs,
    data_dir: &Path,
    change: impl FnOnce(&mut KeyAdmin, KeyRef) -> Result<KeyRecord, AdminError>,
    describe: impl FnOnce(&KeyRecord) -> String,
) -> anyhow::Result<()> {
    let key = key.parse()?;
    let record = change(&mut open(data_dir)?, key)?;
    if output.json {
        return output::print_json(&output::KeyJson::new(&record));
    }
    output::print(&describe(&record))
}
