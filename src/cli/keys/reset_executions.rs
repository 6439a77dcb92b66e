//! `pyexec keys reset-executions KEY`: sets a key's executions used back to 0.

use std::path::Path;

use super::output::{KeyJson, clean, print, print_json};
use super::{KeyArg, OutputArgs};

/// Set a key's executions used back to 0, restoring its full executions limit
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,

    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, data_dir: &Path) -> anyhow::Result<()> {
    let key = args.key.parse()?;
    let record = super::open(data_dir)?.reset_executions(key)?;
    if args.output.json {
        return print_json(&KeyJson::new(&record));
    }
    print(&format!(
        "Reset the executions of {} (\"{}\"): {} used, {} left of {}.\n",
        record.id,
        clean(&record.name),
        record.executions_used,
        record.executions_left(),
        record.executions_limit,
    ))
}
