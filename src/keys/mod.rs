//! API keys, quotas, usage accounting and rate limits. [`KeyStore`] is the one interface the
//! rest of pyexec sees; behind it are two backends: [`sled`] (the embedded default: a database
//! under the data directory, and the control socket beside it) and [`postgres`] (shared by
//! many nodes). [`record`], [`token`], [`rate`] and [`error`] are shared by both. May not touch
//! HTTP or the sandbox (the API layer calls in, never the other way round).
//!
//! The rest of this page describes the sled backend; [`postgres`] describes its own.
//!
//! # Data directory
//! ```text
//! <data_dir>/            mode 0700, created on first open
//!   keys.sled/           the sled database (sled's `db`, `conf`, `snap.*`; `db` is also
//!                        sled's flock lock file: one process at a time)
//!   control.sock         mode 0600, present while `pyexec serve` runs (see [`control`])
//! ```
//!
//! # Keys
//! `sk_test_…`/`sk_prod_…` + 40 base62 characters from the OS RNG ([`token`]). The first 16
//! characters (`sk_test_AbCd1234`) are the public **key ID**: the database key, shown by
//! `list`, accepted as `KEY` by the admin commands and safe to log. The remaining 32
//! characters (≈190 bits) are never stored: the `keys` tree maps ID → JSON
//! `{"hash": hex SHA-256 of the whole key, "record": KeyRecord}`. Authentication looks the
//! record up by the (public) ID, then compares SHA-256 of the presented key with the stored
//! hash in constant time, so timing reveals at most whether an ID exists, which is public.
//! Admin commands accept the full key too (same hash check). `Debug` of [`ApiKey`],
//! [`KeyRef`], the stored hash and the control protocol types never shows a secret; nothing
//! here logs more than a key ID.
//!
//! # Accounting
//! [`SledStore::admit`] charges one execution with a compare-and-swap loop on the key's
//! record (re-read and retry if the record changed), and admin updates use the same loop, so
//! admissions and `revoke`/`reset-executions`/`update-limit` never lose each other's writes;
//! with limit `L` exactly `L` concurrent admissions succeed. Charging happens at admission;
//! the caller must await [`SledStore::commit`] before responding. `commit` is a **group
//! commit** (module `commit`): concurrent callers share one flush, done by one thread, so N
//! waiting requests cost one or two flushes rather than N. A flush is sled's `flush` (which
//! on Linux only `sync_file_range`s: enough for `kill -9`) followed by `fdatasync` of sled's
//! log file (enough for power loss).
//!
//! Measured with `cargo test --lib keys::tests::bench_ -- --ignored --nocapture` (16 tokio
//! tasks × 200 × (admit + durability wait), 2 worker threads; 2-core VM, ext4, debug build of
//! this crate with optimised dependencies, a concurrent compile running; three rounds):
//!
//! | durability wait                          | admissions/s        | p50 latency    |
//! |------------------------------------------|---------------------|----------------|
//! | none (not durable; reference)            | 43 000 – 49 000     | 19 – 22 µs     |
//! | flush + fdatasync per request            | 5 000 – 12 500      | 1.1 – 1.8 ms   |
//! | group commit (`commit()`), chosen        | 9 500 – 27 300      | 0.5 – 0.9 ms   |
//!
//! Group commit is ≈2× the throughput at about half the latency, with ≈7 callers per
//! flush (357–503 flushes for 3 200 commits). This VM's fdatasync is cheap (≈0.1 ms); on
//! a disk where it costs milliseconds the gap widens, since a flush per request serialises
//! on the device while group commit batches everything that arrived during the previous
//! flush. Either way the durability wait is small next to running Python.
//!
//! Each charge is also counted in its key's current UTC hour (the `usage_hourly` tree, see
//! `sled::usage`), what `GET /usage` shows as history ([`history`]); counts older than the
//! retention are pruned by `serve` every 10 minutes.
//!
//! Rate limits ([`rate`]) are per key, per minute, GCRA, in memory.
//!
//! # Admin while the server runs
//! sled allows one process per database. [`KeyAdmin::open`] opens the database directly if
//! it can; if it is locked it talks to the server's control socket instead (same operations
//! through the same [`control`] code, effective immediately, durable before the reply).

mod admin;
mod error;
pub mod history;
pub mod postgres;
pub mod rate;
mod record;
pub mod sled;
mod store;
pub mod token;

pub use self::admin::KeyAdmin;
pub use self::error::{AdminError, AdmitError, AuthError, StoreError};
pub use self::history::{DEFAULT_USAGE_RETENTION_DAYS, UsageBucket, UsageHistory, UsageRetention};
pub use self::postgres::{PgOptions, PgStore};
pub use self::rate::RateLimitStatus;
pub use self::record::{DEFAULT_RATE_LIMIT_PER_MINUTE, KeyRecord, NewKey};
pub use self::sled::control::{self, ControlClient, control_socket_path, serve_control};
pub use self::sled::{DB_DIR, SledStore};
pub use self::store::{Admitted, Caller, KeyStore, StoreLocation};
pub use self::token::{ApiKey, Env, InvalidKeyRef, KeyId, KeyRef};

#[cfg(test)]
mod tests;
