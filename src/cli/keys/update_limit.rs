//! `pyexec keys update-limit KEY N`: sets a key's total executions limit.

use crate::keys::StoreLocation;

use super::output::clean;
use super::{KeyArg, OutputArgs};

/// Set a key's total executions limit; executions left becomes N minus executions used
/// (never below 0)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,

    /// The new total number of executions the key may run
    #[arg(value_name = "N")]
    limit: u64,

    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, store: &StoreLocation) -> anyhow::Result<()> {
    super::act_on_key(
        &args.key,
        &args.output,
        store,
        |admin, key| admin.update_limit(key, args.limit),
        |record| {
            format!(
                "Set the executions limit of {} (\"{}\") to {}: {} used, {} left.\n",
                record.id,
                clean(&record.name),
                record.executions_limit,
                record.executions_used,
                record.executions_left(),
            )
        },
    )
}
