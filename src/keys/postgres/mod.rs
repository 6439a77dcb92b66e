//! The cluster backend: keys, quotas, rate-limit state and a ledger of charges in PostgreSQL,
//! shared by every node that points `--store` at the same database. Owns the connection pool,
//! the schema ([`migrate`]), batched admission (`batch`), usage history and retention
//! (`usage`) and the admin queries; may not touch HTTP or sled. Nodes keep no authoritative
//! state in memory: every admission is decided and committed by the database before it
//! returns, so revocations and limit changes made on any machine apply to the next request on
//! every node.
//!
//! Outages: a statement that fails or does not answer fails its admissions with
//! [`StoreError::Unavailable`] (the API answers 503 `storage_unavailable`, nothing runs);
//! broken connections are dropped from the pool and replaced on the next use, so a node
//! recovers by itself once the database is back. If a commit's outcome is unknown (the
//! connection died during it) the store may have counted an execution that never ran — an
//! over-count of at most that batch, never an under-count.
//!
//! Group commit, measured with `cargo test --release --test cluster bench_admissions --
//! --ignored --nocapture` (64 tasks × 100 admissions, PostgreSQL 15 on the same 2-core VM;
//! two runs, 2026-12-04):
//!
//! | admissions                               | 1 hot key                    | 64 keys                    |
//! |------------------------------------------|------------------------------|----------------------------|
//! | batched, 2 batches in flight (default)   | 15 661–16 573/s, p99 15–19 ms | 8 825–8 978/s, p99 12–14 ms |
//! | batched, 1 batch in flight               | 19 986–27 361/s, p99 5–8 ms   | 7 797–8 077/s, p99 11–12 ms |
//! | one statement each, 16 connections       | 1 042–1 045/s, p99 134–137 ms | 2 432–2 601/s, p99 58–66 ms |
//!
//! One hot key gains 15×: unbatched, every admission waits for the row lock and then its own
//! commit (fsync); batched, one lock and one commit cover the whole batch. With two batches in
//! flight the second waits on the hot key's row lock while the first commits (half of a
//! batch's time in `scripts/bench_cluster.py`'s statement profile), so one in flight is faster
//! for a hot key; but for many keys two batches use the database's cores at once and one in
//! flight is 10% slower, and over HTTP (`bench_cluster.py`, one key) two pairs of runs did
//! not tell them apart (53–82% vs 56–63% of sled's requests/s). The default stays at two.

mod batch;
pub mod migrate;
mod usage;

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{GenericClient, NoTls, Row};

use self::batch::{BatchShape, Decision};
use super::error::{AdminError, AdmitError, AuthError, StoreError};
use super::history::{UsageHistory, UsageRetention};
use super::rate;
use super::record::{KeyRecord, NewKey, StoredKey};
use super::store::{Admitted, Caller};
use super::token::{ApiKey, KeyHash, KeyId, KeyRef};

pub use self::migrate::MigrationReport;

/// Connections a node keeps to PostgreSQL unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long connecting (or waiting for a free pooled connection) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run by default (`statement_timeout`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most admissions in one batched statement.
const MAX_BATCH: usize = 1024;
/// Admission batches committed at once per node: one committing while the next one forms.
const BATCHES_IN_FLIGHT: usize = 2;

/// The key columns, in the order [`record_from_row`] reads them.
const KEY_COLUMNS: &str = "id, hash, name, description, env, created_at, executions_limit, \
     executions_used, rate_limit_per_minute, fuel_limit, revoked_at, rate_tat_ns, max_sessions";
/// The database clock in nanoseconds since the Unix epoch, as the admission function reads it.
const CLOCK_NS: &str = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint";

/// How to reach PostgreSQL and how hard to try.
#[derive(Clone)]
pub struct PgOptions {
    /// Parsed from a `postgres://…` URL (or key=value string).
    pub config: tokio_postgres::Config,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Most admissions per statement; 1 turns group commit off (for benchmarks).
    pub max_batch: usize,
    /// Admission statements in flight at once.
    pub batches_in_flight: usize,
}

impl PgOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: &str) -> Result<PgOptions, StoreError> {
        Ok(PgOptions {
            config: url
                .parse()
                .map_err(|e| StoreError::InvalidUrl(crate::error_chain(&e)))?,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_batch: MAX_BATCH,
            batches_in_flight: BATCHES_IN_FLIGHT,
        })
    }

    /// `host:port/dbname`, for messages: never the password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self
            .config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("");
        format!("{host}:{port}/{db}")
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("database", &self.describe())
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Handle to the PostgreSQL store. Cheap to clone; clones share the pool and the batcher.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    admissions: mpsc::UnboundedSender<batch::Request>,
    database: String,
    probe_timeout: Duration,
    usage_retention: UsageRetention,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, checks the database answers, and applies pending migrations. Must be
    /// called inside a tokio runtime.
    pub async fn open(options: &PgOptions) -> Result<PgStore, StoreError> {
        let (store, _) = PgStore::open_migrated(options).await?;
        Ok(store)
    }

    /// [`Self::open`], also saying which migrations it applied (for `pyexec store migrate`).
    pub async fn open_migrated(
        options: &PgOptions,
    ) -> Result<(PgStore, MigrationReport), StoreError> {
        let pool = pool(options)?;
        let report = migrate::migrate(&pool).await.map_err(|e| match e {
            StoreError::Unavailable(message) => StoreError::Connect {
                database: options.describe(),
                message,
            },
            StoreError::Postgres(e) if e.as_db_error().is_none() => StoreError::Connect {
                database: options.describe(),
                message: crate::error_chain(&e),
            },
            other => other,
        })?;
        let admissions = batch::start(
            pool.clone(),
            BatchShape {
                max_batch: options.max_batch.max(1),
                in_flight: options.batches_in_flight.max(1),
                deadline: options.connect_timeout + options.statement_timeout,
            },
        );
        let store = PgStore {
            pool,
            admissions,
            database: options.describe(),
            probe_timeout: options.connect_timeout,
            usage_retention: UsageRetention::default(),
        };
        Ok((store, report))
    }

    /// Whether the database answers a trivial query now; the error says why not.
    pub async fn probe(&self) -> Result<(), String> {
        let probe = async {
            let client = self.pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<(), StoreError>(())
        };
        match tokio::time::timeout(self.probe_timeout, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "PostgreSQL at {} is unavailable: {}",
                self.database,
                crate::error_chain(&e)
            )),
            Err(_) => Err(format!(
                "PostgreSQL at {} did not answer within {:?}",
                self.database, self.probe_timeout
            )),
        }
    }

    pub async fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        let Some(key) = ApiKey::parse(presented) else {
            tracing::debug!("authentication failed: malformed key");
            return Err(AuthError::Invalid);
        };
        let id = key.id();
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS}, {CLOCK_NS} FROM pyexec_keys WHERE id = $1"
            ))
            .await
            .map_err(StoreError::from)?;
        let Some(row) = client
            .query_opt(&statement, &[&id.as_str()])
            .await
            .map_err(StoreError::from)?
        else {
            tracing::debug!(key_id = %id, "authentication failed: unknown key ID");
            return Err(AuthError::Invalid);
        };
        let stored = stored_from_row(&row)?;
        if !stored.hash.ct_eq(&key.hash()) {
            tracing::debug!(key_id = %id, "authentication failed: secret does not match");
            return Err(AuthError::Invalid);
        }
        if stored.record.is_revoked() {
            tracing::debug!(key_id = %id, "authentication failed: key revoked");
            return Err(AuthError::Revoked);
        }
        let tat: Option<i64> = row.try_get(11).map_err(StoreError::from)?;
        let now: i64 = row.try_get(13).map_err(StoreError::from)?;
        let rate = rate::peek(
            stored.record.rate_limit_per_minute,
            nanos(now),
            tat.map(nanos),
        );
        Ok(Caller::new(stored.record, rate, stored.hash))
    }

    /// Queues the admission for the next batch and waits for the batch's commit.
    pub async fn admit(&self, caller: &Caller) -> Result<Admitted, AdmitError> {
        let (reply, decided) = oneshot::channel();
        let request = batch::Request {
            key_id: caller.record.id.as_str().to_owned(),
            hash: caller.hash().as_bytes().to_vec(),
            execution_id: format!("{:032x}", rand::random::<u128>()),
            reply,
        };
        let gone = || StoreError::Unavailable("the admission batcher stopped".into());
        self.admissions.send(request).map_err(|_| gone())?;
        let decision = decided.await.map_err(|_| gone())??;
        decide(&decision)
    }

    /// Keeps charges and hourly counts for `retention` (see [`Self::prune_usage`]).
    pub fn set_usage_retention(&mut self, retention: UsageRetention) {
        self.usage_retention = retention;
    }

    /// The key's executions per hour and per day in the windows that end at `at`.
    pub async fn usage_history(
        &self,
        key: &KeyId,
        at: OffsetDateTime,
    ) -> Result<UsageHistory, StoreError> {
        usage::history(&self.pool, key, at, self.usage_retention).await
    }

    /// Deletes the charges and hourly counts older than the retention at `at`, in batches;
    /// returns how many rows it deleted (0 while another node is pruning).
    pub async fn prune_usage(&self, at: OffsetDateTime) -> Result<u64, StoreError> {
        usage::prune(&self.pool, at, self.usage_retention).await
    }

    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM pyexec_keys)", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Creates a key; committed before it returns.
    pub async fn create(&self, new: NewKey) -> Result<(ApiKey, KeyRecord), StoreError> {
        new.validate()?;
        loop {
            let (key, stored) = new.draw()?;
            // On a (≈2^-47) ID collision, draw a new key.
            let client = self.pool.get().await?;
            if insert(&**client, &stored, false).await? {
                tracing::info!(key_id = %stored.record.id, env = %new.env, "API key created");
                return Ok((key, stored.record));
            }
        }
    }

    /// Copies `keys` (hash, limits, counts and revocation intact) into this store in one
    /// transaction. Without `overwrite`, refuses — writing nothing — if any of their IDs is
    /// already here; with it, replaces those keys. Returns how many keys were written.
    pub(crate) async fn import(
        &self,
        keys: &[StoredKey],
        overwrite: bool,
    ) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let mut existing = Vec::new();
        for stored in keys {
            if !insert(&*transaction, stored, overwrite).await? {
                existing.push(stored.record.id.to_string());
            }
        }
        if !existing.is_empty() {
            return Err(StoreError::AlreadyExists(existing.join(", ")));
        }
        transaction.commit().await?;
        Ok(keys.len())
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let client = self.pool.get().await?;
        client
            .query(
                format!("SELECT {KEY_COLUMNS} FROM pyexec_keys ORDER BY created_at, id").as_str(),
                &[],
            )
            .await?
            .iter()
            .map(|row| Ok(stored_from_row(row)?.record))
            .collect()
    }

    /// The key `key` refers to; a full key must also match the stored hash.
    pub async fn get(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        self.update(key, "").await
    }

    /// Revokes the key; the first revocation time is kept.
    pub async fn revoke(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        let record = self
            .update(key, "revoked_at = coalesce(revoked_at, now())")
            .await?;
        tracing::info!(key_id = %record.id, "API key revoked");
        Ok(record)
    }

    /// Sets executions used to 0.
    pub async fn reset_executions(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        let record = self.update(key, "executions_used = 0").await?;
        tracing::info!(key_id = %record.id, "API key executions reset");
        Ok(record)
    }

    /// Sets the total executions limit.
    pub async fn update_limit(&self, key: &KeyRef, limit: u64) -> Result<KeyRecord, AdminError> {
        let record = self
            .update(key, &format!("executions_limit = {}", to_bigint(limit)))
            .await?;
        tracing::info!(key_id = %record.id, limit, "API key executions limit updated");
        Ok(record)
    }

    /// Sets how many sessions the key may have open at once (`None`: the server's default).
    pub async fn update_max_sessions(
        &self,
        key: &KeyRef,
        max_sessions: Option<u32>,
    ) -> Result<KeyRecord, AdminError> {
        let value = max_sessions.map_or_else(|| "NULL".to_owned(), |n| n.to_string());
        let record = self.update(key, &format!("max_sessions = {value}")).await?;
        tracing::info!(key_id = %record.id, ?max_sessions, "API key session cap updated");
        Ok(record)
    }

    /// Applies `assignments` (SQL `SET` list; empty: read only) to the key `key` names, in
    /// one statement, and returns the record after it.
    async fn update(&self, key: &KeyRef, assignments: &str) -> Result<KeyRecord, AdminError> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let sql = if assignments.is_empty() {
            format!("SELECT {KEY_COLUMNS} FROM pyexec_keys WHERE id = $1")
        } else {
            format!("UPDATE pyexec_keys SET {assignments} WHERE id = $1 RETURNING {KEY_COLUMNS}")
        };
        let not_found = || AdminError::NotFound(key.to_string());
        if let KeyRef::Key(plain) = key {
            // A full key must match before anything changes.
            let row = client
                .query_opt(
                    "SELECT hash FROM pyexec_keys WHERE id = $1",
                    &[&plain.id().as_str()],
                )
                .await
                .map_err(StoreError::from)?
                .ok_or_else(not_found)?;
            let hash: Vec<u8> = row.try_get(0).map_err(StoreError::from)?;
            if !KeyHash::from_slice(&hash).is_some_and(|h| h.ct_eq(&plain.hash())) {
                return Err(not_found());
            }
        }
        let row = client
            .query_opt(sql.as_str(), &[&key.id().as_str()])
            .await
            .map_err(StoreError::from)?
            .ok_or_else(not_found)?;
        Ok(stored_from_row(&row)?.record)
    }
}

/// Inserts a stored key as it is; with `overwrite`, replaces a key with the same ID (its
/// rate-limit state included). Returns whether a row was written.
async fn insert(
    client: &impl GenericClient,
    stored: &StoredKey,
    overwrite: bool,
) -> Result<bool, StoreError> {
    let r = &stored.record;
    let on_conflict = if overwrite {
        "ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, name = EXCLUDED.name, \
         description = EXCLUDED.description, env = EXCLUDED.env, \
         created_at = EXCLUDED.created_at, executions_limit = EXCLUDED.executions_limit, \
         executions_used = EXCLUDED.executions_used, \
         rate_limit_per_minute = EXCLUDED.rate_limit_per_minute, \
         fuel_limit = EXCLUDED.fuel_limit, revoked_at = EXCLUDED.revoked_at, rate_tat_ns = NULL, \
         max_sessions = EXCLUDED.max_sessions"
    } else {
        "ON CONFLICT (id) DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO pyexec_keys (id, hash, name, description, env, created_at, \
         executions_limit, executions_used, rate_limit_per_minute, fuel_limit, revoked_at, \
         max_sessions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) {on_conflict}"
    );
    let written = client
        .execute(
            sql.as_str(),
            &[
                &r.id.as_str(),
                &stored.hash.as_bytes().as_slice(),
                &r.name,
                &r.description,
                &r.env.as_str(),
                &r.created_at,
                &to_bigint(r.executions_limit),
                &to_bigint(r.executions_used),
                &i32::try_from(r.rate_limit_per_minute).unwrap_or(i32::MAX),
                &r.fuel_limit.map(to_bigint),
                &r.revoked_at,
                &r.max_sessions.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            ],
        )
        .await?;
    Ok(written == 1)
}

/// The pool: connections created lazily, checked on reuse, each with the statement timeout.
fn pool(options: &PgOptions) -> Result<Pool, StoreError> {
    let mut config = options.config.clone();
    config
        .connect_timeout(options.connect_timeout)
        .application_name("pyexec")
        .options(format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// The API's view of one decision of `pyexec_admit`.
fn decide(decision: &Decision) -> Result<Admitted, AdmitError> {
    let per_minute = u32::try_from(decision.rate_limit).unwrap_or(1);
    let (rate, _) = rate::decide(
        per_minute,
        nanos(decision.now_ns),
        Some(nanos(decision.tat_ns)),
    );
    match decision.outcome.as_str() {
        "admitted" => Ok(Admitted {
            executions_left: u64::try_from(decision.executions_left).unwrap_or(0),
            rate,
        }),
        "rate_limited" => Err(AdmitError::RateLimited(rate)),
        "exhausted" => Err(AdmitError::LimitExceeded),
        "revoked" => Err(AdmitError::Revoked),
        "invalid" => Err(AdmitError::NotFound),
        other => Err(AdmitError::Store(StoreError::Unavailable(format!(
            "unknown admission outcome {other:?}"
        )))),
    }
}

fn stored_from_row(row: &Row) -> Result<StoredKey, StoreError> {
    let id: String = row.try_get(0)?;
    let corrupt = |what: &str| StoreError::CorruptRow {
        key: id.clone(),
        what: what.to_owned(),
    };
    let hash: Vec<u8> = row.try_get(1)?;
    let executions_limit: i64 = row.try_get(6)?;
    let executions_used: i64 = row.try_get(7)?;
    let rate_limit: i32 = row.try_get(8)?;
    let fuel_limit: Option<i64> = row.try_get(9)?;
    let max_sessions: Option<i32> = row.try_get(12)?;
    let key_id = KeyId::parse(&id).ok_or_else(|| corrupt("id"))?;
    Ok(StoredKey {
        hash: KeyHash::from_slice(&hash).ok_or_else(|| corrupt("hash"))?,
        record: KeyRecord {
            env: key_id.env(),
            id: key_id,
            name: row.try_get(2)?,
            description: row.try_get(3)?,
            created_at: row.try_get(5)?,
            executions_limit: u64::try_from(executions_limit).map_err(|_| corrupt("limit"))?,
            executions_used: u64::try_from(executions_used).map_err(|_| corrupt("used"))?,
            rate_limit_per_minute: u32::try_from(rate_limit).map_err(|_| corrupt("rate"))?,
            fuel_limit: fuel_limit
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("fuel"))?,
            max_sessions: max_sessions
                .map(u32::try_from)
                .transpose()
                .map_err(|_| corrupt("max sessions"))?,
            revoked_at: row.try_get(10)?,
        },
    })
}

/// Counts and limits are `bigint`: values past `i64::MAX` (≈9.2·10^18) are stored as that.
fn to_bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Nanoseconds since the Unix epoch on the database's clock, as a [`Duration`].
fn nanos(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}
