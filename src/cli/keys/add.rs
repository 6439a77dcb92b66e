//! `pyexec keys add`: creates a key and prints it, the only time its plaintext is shown.

use crate::keys::StoreLocation;

use crate::keys::{DEFAULT_RATE_LIMIT_PER_MINUTE, Env, NewKey};

use super::OutputArgs;
use super::output::{KeyJson, clean, details, print, print_json};

/// Create an API key and print it; the key is shown only this once
///
/// The store keeps only a SHA-256 hash of the key, so a lost key cannot be recovered:
/// revoke it and create a new one. With --json the key is the `key` field of the object.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who or what the key is for (shown by `list`)
    #[arg(long)]
    name: String,

    /// Free-form notes about the key
    #[arg(long)]
    description: String,

    /// Environment the key belongs to; test and prod keys are independent
    #[arg(long, value_enum)]
    env: Env,

    /// Total number of executions the key may run (see `update-limit`, `reset-executions`)
    #[arg(long, value_name = "N")]
    executions_limit: u64,

    /// Requests per minute the key may make
    #[arg(
        long,
        value_name = "N",
        alias = "rate-limit",
        default_value_t = DEFAULT_RATE_LIMIT_PER_MINUTE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    rate_limit_per_minute: u32,

    /// Fuel per execution for this key, instead of the server's default
    #[arg(long, value_name = "FUEL", value_parser = clap::value_parser!(u64).range(1..))]
    fuel_limit: Option<u64>,

    /// Sessions the key may have open at once, instead of the server's --sessions-per-key
    /// (0: none)
    #[arg(long, value_name = "N")]
    max_sessions: Option<u32>,

    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: Args, store: &StoreLocation) -> anyhow::Result<()> {
    let (key, record) = super::open(store)?.create(NewKey {
        name: args.name,
        description: args.description,
        env: args.env,
        executions_limit: args.executions_limit,
        rate_limit_per_minute: args.rate_limit_per_minute,
        fuel_limit: args.fuel_limit,
        max_sessions: args.max_sessions,
    })?;
    if args.output.json {
        return print_json(&KeyJson::created(&key, &record));
    }
    print(&format!(
        "Created {} API key {} for \"{}\":\n\n    {}\n\n\
         Copy it now: it is shown only this once, and only its hash is stored.\n\n{}",
        record.env,
        record.id,
        clean(&record.name),
        key.expose_secret(),
        details(&record),
    ))
}
