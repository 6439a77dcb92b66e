//! `pyexec keys reset-executions KEY`: sets a key's executions used back to 0.

use crate::keys::StoreLocation;

use super::output::clean;
use super::{KeyArg, OutputArgs};

/// Set a key's executions used back to 0, restoring its full executions limit
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,

    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, store: &StoreLocation) -> anyhow::Result<()> {
    super::act_on_key(
        &args.key,
        &args.output,
        store,
        |admin, key| admin.reset_executions(key),
        |record| {
            format!(
                "Reset the executions of {} (\"{}\"): {} used, {} left of {}.\n",
                record.id,
                clean(&record.name),
                record.executions_used,
                record.executions_left(),
                record.executions_limit,
            )
        },
    )
}
