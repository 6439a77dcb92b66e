//! [`SledStore`]: the sled database of keys, and every read and write of it — creation,
//! authentication, admission (charging and counting), the admin operations, usage history,
//! durability. Owns the `keys` tree (and, through [`UsageCounters`], the hourly counts); may
//! not touch HTTP or the sandbox.

use std::fmt;
use std::fs::Permissions;
use std::fs::{DirBuilder, File, TryLockError};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::commit::GroupCommit;
use super::usage::UsageCounters;
use crate::keys::error::{AdminError, AdmitError, AuthError, StoreError};
use crate::keys::history::{UsageHistory, UsageRetention, hour_of};
use crate::keys::rate::{Clock, MonotonicClock, RateLimitStatus, RateLimiter};
use crate::keys::record::{self, KeyRecord, NewKey, StoredKey};
use crate::keys::token::{ApiKey, KeyId, KeyRef};

/// The sled database directory inside the data directory.
pub const DB_DIR: &str = "keys.sled";
/// How often [`SledStore::open_waiting`] retries a locked database.
pub(crate) const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(25);
/// The sled tree mapping key ID → [`StoredKey`] JSON.
const KEYS_TREE: &[u8] = b"keys";

/// Handle to the key database. Cheap to clone; all clones share the database, the rate
/// limiter and the group-commit state.
#[derive(Clone)]
pub struct SledStore {
    data_dir: Arc<Path>,
    db: sled::Db,
    /// sled's log file, for `fdatasync` after each flush (see [`durable_flush`]).
    log: Arc<File>,
    keys: sled::Tree,
    /// Executions per key and hour, for `GET /usage`'s history.
    usage: UsageCounters,
    usage_retention: UsageRetention,
    limiter: Arc<RateLimiter>,
    committer: Arc<GroupCommit>,
    /// The last write that failed, until a commit succeeds again. sled 0.34 refuses every
    /// write after an I/O error (a full disk, say), so in practice only a restart clears it.
    failure: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// How [`SledStore::open_with`] opens the database.
pub(crate) struct OpenOptions {
    /// sled's own periodic flush (every 500 ms). Durability never depends on it; tests turn
    /// it off to prove that.
    pub(crate) background_flush: bool,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            background_flush: true,
            clock: Arc::new(MonotonicClock::default()),
        }
    }
}

/// The outcome of a compare-and-swap update that may be refused by its closure.
pub(crate) enum Modify<E> {
    NotFound,
    Refused(E),
    Store(StoreError),
}

impl<E> From<sled::Error> for Modify<E> {
    fn from(e: sled::Error) -> Self {
        Modify::Store(e.into())
    }
}

impl<E> From<StoreError> for Modify<E> {
    fn from(e: StoreError) -> Self {
        Modify::Store(e)
    }
}

impl SledStore {
    /// Opens (creating if needed) the database under `data_dir`, creating `data_dir` with
    /// mode 0700 if it does not exist. Fails with [`StoreError::Locked`] while another
    /// process has it open.
    pub fn open(data_dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(data_dir, OpenOptions::default())
    }

    /// Like [`SledStore::open`], but while the database is locked retries for up to `wait`:
    /// a `pyexec keys` command run while no server is up holds the lock for milliseconds,
    /// and `serve` should not fail to start because of it.
    pub fn open_waiting(data_dir: &Path, wait: Duration) -> Result<SledStore, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            match SledStore::open(data_dir) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                result => return result,
            }
        }
    }

    pub(crate) fn open_with(
        data_dir: &Path,
        options: OpenOptions,
    ) -> Result<SledStore, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let db_path = data_dir.join(DB_DIR);
        let db = sled::Config::new()
            .path(&db_path)
            .flush_every_ms(options.background_flush.then_some(500))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(_) if is_locked(&db_path) => StoreError::Locked {
                    path: db_path.clone(),
                },
                e => StoreError::Db(e),
            })?;
        std::fs::set_permissions(&db_path, Permissions::from_mode(0o700)).map_err(|source| {
            StoreError::Permissions {
                path: db_path.clone(),
                source,
            }
        })?;
        let keys = db.open_tree(KEYS_TREE)?;
        let usage = UsageCounters::open(&db)?;
        let log = Arc::new(File::open(db_path.join("db")).map_err(StoreError::Sync)?);
        // Make the (possibly new) directory entries themselves durable, once.
        for dir in [data_dir, db_path.as_path()] {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::Sync)?;
        }
        let committer = GroupCommit::new({
            let (db, log) = (db.clone(), Arc::clone(&log));
            Box::new(move || durable_flush(&db, &log).map_err(|e| crate::error_chain(&e)))
        });
        Ok(SledStore {
            data_dir: data_dir.into(),
            log,
            committer,
            limiter: Arc::new(RateLimiter::new(options.clock)),
            db,
            keys,
            usage,
            usage_retention: UsageRetention::default(),
            failure: Arc::default(),
        })
    }

    /// The data directory this store was opened in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether no key was ever created (first-run detection).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.keys.is_empty())
    }

    /// Creates a key with fresh OS randomness. The returned [`ApiKey`] is the only copy of
    /// the plaintext; the store keeps its SHA-256. Not yet flushed: call [`Self::commit`] or
    /// [`Self::flush_blocking`] before reporting success.
    pub fn create(&self, new: NewKey) -> Result<(ApiKey, KeyRecord), StoreError> {
        new.validate()?;
        loop {
            let (key, stored) = new.draw()?;
            let id = key.id();
            // Insert only if the ID is free; on a (≈2^-47) collision draw a new key.
            if self
                .keys
                .compare_and_swap(id.as_str(), None::<&[u8]>, Some(stored.encode()))?
                .is_ok()
            {
                tracing::info!(key_id = %id, env = %new.env, "API key created");
                return Ok((key, stored.record));
            }
        }
    }

    /// Checks a presented key: well-formed, known, matching hash (constant-time), not
    /// revoked. Logs the key's public ID at most, never the key.
    pub fn authenticate(&self, presented: &str) -> Result<KeyRecord, AuthError> {
        let Some(key) = ApiKey::parse(presented) else {
            tracing::debug!("authentication failed: malformed key");
            return Err(AuthError::Invalid);
        };
        let id = key.id();
        let Some(stored) = self.load(&id)? else {
            tracing::debug!(key_id = %id, "authentication failed: unknown key ID");
            return Err(AuthError::Invalid);
        };
        if !stored.hash.ct_eq(&key.hash()) {
            tracing::debug!(key_id = %id, "authentication failed: secret does not match");
            return Err(AuthError::Invalid);
        }
        if stored.record.is_revoked() {
            tracing::debug!(key_id = %id, "authentication failed: key revoked");
            return Err(AuthError::Revoked);
        }
        Ok(stored.record)
    }

    /// Consumes one unit of the key's per-minute budget if one is left.
    pub fn check_rate(&self, key: &KeyRecord) -> RateLimitStatus {
        self.limiter.check(&key.id, key.rate_limit_per_minute)
    }

    /// The key's per-minute budget, without consuming any (for `GET /usage`).
    pub fn rate_status(&self, key: &KeyRecord) -> RateLimitStatus {
        self.limiter.peek(&key.id, key.rate_limit_per_minute)
    }

    /// Atomically charges one execution (compare-and-swap on the key's record), counts it in
    /// the key's current hour, and returns the executions left after the charge. Of any
    /// number of concurrent calls against a limit `L`, exactly `L` succeed. Call
    /// [`Self::commit`] before telling the client: it makes the charge and its count durable.
    pub fn admit(&self, key_id: &KeyId) -> Result<u64, AdmitError> {
        let updated = self.modify(key_id, |stored| {
            let r = &mut stored.record;
            if r.is_revoked() {
                return Err(AdmitError::Revoked);
            }
            if r.executions_used >= r.executions_limit {
                return Err(AdmitError::LimitExceeded);
            }
            r.executions_used += 1;
            Ok(())
        });
        match updated {
            Ok((_, new)) => match self.usage.count(key_id, OffsetDateTime::now_utc()) {
                Ok(()) => Ok(new.executions_left()),
                Err(e) => Err(AdmitError::Store(self.record_failure(e))),
            },
            Err(Modify::NotFound) => Err(AdmitError::NotFound),
            Err(Modify::Refused(e)) => Err(e),
            Err(Modify::Store(e)) => Err(AdmitError::Store(self.record_failure(e))),
        }
    }

    /// Keeps usage history for `retention` (see [`Self::prune_usage`]).
    pub fn set_usage_retention(&mut self, retention: UsageRetention) {
        self.usage_retention = retention;
    }

    /// The key's executions per hour and per day in the windows that end at `at`.
    pub fn usage_history(
        &self,
        key: &KeyId,
        at: OffsetDateTime,
    ) -> Result<UsageHistory, StoreError> {
        let retention = self.usage_retention;
        let hours = self.usage.hours(key, retention.first_hour_shown(at))?;
        Ok(UsageHistory::from_hours(at, retention, hours))
    }

    /// Deletes every key's hourly counts of the hours that ended before the retention's
    /// cut-off at `at`, key by key; returns how many hours it deleted. Admissions go on
    /// meanwhile (sled has no table lock). Durable with the next flush; a count that comes
    /// back after a crash is deleted again next time.
    pub fn prune_usage(&self, at: OffsetDateTime) -> Result<u64, StoreError> {
        let first_kept_hour = hour_of(self.usage_retention.cutoff(at));
        let mut pruned = 0;
        for id in self.keys.iter().keys() {
            let id = id?;
            if let Some(key) = std::str::from_utf8(&id).ok().and_then(KeyId::parse) {
                pruned += self.usage.prune(&key, first_kept_hour)?;
            }
        }
        Ok(pruned)
    }

    /// Resolves once every write that returned before this call is durable; concurrent
    /// callers share one flush (group commit, see the `keys::commit` module).
    pub async fn commit(&self) -> Result<(), StoreError> {
        match self.committer.commit().await {
            Ok(()) => {
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                Ok(())
            }
            Err(e) => Err(self.record_failure(e)),
        }
    }

    /// The last storage failure, while writes are failing; what `/health` reports.
    pub fn storage_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record_failure(&self, error: StoreError) -> StoreError {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(crate::error_chain(&error));
        error
    }

    /// How many flushes group commit has performed since open (each covers every
    /// [`Self::commit`] waiting at the time); a metric.
    pub fn group_commit_flushes(&self) -> u64 {
        self.committer.flushes()
    }

    /// Flushes everything to disk (final flush on shutdown), on a blocking-pool thread.
    ///
    /// Not `sled::Db::flush_async`: in sled 0.34 concurrent `flush_async` calls deadlock
    /// (spacejam/sled#1308, fixed only on sled's unreleased main branch); the benchmark in
    /// this module hung on it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (db, log) = (self.db.clone(), Arc::clone(&self.log));
        tokio::task::spawn_blocking(move || durable_flush(&db, &log))
            .await
            .map_err(|e| StoreError::Commit(format!("flush task failed: {e}")))?
    }

    /// Flushes everything to disk, blocking the calling thread (for the CLI).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        durable_flush(&self.db, &self.log)
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .export()?
            .into_iter()
            .map(|stored| stored.record)
            .collect())
    }

    /// Every key with its hash, oldest first (what `pyexec store copy` moves).
    pub(crate) fn export(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = self
            .keys
            .iter()
            .map(|entry| {
                let (id, bytes) = entry?;
                StoredKey::decode(&id, &bytes)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        keys.sort_by(|a, b| {
            (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
        });
        Ok(keys)
    }

    /// The key `key` refers to.
    pub fn get(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        Ok(self.resolve(key)?.record)
    }

    /// Revokes the key: it never authenticates or is admitted again. Idempotent; the first
    /// revocation time is kept.
    pub fn revoke(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        let now = record::now();
        let record = self.admin_update(key, |r| {
            r.revoked_at.get_or_insert(now);
        })?;
        tracing::info!(key_id = %record.id, "API key revoked");
        Ok(record)
    }

    /// Sets executions used to 0.
    pub fn reset_executions(&self, key: &KeyRef) -> Result<KeyRecord, AdminError> {
        let record = self.admin_update(key, |r| r.executions_used = 0)?;
        tracing::info!(key_id = %record.id, "API key executions reset");
        Ok(record)
    }

    /// Sets the total executions limit; executions left becomes `limit − used`, floored at 0.
    pub fn update_limit(&self, key: &KeyRef, limit: u64) -> Result<KeyRecord, AdminError> {
        let record = self.admin_update(key, |r| r.executions_limit = limit)?;
        tracing::info!(key_id = %record.id, limit, "API key executions limit updated");
        Ok(record)
    }

    /// Sets how many sessions the key may have open at once (`None`: the server's default).
    pub fn update_max_sessions(
        &self,
        key: &KeyRef,
        max_sessions: Option<u32>,
    ) -> Result<KeyRecord, AdminError> {
        let record = self.admin_update(key, |r| r.max_sessions = max_sessions)?;
        tracing::info!(key_id = %record.id, ?max_sessions, "API key session cap updated");
        Ok(record)
    }

    fn admin_update(
        &self,
        key: &KeyRef,
        mut change: impl FnMut(&mut KeyRecord),
    ) -> Result<KeyRecord, AdminError> {
        let id = self.resolve(key)?.record.id;
        match self.modify(&id, |stored| {
            change(&mut stored.record);
            Ok::<(), std::convert::Infallible>(())
        }) {
            Ok((_, new)) => Ok(new),
            Err(Modify::NotFound) => Err(AdminError::NotFound(key.to_string())),
            Err(Modify::Refused(never)) => match never {},
            Err(Modify::Store(e)) => Err(e.into()),
        }
    }

    /// Finds the record `key` names; a full key must also match the stored hash.
    fn resolve(&self, key: &KeyRef) -> Result<StoredKey, AdminError> {
        let not_found = || AdminError::NotFound(key.to_string());
        let stored = self.load(&key.id())?.ok_or_else(not_found)?;
        match key {
            KeyRef::Id(_) => Ok(stored),
            KeyRef::Key(plain) if stored.hash.ct_eq(&plain.hash()) => Ok(stored),
            KeyRef::Key(_) => Err(not_found()),
        }
    }

    fn load(&self, id: &KeyId) -> Result<Option<StoredKey>, StoreError> {
        self.keys
            .get(id.as_str())?
            .map(|bytes| StoredKey::decode(id.as_str().as_bytes(), &bytes))
            .transpose()
    }

    /// Compare-and-swap loop on one record: read, let `change` edit (or refuse), write back
    /// only if the record is still byte-for-byte what was read, else retry. Admissions and
    /// admin updates therefore never overwrite each other. Returns (old, new).
    pub(crate) fn modify<E>(
        &self,
        id: &KeyId,
        mut change: impl FnMut(&mut StoredKey) -> Result<(), E>,
    ) -> Result<(KeyRecord, KeyRecord), Modify<E>> {
        loop {
            let Some(current) = self.keys.get(id.as_str())? else {
                return Err(Modify::NotFound);
            };
            let old = StoredKey::decode(id.as_str().as_bytes(), &current)?;
            let mut new = old.clone();
            change(&mut new).map_err(Modify::Refused)?;
            let swapped =
                self.keys
                    .compare_and_swap(id.as_str(), Some(&current), Some(new.encode()))?;
            if swapped.is_ok() {
                return Ok((old.record, new.record));
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// `sled::Db::flush` writes sled's buffers and, on Linux, only `sync_file_range`s them: that
/// survives `kill -9` but neither flushes the drive's cache nor the file's metadata. The
/// `fdatasync` after it makes a flush survive power loss too; group commit pays it once per
/// batch.
fn durable_flush(db: &sled::Db, log: &File) -> Result<(), StoreError> {
    db.flush()?;
    log.sync_data().map_err(StoreError::Sync)
}

/// Whether another open file description holds sled's lock on `db_path/db` (sled uses an
/// exclusive `flock`, as does `File::try_lock`).
fn is_locked(db_path: &Path) -> bool {
    let lock_file: PathBuf = db_path.join("db");
    let Ok(file) = File::options().read(true).write(true).open(lock_file) else {
        return false;
    };
    matches!(file.try_lock(), Err(TryLockError::WouldBlock))
}
