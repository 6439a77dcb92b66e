//! The options every command that opens the key store shares: `--store` and the PostgreSQL
//! pool's sizes and timeouts. Owns turning them into a [`StoreLocation`].

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::builder::{MapValueParser, RangedU64ValueParser, TypedValueParser, ValueParserFactory};

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
        value_name = "MS"
    )]
    #[arg(default_value_t = Millis(DEFAULT_CONNECT_TIMEOUT))]
    pub store_connect_timeout_ms: Millis,

    /// Milliseconds one PostgreSQL statement may run (its `statement_timeout`)
    #[arg(
        long,
        global = true,
        env = "PYEXEC_STORE_STATEMENT_TIMEOUT_MS",
        value_name = "MS"
    )]
    #[arg(default_value_t = Millis(DEFAULT_STATEMENT_TIMEOUT))]
    pub store_statement_timeout_ms: Millis,
}

/// A timeout given in whole milliseconds, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_millis())
    }
}

impl ValueParserFactory for Millis {
    type Parser = MapValueParser<RangedU64ValueParser, fn(u64) -> Millis>;

    fn value_parser() -> Self::Parser {
        clap::value_parser!(u64)
            .range(1..)
            .map(|ms| Millis(Duration::from_millis(ms)))
    }
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
        options.connect_timeout = self.store_connect_timeout_ms.0;
        options.statement_timeout = self.store_statement_timeout_ms.0;
        Ok(StoreLocation::Postgres(Box::new(options)))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    fn parse(args: &[&str]) -> Result<PgOptions, clap::Error> {
        let url = ["pyexec", "--store", "postgres://pyexec@db.internal/pyexec"];
        let cli = Cli::try_parse_from([&url[..], args].concat())?;
        match cli.store.location(Path::new("unused")).unwrap() {
            StoreLocation::Postgres(options) => Ok(*options),
            StoreLocation::Sled(_) => panic!("--store names PostgreSQL"),
        }
    }

    #[test]
    fn timeouts_are_whole_positive_milliseconds_defaulting_to_the_stores_own() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(defaults.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
        let given = parse(&[
            "--store-connect-timeout-ms",
            "250",
            "--store-statement-timeout-ms",
            "1",
        ])
        .unwrap();
        assert_eq!(given.connect_timeout, Duration::from_millis(250));
        assert_eq!(given.statement_timeout, Duration::from_millis(1));
        for bad in ["0", "-5", "1.5", "x"] {
            assert!(
                parse(&["--store-statement-timeout-ms", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
