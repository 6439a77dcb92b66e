//! `pyexec keys update-limit KEY N`: sets a key's total executions limit.

use std::path::Path;

use super::output::{KeyJson, clean, print, print_json};
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

pub fn run(args: Args, data_dir: &Path) -> anyhow::Result<()> {
    let key = args.key.parse()?;
    let record = super::open(data_dir)?.update_limit(key, args.limit)?;
    if args.output.json {
        return print_json(&KeyJson::new(&record));
    }
    print(&format!(
        "Set the executions limit of {} (\"{}\") to {}: {} used, {} left.\n",
        record.id,
        clean(&record.name),
        record.executions_limit,
        record.executions_used,
        record.executions_left(),
    ))
}
