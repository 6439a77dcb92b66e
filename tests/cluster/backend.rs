//! The key store the re-run API tests get: PostgreSQL on this binary's shared server (every
//! test makes its own keys, so they share one database; a test that acts on every key gets a
//! database of its own).

use std::path::Path;
use std::time::Duration;

use pyexec::keys::{KeyStore, PgOptions, StoreLocation};

use crate::pg::SHARED;

pub async fn key_store(_data_dir: &Path) -> KeyStore {
    open(&SHARED.url()).await
}

/// A store no other test uses, for tests that act on every key: a fresh database.
pub async fn private_key_store(_data_dir: &Path) -> KeyStore {
    open(&SHARED.fresh_database()).await
}

async fn open(url: &str) -> KeyStore {
    let options = PgOptions::new(url).unwrap();
    KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
        .await
        .unwrap()
}
