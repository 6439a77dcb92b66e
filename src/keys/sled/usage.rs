//! [`UsageCounters`]: executions per key and per UTC hour in the sled tree `usage_hourly`,
//! what `GET /usage` shows as history on the embedded store. Owns that tree only; may not
//! touch keys' records.
//!
//! An entry is `key ID ‖ hour since the Unix epoch (u64, big-endian)` → executions (u64,
//! big-endian), so one key's hours are one contiguous, ordered range: reading a key's history
//! and pruning its old hours are range scans. A charge adds one with sled's merge operator
//! (no read-modify-write round trip), right after the charge itself and before the caller
//! waits for the group commit, so the flush that makes the charge durable makes its count
//! durable too.

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
