//! The `pyexec keys` CLI tests that hold for every store (`tests/cli/keys/any_store.rs`),
//! re-run with `--store postgres://…`: a [`TestDir`] here is a fresh database, and its
//! in-process [`TestDir::store`] admits through the PostgreSQL store as a node would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pyexec::keys::{
    AdmitError, AuthError, Env, KeyId, KeyRecord, KeyStore, NewKey, PgOptions, StoreError,
    StoreLocation,
};

use crate::pg::SHARED;

#[path = "../cli/keys/any_store.rs"]
mod any_store;
#[allow(dead_code)]
#[path = "../cli/helpers.rs"]
mod cli_helpers;

pub use cli_helpers::{Run, assert_no_secret, shown_key};

/// A fresh PostgreSQL database that `pyexec` reaches with `--store`.
pub struct TestDir {
    url: String,
    /// The plaintext of each key [`Self::add_key`] made, by ID: PostgreSQL admits a key by
    /// its hash, so [`PgKeys::admit`] presents the key as a client would.
    added: Mutex<HashMap<String, String>>,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            url: SHARED.fresh_database(),
            added: Mutex::default(),
        }
    }

    /// `pyexec --store <url> ARGS…`.
    pub fn pyexec(&self, args: &[&str]) -> Run {
        cli_helpers::run(
            cli_helpers::pyexec()
                .args(["--store", &self.url])
                .args(args),
        )
    }

    /// A key with the same defaults as the sled `TestDir::add_key` (name `ci`, description
    /// `nightly builds`); returns (plaintext key, key ID).
    pub fn add_key(&self, env: &str, limit: u64) -> (String, String) {
        let store = self.store();
        let new = NewKey {
            name: "ci".into(),
            description: "nightly builds".into(),
            env: match env {
                "test" => Env::Test,
                "prod" => Env::Prod,
                other => panic!("no env {other:?}"),
            },
            executions_limit: limit,
            rate_limit_per_minute: pyexec::keys::DEFAULT_RATE_LIMIT_PER_MINUTE,
            fuel_limit: None,
            max_sessions: None,
        };
        let (key, record) = store.runtime.block_on(store.keys.create(new)).unwrap();
        let (key, id) = (key.expose_secret().to_owned(), record.id.to_string());
        self.added.lock().unwrap().insert(id.clone(), key.clone());
        (key, id)
    }

    /// The store opened in this process, with the blocking calls the tests make of sled's.
    pub fn store(&self) -> PgKeys {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let location = StoreLocation::Postgres(Box::new(PgOptions::new(&self.url).unwrap()));
        let keys = runtime
            .block_on(KeyStore::open(&location, Duration::ZERO))
            .unwrap();
        PgKeys {
            keys,
            runtime,
            added: self.added.lock().unwrap().clone(),
        }
    }
}

/// A PostgreSQL [`KeyStore`] behind the blocking calls of `SledStore` the tests use.
pub struct PgKeys {
    keys: KeyStore,
    runtime: tokio::runtime::Runtime,
    added: HashMap<String, String>,
}

impl PgKeys {
    pub fn authenticate(&self, presented: &str) -> Result<KeyRecord, AuthError> {
        let caller = self.runtime.block_on(self.keys.authenticate(presented))?;
        Ok(caller.record)
    }

    /// Admits one execution of a key [`TestDir::add_key`] made: executions left after it.
    pub fn admit(&self, key_id: &KeyId) -> Result<u64, AdmitError> {
        let key = &self.added[key_id.as_str()];
        let caller = match self.runtime.block_on(self.keys.authenticate(key)) {
            Ok(caller) => caller,
            Err(AuthError::Revoked) => return Err(AdmitError::Revoked),
            Err(other) => panic!("{} does not authenticate: {other}", key_id.as_str()),
        };
        let admitted = self.runtime.block_on(self.keys.admit(&caller))?;
        Ok(admitted.executions_left)
    }

    /// PostgreSQL committed each admission before it returned.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
