//! The options every command that opens the key store shares: `--store` and the PostgreSQL
//! pool's sizes and timeouts. Owns turning them into a [`StoreLocation`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser;

use super::UsageError;
use crate::keys::postgres::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT,
};
use crate::keys::{PgOptions, StoreLocation};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Where keys, quotas and rate limits live: absent, the sled database in the data
    /// directory; `postgres://USER:PASSWORD@HOST:PORT/DB`, a PostgreSQL database that many
    /// nodes can share
    #[arg(long, global = true, env = "PYEXEC_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// PostgreSQL connections this process keeps at most
    #[arg(
        long,
        global = true,
        env = "PYEXEC_STORE_POOL_SIZE",
        default_value_t = DEFAULT_POOL_SIZE,
        value_parser = clap::value_parser!(u16).range(1..).map(usize::from),
        value_name = "N"
    )]
    pub store_pool_size: usize,

    /// Milliseconds to connect to PostgreSQL, or to wait for a free pooled connection
    #[arg(
        long,
        global = true,
        env = "PYEXEC_STORE_CONNECT_TIMEOUT_MS",
        default_value_t = DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    pub store_connect_timeout_ms: u64,

    /// Milliseconds one PostgreSQL statement may run (its `statement_timeout`)
    #[arg(
        long,
        global = true,
        env = "PYEXEC_STORE_STATEMENT_TIMEOUT_MS",
        default_value_t = DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "MS"
    )]
    pub store_statement_timeout_ms: u64,
}

impl StoreArgs {
    /// The store these options name, with `data_dir` for sled.
    pub fn location(&self, data_dir: &Path) -> anyhow::Result<StoreLocation> {
        let Some(url) = &self.store else {
            return Ok(StoreLocation::Sled(data_dir.to_owned()));
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let wrong = anyhow::anyhow!("--store must be a postgres:// or postgresql:// URL");
            return Err(UsageError(wrong).into());
        }
        let mut options = PgOptions::new(url)
            .context("parsing --store")
            .map_err(UsageError)?;
        options.pool_size = self.store_pool_size;
        options.connect_timeout = Duration::from_millis(self.store_connect_timeout_ms);
        options.statement_timeout = Duration::from_millis(self.store_statement_timeout_ms);
        Ok(StoreLocation::Postgres(Box::new(options)))
    }
}
