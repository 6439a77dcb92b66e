//! `pyexec keys list`: every key with its usage; never a secret or a hash.

use crate::keys::StoreLocation;

use super::OutputArgs;
use super::output::{KeyJson, clean, fuel, print, print_json, status, table, timestamp};

/// List all API keys with their usage and limits (never the secret keys themselves)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, store: &StoreLocation) -> anyhow::Result<()> {
    let records = super::open(store)?.list()?;
    if args.output.json {
        return print_json(&records.iter().map(KeyJson::new).collect::<Vec<_>>());
    }
    if records.is_empty() {
        return print("No API keys yet; create one with `pyexec keys add`.\n");
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                clean(&r.name),
                r.env.to_string(),
                r.executions_used.to_string(),
                r.executions_limit.to_string(),
                r.executions_left().to_string(),
                r.rate_limit_per_minute.to_string(),
                fuel(r),
                timestamp(&r.created_at),
                status(r),
            ]
        })
        .collect();
    print(&table(
        &[
            "ID", "NAME", "ENV", "USED", "LIMIT", "LEFT", "RATE/MIN", "FUEL", "CREATED", "STATUS",
        ],
        &rows,
    ))
}
