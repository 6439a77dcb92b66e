//! `pyexec keys …`: API key administration, one module per subcommand, plus the shared
//! output formatting in [`output`]. Owns argument parsing and printing only; every
//! operation goes through [`crate::keys::KeyAdmin`], which opens the database directly or,
//! while `pyexec serve` holds it, talks to the server's control socket.

use anyhow::Context;
use clap::Subcommand;

use crate::keys::{AdminError, KeyAdmin, KeyRecord, KeyRef, StoreLocation};

mod add;
mod list;
mod output;
mod reset_executions;
mod revoke;
mod show;
mod update_limit;
mod update_sessions;

/// Manage API keys: create, list, show, revoke, and change execution quotas
///
/// Works whether or not `pyexec serve` is running on the data directory: without a server
/// the key database is opened directly; while a server holds it, the command goes through
/// the server's control socket (`<DIR>/control.sock`) and takes effect immediately. With
/// `--store postgres://…` the command talks to PostgreSQL from any machine, and every node
/// sees the change on its next request. Either way a change is durable before the command
/// reports success.
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
    UpdateSessions(update_sessions::Args),
    Revoke(revoke::Args),
}

impl KeysCommand {
    pub fn run(self, store: &StoreLocation) -> anyhow::Result<()> {
        match self {
            KeysCommand::Add(args) => add::run(args, store),
            KeysCommand::List(args) => list::run(args, store),
            KeysCommand::Show(args) => show::run(args, store),
            KeysCommand::ResetExecutions(args) => reset_executions::run(args, store),
            KeysCommand::UpdateLimit(args) => update_limit::run(args, store),
            KeysCommand::UpdateSessions(args) => update_sessions::run(args, store),
            KeysCommand::Revoke(args) => revoke::run(args, store),
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

/// Opens the key store: the sled database in the data directory (or the server that holds
/// it), or PostgreSQL.
fn open(store: &StoreLocation) -> anyhow::Result<KeyAdmin> {
    KeyAdmin::open_at(store)
        .with_context(|| format!("cannot open the key store {}", store.describe()))
}

/// What the subcommands acting on one key share: parse KEY, apply `change` (directly or through
/// the server), then print the resulting record as JSON, or as `describe` puts it.
fn act_on_key(
    key: &KeyArg,
    output: &OutputArgs,
    store: &StoreLocation,
    change: impl FnOnce(&mut KeyAdmin, KeyRef) -> Result<KeyRecord, AdminError>,
    describe: impl FnOnce(&KeyRecord) -> String,
) -> anyhow::Result<()> {
    let key = key.parse()?;
    let record = change(&mut open(store)?, key)?;
    if output.json {
        return output::print_json(&output::KeyJson::new(&record));
    }
    output::print(&describe(&record))
}
