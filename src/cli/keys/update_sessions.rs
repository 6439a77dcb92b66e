//! `pyexec keys update-sessions KEY N|default`: sets how many sessions a key may have open.

use crate::keys::StoreLocation;

use super::output::clean;
use super::{KeyArg, OutputArgs};

/// Set how many sessions a key may have open at once (`/sessions`), or give it the server's
/// default (--sessions-per-key) again
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,

    /// The key's own cap (0: no sessions), or `default` for the server's
    #[arg(value_name = "N|default", value_parser = parse_cap)]
    max_sessions: Cap,

    #[command(flatten)]
    output: OutputArgs,
}

/// A key's session cap as given on the command line.
#[derive(Debug, Clone, Copy)]
struct Cap(Option<u32>);

fn parse_cap(text: &str) -> Result<Cap, String> {
    if text == "default" {
        return Ok(Cap(None));
    }
    text.parse()
        .map(|n| Cap(Some(n)))
        .map_err(|_| format!("`{text}` is neither a number of sessions nor `default`"))
}

pub fn run(args: Args, store: &StoreLocation) -> anyhow::Result<()> {
    let Cap(max_sessions) = args.max_sessions;
    super::act_on_key(
        &args.key,
        &args.output,
        store,
        |admin, key| admin.update_max_sessions(key, max_sessions),
        |record| {
            let cap = record
                .max_sessions
                .map_or_else(|| "the server's default".to_owned(), |n| n.to_string());
            format!(
                "{} (\"{}\") may now have {cap} session(s) open at once.\n",
                record.id,
                clean(&record.name),
            )
        },
    )
}
