//! `pyexec keys revoke KEY`: permanently disables a key.

use crate::keys::StoreLocation;

use super::output::{clean, status};
use super::{KeyArg, OutputArgs};

/// Revoke an API key: it is refused from now on, also by a running server; this cannot be
/// undone
///
/// Revoking an already revoked key changes nothing and keeps the original revocation time.
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
        |admin, key| admin.revoke(key),
        |record| {
            format!(
                "Revoked {} (\"{}\"): {}.\n",
                record.id,
                clean(&record.name),
                status(record),
            )
        },
    )
}
