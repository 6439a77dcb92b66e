//! The key store the API and hardening tests run against: sled in the test's data directory.
//! (The `cluster` binary runs the same tests against PostgreSQL with its own `backend`.)

use std::path::Path;

use pyexec::keys::{KeyStore, SledStore};

pub async fn key_store(data_dir: &Path) -> KeyStore {
    private_key_store(data_dir).await
}

/// A store no other test uses, for tests that act on every key (with sled, every data
/// directory is one).
pub async fn private_key_store(data_dir: &Path) -> KeyStore {
    KeyStore::Sled(SledStore::open(data_dir).unwrap())
}
