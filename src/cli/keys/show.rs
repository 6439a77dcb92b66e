//! `pyexec keys show KEY`: one key's details; never its secret or hash.

use std::path::Path;

use super::output::{KeyJson, details, print, print_json};
use super::{KeyArg, OutputArgs};

/// Show one API key's details and usage (never the secret key itself)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,

    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, data_dir: &Path) -> anyhow::Result<()> {
    let key = args.key.parse()?;
    let record = super::open(data_dir)?.show(key)?;
    if args.output.json {
        return print_json(&KeyJson::new(&record));
    }
    print(&details(&record))
}
