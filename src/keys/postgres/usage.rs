//! Usage history and retention on PostgreSQL: reads a key's hours from
//! `pyexec_usage_hourly` (kept by the trigger of migration 2) and deletes charges and hours
//! older than the retention. Owns those queries; may not decide admissions.
//!
//! Pruning runs on every node, in batches of [`PRUNE_BATCH`] rows, each batch its own short
//! transaction under a transaction-level advisory lock that only one node gets at a time (the
//! others skip that round). A batch deletes only rows older than the cut-off — never a row an
//! admission writes or locks (admissions insert new charges and update the current hour) — and
//! finds them key by key through the `(key_id, charged_at)` and `(key_id, hour)` indexes, so
//! admission is never blocked and no table is scanned whole.
//!
//! Why a table of hours rather than counting the ledger on each `GET /usage`: with 2 million
//! charges of one key in 30 days (a key doing under one execution a second), grouping them by
//! hour took 360–500 ms per request on this VM, reading its 720 hours 0.7 ms. A pruning batch
//! of 5,000 charges took 16 ms (index range scans per key, then a TID scan), among 3 million.
//!
//! Counting costs admissions little: `cargo test --test cluster bench_hourly_counting --
//! --ignored --nocapture` (64 tasks × 200 admissions, the trigger enabled and disabled in
//! alternate rounds, debug build with optimised dependencies, PostgreSQL 15 on the same 2-core
//! VM; medians of 4 rounds, two runs) measured 19.3k vs 20.5k and 15.1k vs 15.2k admissions/s
//! for one hot key (0–6% slower), 11.4k vs 14.1k and 10.1k vs 10.6k for 64 keys (5–19%; the
//! rounds without it spread as widely): one upsert per key per batch, under the key's lock
//! the batch already holds.

use deadpool_postgres::Pool;
use time::OffsetDateTime;

use crate::keys::error::StoreError;
use crate::keys::history::{UsageHistory, UsageRetention, hour_of, hour_start};
use crate::keys::token::KeyId;

/// Most rows of each table one pruning transaction deletes.
const PRUNE_BATCH: i64 = 5000;
/// The advisory lock a pruning transaction holds ("pyexecpr" in ASCII).
const PRUNE_LOCK: i64 = 0x7079_6578_6563_7072;

/// Charges made before `$1`, at most `$2` of them, found key by key.
const OLD_CHARGES: &str = "DELETE FROM pyexec_charges WHERE ctid = ANY (ARRAY(
        SELECT c.ctid FROM pyexec_keys k CROSS JOIN LATERAL (
            SELECT ctid FROM pyexec_charges WHERE key_id = k.id AND charged_at < $1 LIMIT $2
        ) c LIMIT $2))";
/// Hours that started before `$1`, at most `$2` of them, found key by key.
const OLD_HOURS: &str = "DELETE FROM pyexec_usage_hourly WHERE ctid = ANY (ARRAY(
        SELECT h.ctid FROM pyexec_keys k CROSS JOIN LATERAL (
            SELECT ctid FROM pyexec_usage_hourly WHERE key_id = k.id AND hour < $1 LIMIT $2
        ) h LIMIT $2))";

/// The key's executions per hour and per day in the windows that end at `at`.
pub(super) async fn history(
    pool: &Pool,
    key: &KeyId,
    at: OffsetDateTime,
    retention: UsageRetention,
) -> Result<UsageHistory, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT hour, executions FROM pyexec_usage_hourly WHERE key_id = $1 AND hour >= $2",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&key.as_str(), &hour_start(retention.first_hour_shown(at))],
        )
        .await?;
    let hours = rows
        .iter()
        .map(|row| {
            let hour: OffsetDateTime = row.try_get(0)?;
            let executions: i64 = row.try_get(1)?;
            Ok((hour_of(hour), u64::try_from(executions).unwrap_or(0)))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(UsageHistory::from_hours(at, retention, hours))
}

/// Deletes the charges made before the retention's cut-off at `at` and the hours that ended
/// before it, batch by batch; returns how many rows it deleted (0 when another node holds the
/// pruning lock).
pub(super) async fn prune(
    pool: &Pool,
    at: OffsetDateTime,
    retention: UsageRetention,
) -> Result<u64, StoreError> {
    let cutoff = retention.cutoff(at);
    let first_kept_hour = hour_start(hour_of(cutoff));
    let mut pruned = 0;
    loop {
        let mut client = pool.get().await?;
        let transaction = client.transaction().await?;
        let locked: bool = transaction
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?
            .try_get(0)?;
        if !locked {
            return Ok(pruned);
        }
        let charges = transaction
            .execute(OLD_CHARGES, &[&cutoff, &PRUNE_BATCH])
            .await?;
        let hours = transaction
            .execute(OLD_HOURS, &[&first_kept_hour, &PRUNE_BATCH])
            .await?;
        transaction.commit().await?;
        pruned += charges + hours;
        if charges < PRUNE_BATCH as u64 && hours < PRUNE_BATCH as u64 {
            return Ok(pruned);
        }
    }
}
