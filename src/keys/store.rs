//! [`KeyStore`]: the one interface to keys, quotas and rate limits that `serve` and the API
//! layer see, whichever backend holds them — sled in the data directory ([`SledStore`]) or
//! PostgreSQL shared by many nodes ([`PgStore`]). Owns the choice of backend and the meaning
//! of each operation; the backends own how. May not touch HTTP.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::error::{AdminError, AdmitError, AuthError, StoreError};
use super::history::{USAGE_PRUNE_INTERVAL, UsageHistory, UsageRetention};
use super::postgres::{PgOptions, PgStore};
use super::rate::RateLimitStatus;
use super::record::{KeyRecord, NewKey};
use super::sled::SledStore;
use super::token::{ApiKey, KeyHash, KeyId, KeyRef};

/// Where keys live, as chosen by `--store`.
#[derive(Clone, Debug)]
pub enum StoreLocation {
    /// The sled database in this data directory (the default).
    Sled(PathBuf),
    /// A PostgreSQL database, possibly shared by many nodes.
    Postgres(Box<PgOptions>),
}

impl StoreLocation {
    /// `in <dir>` or `at host:port/db`, for messages (never a password).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sled(data_dir) => format!("in {}", data_dir.display()),
            StoreLocation::Postgres(options) => format!("at PostgreSQL {}", options.describe()),
        }
    }
}

/// Handle to the key store. Cheap to clone; clones share the database.
#[derive(Clone, Debug)]
pub enum KeyStore {
    Sled(SledStore),
    Postgres(PgStore),
}

/// A presented key that authenticated: its record and rate budget as they stood, and what
/// admission needs to check the key again.
#[derive(Clone, Debug)]
pub struct Caller {
    pub record: KeyRecord,
    /// The per-minute budget, without consuming any.
    pub rate: RateLimitStatus,
    hash: KeyHash,
}

/// An execution that was admitted and charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Executions the key has left after this one.
    pub executions_left: u64,
    /// The per-minute budget after this execution.
    pub rate: RateLimitStatus,
}

impl Caller {
    pub(crate) fn new(record: KeyRecord, rate: RateLimitStatus, hash: KeyHash) -> Caller {
        Caller { record, rate, hash }
    }

    pub(crate) fn hash(&self) -> &KeyHash {
        &self.hash
    }
}

impl KeyStore {
    /// Opens the store at `location`: for sled, waiting up to `wait` for a database another
    /// process holds for a moment; for PostgreSQL, connecting and running pending migrations.
    pub async fn open(
        location: &StoreLocation,
        wait: std::time::Duration,
    ) -> Result<KeyStore, StoreError> {
        Ok(match location {
            StoreLocation::Sled(data_dir) => {
                KeyStore::Sled(SledStore::open_waiting(data_dir, wait)?)
            }
            StoreLocation::Postgres(options) => KeyStore::Postgres(PgStore::open(options).await?),
        })
    }

    /// Checks a presented key: well-formed, known, matching hash (constant-time), not
    /// revoked. Logs the key's public ID at most, never the key.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        match self {
            KeyStore::Sled(store) => {
                let record = store.authenticate(presented)?;
                let rate = store.rate_status(&record);
                let hash = ApiKey::parse(presented).ok_or(AuthError::Invalid)?.hash();
                Ok(Caller::new(record, rate, hash))
            }
            KeyStore::Postgres(store) => store.authenticate(presented).await,
        }
    }

    /// Admits one execution for `caller` as one atomic step: the key still authenticates and
    /// is not revoked, its per-minute budget has room (a unit is consumed), and its quota has
    /// room (one execution is charged). Of any number of concurrent admissions against a
    /// limit `L`, on any number of nodes sharing the store, exactly `L` succeed. Await
    /// [`Self::commit`] before telling the client.
    pub async fn admit(&self, caller: &Caller) -> Result<Admitted, AdmitError> {
        match self {
            KeyStore::Sled(store) => {
                let rate = store.check_rate(&caller.record);
                if !rate.allowed {
                    return Err(AdmitError::RateLimited(rate));
                }
                let executions_left = store.admit(&caller.record.id)?;
                Ok(Admitted {
                    executions_left,
                    rate,
                })
            }
            KeyStore::Postgres(store) => store.admit(caller).await,
        }
    }

    /// Resolves once every admission that returned before this call is durable. sled makes
    /// charges durable in groups (one flush for all waiting callers); PostgreSQL's admissions
    /// are committed before they return, so there it resolves at once.
    pub async fn commit(&self) -> Result<(), StoreError> {
        match self {
            KeyStore::Sled(store) => store.commit().await,
            KeyStore::Postgres(_) => Ok(()),
        }
    }

    /// Why the store cannot serve admissions right now, if it cannot, and what clears it:
    /// sled's last failed write (only a restart clears it), or PostgreSQL not answering a
    /// probe (clears by itself once the database answers).
    pub async fn unavailable(&self) -> Option<String> {
        match self {
            KeyStore::Sled(store) => store.storage_failure().map(|failure| {
                format!(
                    "the key database is failing ({failure}); restart the service once the \
                     cause is fixed"
                )
            }),
            KeyStore::Postgres(store) => {
                store.probe().await.err().map(|failure| {
                    format!("{failure}; executions are refused until it answers again")
                })
            }
        }
    }

    /// This store, keeping usage records (PostgreSQL's charges, both backends' hourly
    /// counts) for `retention` instead of the default 30 days; the history's daily window is
    /// as long as the retention, up to 30 days.
    pub fn with_usage_retention(mut self, retention: UsageRetention) -> KeyStore {
        match &mut self {
            KeyStore::Sled(store) => store.set_usage_retention(retention),
            KeyStore::Postgres(store) => store.set_usage_retention(retention),
        }
        self
    }

    /// The key's executions per UTC hour (the 24 hours up to `at`) and per UTC day (up to
    /// 30 days, within the retention), every bucket present, oldest first.
    pub async fn usage_history(
        &self,
        key: &KeyId,
        at: OffsetDateTime,
    ) -> Result<UsageHistory, StoreError> {
        match self {
            KeyStore::Sled(store) => store.usage_history(key, at),
            KeyStore::Postgres(store) => store.usage_history(key, at).await,
        }
    }

    /// Deletes every key's usage records from before the retention's cut-off at `at` (sled
    /// and the hourly counts by whole hours), without holding up admissions; returns how
    /// many records it deleted. Safe to run on every node at once.
    pub async fn prune_usage(&self, at: OffsetDateTime) -> Result<u64, StoreError> {
        match self {
            KeyStore::Sled(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.prune_usage(at))
                    .await
                    .map_err(|e| StoreError::Commit(format!("pruning task failed: {e}")))?
            }
            KeyStore::Postgres(store) => store.prune_usage(at).await,
        }
    }

    /// Prunes usage records now and every [`USAGE_PRUNE_INTERVAL`], for as long as the
    /// future is polled (`serve` spawns it). A failed round is logged and retried next time.
    pub async fn prune_usage_periodically(self) {
        loop {
            match self.prune_usage(OffsetDateTime::now_utc()).await {
                Ok(0) => {}
                Ok(records) => tracing::info!(records, "pruned usage records past the retention"),
                Err(e) => tracing::warn!(
                    error = %crate::error_chain(&e),
                    "pruning usage records failed; retrying later"
                ),
            }
            tokio::time::sleep(USAGE_PRUNE_INTERVAL).await;
        }
    }

    /// Makes everything durable before the process exits.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            KeyStore::Sled(store) => store.flush().await,
            KeyStore::Postgres(_) => Ok(()),
        }
    }

    /// Whether no key was ever created (first-run detection).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            KeyStore::Sled(store) => store.is_empty(),
            KeyStore::Postgres(store) => store.is_empty().await,
        }
    }

    /// Creates a key with fresh OS randomness, durably. The returned [`ApiKey`] is the only
    /// copy of the plaintext; the store keeps its SHA-256.
    pub async fn create(&self, new: NewKey) -> Result<(ApiKey, KeyRecord), StoreError> {
        match self {
            KeyStore::Sled(store) => {
                let created = store.create(new)?;
                store.commit().await?;
                Ok(created)
            }
            KeyStore::Postgres(store) => store.create(new).await,
        }
    }

    /// The key `key` refers to.
    pub async fn get(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        match self {
            KeyStore::Sled(store) => store.get(key),
            KeyStore::Postgres(store) => store.get(key).await,
        }
    }

    /// Revokes the key, durably: it never authenticates or is admitted again.
    pub async fn revoke(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        match self {
            KeyStore::Sled(store) => {
                let record = store.revoke(key)?;
                store.commit().await?;
                Ok(record)
            }
            KeyStore::Postgres(store) => store.revoke(key).await,
        }
    }
}
