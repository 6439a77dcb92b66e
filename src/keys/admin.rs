//! [`KeyAdmin`]: the admin operations behind `pyexec keys …`, run either directly on the
//! database or, when a server holds the database lock, through its control socket. Owns the
//! choice between the two; both go through the same [`execute`] so they behave identically.

use std::path::Path;
use std::time::{Duration, Instant};

use super::control::{ControlClient, Reply, Request, control_socket_path, execute};
use super::error::{AdminError, StoreError};
use super::record::{KeyRecord, NewKey};
use super::store::{KeyStore, LOCK_RETRY_INTERVAL};

/// How long [`KeyAdmin::open`] waits for a server that holds the lock to answer.
const CONNECT_GRACE: Duration = Duration::from_secs(2);
use super::token::{ApiKey, KeyRef};

/// Where admin operations go.
#[derive(Debug)]
pub enum KeyAdmin {
    /// No server is running on the data directory: the database is open in this process.
    /// Every change is flushed before the call returns.
    Direct(KeyStore),
    /// A server holds the database: operations go over its control socket and take effect
    /// on the running server at once (and are durable before the reply).
    Server(ControlClient),
}

impl KeyAdmin {
    /// Opens the database under `data_dir`, or connects to the control socket of the
    /// process that has it locked. A server that is starting (locked, socket not bound yet)
    /// or stopping (socket gone, lock not yet released) is retried for up to two seconds.
    pub fn open(data_dir: &Path) -> Result<KeyAdmin, AdminError> {
        KeyAdmin::open_waiting(data_dir, CONNECT_GRACE)
    }

    fn open_waiting(data_dir: &Path, grace: Duration) -> Result<KeyAdmin, AdminError> {
        let deadline = Instant::now() + grace;
        loop {
            match KeyStore::open(data_dir) {
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
}

fn unexpected(reply: &Reply) -> AdminError {
    let what = match reply {
        Reply::Created { .. } => "created",
        Reply::Record(_) => "record",
        Reply::Records(_) => "records",
    };
    AdminError::Protocol(format!("unexpected `{what}` reply"))
}
