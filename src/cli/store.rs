//! `pyexec store …`: operations on the key store itself rather than on keys — applying the
//! PostgreSQL schema's migrations, and moving a sled store into PostgreSQL. Owns argument
//! parsing and printing only.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::keys::{DB_DIR, PgOptions, PgStore, SledStore, StoreLocation};

/// Manage the key store itself: PostgreSQL schema migrations, moving keys into PostgreSQL
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    Migrate(MigrateArgs),
    Copy(CopyArgs),
}

/// Copy every key of a sled data directory into PostgreSQL
///
/// Keys keep their ID, hash, name, description, limits, executions used and revocation; the
/// plaintext keys your clients hold keep working. Stop `pyexec serve` on the data directory
/// first (the copy reads a consistent snapshot, and a server holding the database refuses
/// it). Rate-limit budgets start full. Nothing is written if a copied key's ID already exists
/// in PostgreSQL, unless --overwrite is given.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The data directory whose sled key database to copy
    #[arg(long, value_name = "DIR")]
    from: PathBuf,

    /// The PostgreSQL database to copy into (postgres://…)
    #[arg(long, value_name = "URL")]
    to: String,

    /// Replace keys that already exist in PostgreSQL with the copied ones
    #[arg(long)]
    overwrite: bool,
}

/// Apply pending schema migrations to the PostgreSQL store given by --store
///
/// `pyexec serve` and `pyexec keys` apply them too, when they open the store; this runs them
/// on their own (before a rolling upgrade, say). Safe while nodes run and when several
/// processes migrate at once: an advisory lock makes each migration run exactly once.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {}

impl StoreCommand {
    pub fn run(self, store: &StoreLocation) -> anyhow::Result<()> {
        match self {
            StoreCommand::Migrate(MigrateArgs {}) => migrate(store),
            StoreCommand::Copy(args) => copy(args),
        }
    }
}

fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let target = PgOptions::new(&args.to).context("parsing --to")?;
    // Opening would create an empty store: a mistyped --from must not copy nothing "successfully".
    if !args.from.join(DB_DIR).is_dir() {
        anyhow::bail!(
            "no key database in {} (expected {DB_DIR} there)",
            args.from.display()
        );
    }
    let source = SledStore::open(&args.from)
        .with_context(|| format!("opening the key database in {}", args.from.display()))?;
    let keys = source.export().context("reading the keys to copy")?;
    let copied = runtime()?
        .block_on(async {
            PgStore::open(&target)
                .await?
                .import(&keys, args.overwrite)
                .await
        })
        .with_context(|| format!("copying keys into PostgreSQL {}", target.describe()))?;
    println!(
        "Copied {copied} key(s) from {} to PostgreSQL {}.",
        args.from.display(),
        target.describe()
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn migrate(store: &StoreLocation) -> anyhow::Result<()> {
    let StoreLocation::Postgres(options) = store else {
        anyhow::bail!(
            "`pyexec store migrate` needs --store postgres://… (the sled store has no schema)"
        );
    };
    let (_, report) = runtime()?
        .block_on(PgStore::open_migrated(options))
        .with_context(|| format!("migrating the key store {}", store.describe()))?;
    if report.applied.is_empty() {
        println!("Schema is up to date (version {}).", report.version);
    } else {
        let applied: Vec<String> = report.applied.iter().map(i32::to_string).collect();
        println!(
            "Applied migration(s) {}; schema is at version {}.",
            applied.join(", "),
            report.version
        );
    }
    Ok(())
}
