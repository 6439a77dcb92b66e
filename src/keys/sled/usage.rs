//! [`UsageCounters`]: executions per key and per UTC hour in the sled tree `usage_hourly`,
//! what `GET /usage` shows as history on the embedded store. Owns that tree only; may not
//! touch keys' records.
//!
//! An entry is `key ID ‖ hour since the Unix epoch (u64, big-endian)` → executions (u64,
//! big-endian), so one key's hours are one contiguous, ordered range: reading a key's history
//! and pruning its old hours are range scans. A charge adds one with sled's merge operator,
//! right after the charge itself and before the caller waits for the group commit, so the
//! flush that makes the charge durable makes its count durable too: every acknowledged
//! execution is counted. The two are separate sled writes (a
//! sled transaction across trees would take sled's global write lock on every admission), so a
//! crash between them can leave one charged but never acknowledged execution uncounted.
//!
//! Measured with `cargo test --lib keys::sled::usage::tests::bench_ -- --ignored
//! --nocapture` (4 threads, one key, debug build with optimised dependencies, 2-core VM): a
//! count takes 2–4 µs of an admission's 27–33 µs before the durability wait, which itself
//! takes 0.5–1.5 ms (group commit), so an admitted request's store time grows by well under 1%.

use time::OffsetDateTime;

use crate::keys::error::StoreError;
use crate::keys::history::hour_of;
use crate::keys::token::KeyId;

/// The sled tree of hourly counts.
const USAGE_TREE: &[u8] = b"usage_hourly";

/// Handle to the hourly counts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct UsageCounters {
    hours: sled::Tree,
}

impl UsageCounters {
    pub(crate) fn open(db: &sled::Db) -> Result<UsageCounters, StoreError> {
        let hours = db.open_tree(USAGE_TREE)?;
        hours.set_merge_operator(add_counts);
        Ok(UsageCounters { hours })
    }

    /// Counts one execution of `key` at `at`.
    pub(crate) fn count(&self, key: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.hours
            .merge(entry(key, hour_of(at)), 1u64.to_be_bytes())?;
        Ok(())
    }

    /// `(hour, executions)` of every counted hour of `key` from `first_hour` on.
    pub(crate) fn hours(
        &self,
        key: &KeyId,
        first_hour: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        self.hours
            .range(entry(key, first_hour)..entry(key, i64::MAX))
            .map(|counted| {
                let (entry, count) = counted?;
                Ok((hour_in(&entry), decode(&count)))
            })
            .collect()
    }

    /// Deletes the counts of `key`'s hours before `first_kept_hour`; returns how many hours
    /// it deleted.
    pub(crate) fn prune(&self, key: &KeyId, first_kept_hour: i64) -> Result<u64, StoreError> {
        let mut pruned = 0;
        for old in self
            .hours
            .range(entry(key, 0)..entry(key, first_kept_hour))
            .keys()
        {
            self.hours.remove(old?)?;
            pruned += 1;
        }
        Ok(pruned)
    }
}

fn entry(key: &KeyId, hour: i64) -> Vec<u8> {
    let hour = u64::try_from(hour).unwrap_or(0);
    [key.as_str().as_bytes(), &hour.to_be_bytes()].concat()
}

fn hour_in(entry: &[u8]) -> i64 {
    let hour = entry
        .len()
        .checked_sub(8)
        .map_or(&[][..], |at| &entry[at..]);
    i64::try_from(decode(hour)).unwrap_or(i64::MAX)
}

/// A big-endian u64; anything else (never written) reads as 0.
fn decode(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

/// sled's merge operator for the tree: adds the merged count to the stored one.
fn add_counts(_entry: &[u8], stored: Option<&[u8]>, added: &[u8]) -> Option<Vec<u8>> {
    let sum = stored.map_or(0, decode).saturating_add(decode(added));
    Some(sum.to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::keys::sled::SledStore;
    use crate::keys::{Env, NewKey};

    fn counters() -> (tempfile::TempDir, UsageCounters) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .temporary(true)
            .open()
            .unwrap();
        (dir, UsageCounters::open(&db).unwrap())
    }

    fn key(id: &str) -> KeyId {
        KeyId::parse(id).unwrap()
    }

    fn at_hour(hour: i64) -> OffsetDateTime {
        crate::keys::history::hour_start(hour) + time::Duration::minutes(59)
    }

    #[test]
    fn counts_add_up_per_key_and_hour_and_pruning_stays_within_its_key() {
        let (_dir, counters) = counters();
        let (mine, theirs) = (key("sk_test_AAAAAAAA"), key("sk_test_AAAAAAAB"));
        for hour in [10, 10, 11, 12, 12, 12] {
            counters.count(&mine, at_hour(hour)).unwrap();
        }
        counters.count(&theirs, at_hour(10)).unwrap();
        assert_eq!(
            counters.hours(&mine, 0).unwrap(),
            [(10, 2), (11, 1), (12, 3)]
        );
        assert_eq!(counters.hours(&mine, 11).unwrap(), [(11, 1), (12, 3)]);
        assert_eq!(counters.hours(&theirs, 0).unwrap(), [(10, 1)]);

        assert_eq!(counters.prune(&mine, 12).unwrap(), 2);
        assert_eq!(counters.hours(&mine, 0).unwrap(), [(12, 3)]);
        assert_eq!(counters.hours(&theirs, 0).unwrap(), [(10, 1)]);
    }

    /// What counting adds to an admission (both without the durability wait, which is the
    /// same either way): `cargo test --lib keys::sled::usage::tests::bench_ -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn bench_counting_cost() {
        const THREADS: usize = 4;
        const EACH: usize = 5000;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (_, record) = store
            .create(NewKey {
                name: "bench".into(),
                description: String::new(),
                env: Env::Test,
                executions_limit: u64::MAX,
                rate_limit_per_minute: 1,
                fuel_limit: None,
                max_sessions: None,
            })
            .unwrap();
        let counters = UsageCounters::open(store.db()).unwrap();
        let per_second = |one: &(dyn Fn() + Sync)| {
            let started = Instant::now();
            std::thread::scope(|threads| {
                for _ in 0..THREADS {
                    threads.spawn(|| (0..EACH).for_each(|_| one()));
                }
            });
            (THREADS * EACH) as f64 / started.elapsed().as_secs_f64()
        };
        for _ in 0..3 {
            let admissions = per_second(&|| {
                store.admit(&record.id).unwrap();
            });
            let counts = per_second(&|| {
                counters
                    .count(&record.id, OffsetDateTime::now_utc())
                    .unwrap()
            });
            println!(
                "admit (charge + count): {admissions:7.0}/s, {:5.1} µs; count alone: \
                 {counts:7.0}/s, {:5.1} µs",
                1e6 / admissions,
                1e6 / counts
            );
        }
    }
}
