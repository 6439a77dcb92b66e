//! The PostgreSQL schema and its versioned migrations. Owns `pyexec_schema_migrations` and
//! the advisory lock that makes N nodes starting together apply each migration exactly once;
//! may not touch keys' rows.

use deadpool_postgres::{Object, Pool};

use crate::keys::error::StoreError;

/// Every migration, in order; a migration is never edited once released, only added to.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, charges and batched admission",
        sql: include_str!("migrations/0001_keys.sql"),
    },
    Migration {
        version: 2,
        name: "executions per key and hour",
        sql: include_str!("migrations/0002_usage_hourly.sql"),
    },
    Migration {
        version: 3,
        name: "a key's own cap on open sessions",
        sql: include_str!("migrations/0003_max_sessions.sql"),
    },
];

/// The advisory lock held while migrating (an arbitrary constant: "pyexec" in ASCII).
const MIGRATION_LOCK: i64 = 0x7079_6578_6563;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions this call applied (empty when another node or an earlier run had).
    pub applied: Vec<i32>,
    /// The schema version now.
    pub version: i32,
}

/// Applies every pending migration, each in its own transaction, holding a session-level
/// advisory lock so that concurrent callers (several nodes starting at once) wait for each
/// other and find the work done. The connection is discarded afterwards, so the lock can
/// never leak into the pool, whatever fails.
pub async fn migrate(pool: &Pool) -> Result<MigrationReport, StoreError> {
    let mut connection = Object::take(pool.get().await?);
    connection
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    connection
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS pyexec_schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let current: i32 = connection
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pyexec_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let transaction = connection.transaction().await?;
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "INSERT INTO pyexec_schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied a schema migration"
        );
        applied.push(migration.version);
    }
    let version = applied.last().copied().unwrap_or(current);
    if version > latest_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: latest_version(),
        });
    }
    Ok(MigrationReport { applied, version })
}

/// The schema version this binary writes.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
