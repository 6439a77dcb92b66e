//! The embedded backend: keys, quotas and usage (with hourly counts for the usage history) in
//! a sled database under the data directory, durable through group commit, administered while
//! a server runs through its control socket. One process at a time; rate-limit state lives in
//! that process's memory. May not touch HTTP or PostgreSQL.

mod commit;
pub mod control;
mod store;
mod usage;

pub(crate) use store::LOCK_RETRY_INTERVAL;
pub use store::{DB_DIR, SledStore};
#[cfg(test)]
pub(crate) use store::{Modify, OpenOptions};
