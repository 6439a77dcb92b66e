//! The key store the re-run API tests get: PostgreSQL on this binary's shared server (every
//! test makes its own keys, so they share one database).

use std::path::Path;
use std::time::Duration;

use pyexec::keys::{KeyStore, PgOptions, StoreLocation};

use crate::pg::SHARED;

pub async fn key_store(_data_dir: &Path) -> KeyStore {
    let options = PgOptions::new(&SHARED.url()).unwrap();
    KeyStore::open(&StoreLocation::Postgres(Box::new(options)), Duration::ZERO)
        .await
        .unwrap()
}
