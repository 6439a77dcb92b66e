//! [`KeyAdmin`]: the admin operations behind `pyexec keys …`. With sled they run directly on
//! the database or, when a server holds the database lock, through its control socket (both
//! through the same [`execute`], so they behave identically); with PostgreSQL they go to the
//! database from whatever machine the command runs on. Owns the choice of route.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{AdminError, StoreError};
use super::postgres::PgStore;
use super::record::{KeyRecord, NewKey};
use super::sled::control::{ControlClient, Reply, Request, control_socket_path, execute};
use super::sled::{LOCK_RETRY_INTERVAL, SledStore};
use super::store::StoreLocation;

/// How long [`KeyAdmin::open`] waits for a server that holds the lock to answer.
const CONNECT_GRACE: Duration = Duration::from_secs(2);
use super::token::{ApiKey, KeyRef};

/// Where admin operations go.
#[derive(Debug)]
pub enum KeyAdmin {
    /// No server is running on the data directory: the database is open in this process.
    /// Every change is flushed before the call returns.
    Direct(SledStore),
    /// A server holds the database: operations go over its control socket and take effect
    /// on the running server at once (and are durable before the reply).
    Server(ControlClient),
    /// The keys are in PostgreSQL: each operation is one committed statement, seen by every
    /// node's next request.
    Postgres(PgStore, tokio::runtime::Runtime),
}

impl KeyAdmin {
    /// Opens the database under `data_dir`, or connects to the control socket of the
    /// process that has it locked. A server that is starting (locked, socket not bound yet)
    /// or stopping (socket gone, lock not yet released) is retried for up to two seconds.
    pub fn open(data_dir: &Path) -> Result<KeyAdmin, AdminError> {
        KeyAdmin::open_waiting(data_dir, CONNECT_GRACE)
    }

    /// Opens the store at `location`: [`Self::open`] for sled; for PostgreSQL, connects (and
    /// applies pending migrations).
    pub fn open_at(location: &StoreLocation) -> Result<KeyAdmin, AdminError> {
        match location {
            StoreLocation::Sled(data_dir) => KeyAdmin::open(data_dir),
            StoreLocation::Postgres(options) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::Unavailable(format!("no async runtime: {e}")))?;
                let store = runtime.block_on(PgStore::open(options))?;
                Ok(KeyAdmin::Postgres(store, runtime))
            }
        }
    }

    fn open_waiting(data_dir: &Path, grace: Duration) -> Result<KeyAdmin, AdminError> {
        let deadline = Instant::now() + grace;
        loop {
            match SledStore::open(data_dir) {
                Ok(store) => return Ok(KeyAdmin::Direct(store)),
                Err(StoreError::Locked { .. }) => {
                    let path = control_socket_path(data_dir);
                    match ControlClient::connect(&path) {
                        Ok(client) => return Ok(KeyAdmin::Server(client)),
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(LOCK_RETRY_INTERVAL);
                        }
                        Err(source) => return Err(AdminError::Unreachable { path, source }),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether operations go through a running server's control socket.
    pub fn is_via_server(&self) -> bool {
        matches!(self, KeyAdmin::Server(_))
    }

    fn call(&mut self, request: Request) -> Result<Reply, AdminError> {
        match self {
            KeyAdmin::Direct(store) => {
                let mutates = request.mutates();
                let reply = execute(store, request)?;
                if mutates {
                    store.flush_blocking()?;
                }
                Ok(reply)
            }
            KeyAdmin::Server(client) => client.call(&request),
            KeyAdmin::Postgres(store, runtime) => {
                runtime.block_on(execute_on_postgres(store, request))
            }
        }
    }

    fn record(&mut self, request: Request) -> Result<KeyRecord, AdminError> {
        match self.call(request)? {
            Reply::Record(record) => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a key; the [`ApiKey`] is the only copy of its plaintext.
    pub fn create(&mut self, new_key: NewKey) -> Result<(ApiKey, KeyRecord), AdminError> {
        match self.call(Request::Add { new_key })? {
            Reply::Created { key, record } => Ok((key, record)),
            other => Err(unexpected(&other)),
        }
    }

    /// Every key, oldest first.
    pub fn list(&mut self) -> Result<Vec<KeyRecord>, AdminError> {
        match self.call(Request::List)? {
            Reply::Records(records) => Ok(records),
            other => Err(unexpected(&other)),
        }
    }

    pub fn show(&mut self, key: KeyRef) -> Result<KeyRecord, AdminError> {
        self.record(Request::Show { key })
    }

    pub fn revoke(&mut self, key: KeyRef) -> Result<KeyRecord, AdminError> {
        self.record(Request::Revoke { key })
    }

    pub fn reset_executions(&mut self, key: KeyRef) -> Result<KeyRecord, AdminError> {
        self.record(Request::ResetExecutions { key })
    }

    pub fn update_limit(&mut self, key: KeyRef, limit: u64) -> Result<KeyRecord, AdminError> {
        self.record(Request::UpdateLimit {
            key,
            executions_limit: limit,
        })
    }

    /// Sets how many sessions the key may have open at once (`None`: the server's default).
    pub fn update_max_sessions(
        &mut self,
        key: KeyRef,
        max_sessions: Option<u32>,
    ) -> Result<KeyRecord, AdminError> {
        self.record(Request::UpdateMaxSessions { key, max_sessions })
    }
}

/// [`execute`] for PostgreSQL, where every operation is committed before it returns.
async fn execute_on_postgres(store: &PgStore, request: Request) -> Result<Reply, AdminError> {
    Ok(match request {
        Request::Add { new_key } => {
            let (key, record) = store.create(new_key).await?;
            Reply::Created { key, record }
        }
        Request::List => Reply::Records(store.list().await?),
        Request::Show { key } => Reply::Record(store.get(&key).await?),
        Request::Revoke { key } => Reply::Record(store.revoke(&key).await?),
        Request::ResetExecutions { key } => Reply::Record(store.reset_executions(&key).await?),
        Request::UpdateLimit {
            key,
            executions_limit,
        } => Reply::Record(store.update_limit(&key, executions_limit).await?),
        Request::UpdateMaxSessions { key, max_sessions } => {
            Reply::Record(store.update_max_sessions(&key, max_sessions).await?)
        }
    })
}

fn unexpected(reply: &Reply) -> AdminError {
    let what = match reply {
        Reply::Created { .. } => "created",
        Reply::Record(_) => "record",
        Reply::Records(_) => "records",
    };
    AdminError::Protocol(format!("unexpected `{what}` reply"))
}
