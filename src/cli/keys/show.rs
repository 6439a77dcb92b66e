//! `pyexec keys show KEY`: one key's details; never its secret or hash.

use crate::keys::StoreLocation;

use super::output::details;
use super::{KeyArg, OutputArgs};

/// Show one API key's details and usage (never the secret key itself)
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
        |admin, key| admin.show(key),
        details,
    )
}
