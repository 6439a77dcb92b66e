//! The control socket: how `pyexec keys …` reaches a running server, whose process holds the
//! sled lock. Owns the socket file, the JSON-lines protocol, the async server loop and the
//! blocking client; may not touch HTTP. File permissions are the authorisation: the socket
//! is created mode 0600 (bound under a temporary name, `chmod`ed, then renamed into place)
//! inside the 0700 data directory.
//!
//! # Protocol
//! One JSON object per line each way; a connection may carry several requests, answered in
//! order. Requests (`KEY` is a key ID or a full key, as typed by the admin):
//! ```text
//! {"op":"add","new_key":{"name":…,"description":…,"env":"test","executions_limit":10,
//!                        "rate_limit_per_minute":60,"fuel_limit":null,"max_sessions":null}}
//! {"op":"list"}
//! {"op":"show","key":KEY}
//! {"op":"revoke","key":KEY}
//! {"op":"reset_executions","key":KEY}
//! {"op":"update_limit","key":KEY,"executions_limit":N}
//! {"op":"update_max_sessions","key":KEY,"max_sessions":N|null}
//! ```
//! Replies: `{"ok":{"created":{"key":"sk_…","record":RECORD}}}`, `{"ok":{"record":RECORD}}`,
//! `{"ok":{"records":[RECORD,…]}}` or
//! `{"error":{"kind":"not_found"|"invalid"|"bad_request"|"internal","message":…}}`, where
//! `message` is the whole error chain as the CLI prints it. A mutating request is answered
//! only after its change is durable (group commit).

use std::fs::Permissions;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::store::SledStore;
use crate::keys::error::{AdminError, StoreError};
use crate::keys::record::{KeyRecord, NewKey};
use crate::keys::token::{ApiKey, KeyRef};

/// The socket file inside the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Longest accepted request line.
const MAX_LINE: u64 = 64 * 1024;
/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for a reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, how long requests in flight get to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server listens and the CLI connects: `<data_dir>/control.sock`.
pub fn control_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// One admin operation; mirrors the `pyexec keys` subcommands. `Debug` never shows a
/// plaintext key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Add {
        new_key: NewKey,
    },
    List,
    Show {
        key: KeyRef,
    },
    Revoke {
        key: KeyRef,
    },
    ResetExecutions {
        key: KeyRef,
    },
    UpdateLimit {
        key: KeyRef,
        executions_limit: u64,
    },
    UpdateMaxSessions {
        key: KeyRef,
        max_sessions: Option<u32>,
    },
}

impl Request {
    fn op(&self) -> &'static str {
        match self {
            Request::Add { .. } => "add",
            Request::List => "list",
            Request::Show { .. } => "show",
            Request::Revoke { .. } => "revoke",
            Request::ResetExecutions { .. } => "reset_executions",
            Request::UpdateLimit { .. } => "update_limit",
            Request::UpdateMaxSessions { .. } => "update_max_sessions",
        }
    }

    /// Whether the request writes, and so must be durable before it is answered.
    pub(crate) fn mutates(&self) -> bool {
        !matches!(self, Request::List | Request::Show { .. })
    }
}

/// A request's outcome on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(WireError),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// For `add`: the plaintext key (its only transmission) and the new record.
    Created {
        #[serde(with = "plaintext")]
        key: ApiKey,
        record: KeyRecord,
    },
    Record(KeyRecord),
    Records(Vec<KeyRecord>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The class of a failed control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Invalid,
    BadRequest,
    Internal,
}

/// `ApiKey` deliberately has no `Serialize`; the `created` reply sends the plaintext
/// explicitly through this.
mod plaintext {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::keys::token::ApiKey;

    pub fn serialize<S: Serializer>(key: &ApiKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(key.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ApiKey, D::Error> {
        let s = String::deserialize(d)?;
        ApiKey::parse(&s).ok_or_else(|| serde::de::Error::custom("malformed API key"))
    }
}

/// Runs one admin operation against the store. Shared by the direct path (CLI with the
/// database open) and the server side of the socket, so both behave identically.
pub(crate) fn execute(store: &SledStore, request: Request) -> Result<Reply, AdminError> {
    Ok(match request {
        Request::Add { new_key } => {
            let (key, record) = store.create(new_key)?;
            Reply::Created { key, record }
        }
        Request::List => Reply::Records(store.list()?),
        Request::Show { key } => Reply::Record(store.get(&key)?),
        Request::Revoke { key } => Reply::Record(store.revoke(&key)?),
        Request::ResetExecutions { key } => Reply::Record(store.reset_executions(&key)?),
        Request::UpdateLimit {
            key,
            executions_limit,
        } => Reply::Record(store.update_limit(&key, executions_limit)?),
        Request::UpdateMaxSessions { key, max_sessions } => {
            Reply::Record(store.update_max_sessions(&key, max_sessions)?)
        }
    })
}

impl AdminError {
    fn kind(&self) -> ErrorKind {
        match self {
            AdminError::NotFound(_) => ErrorKind::NotFound,
            AdminError::Store(StoreError::Invalid { .. }) => ErrorKind::Invalid,
            AdminError::Server { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}

impl SledStore {
    /// Binds `<data_dir>/control.sock` with mode 0600, replacing a stale socket file left by
    /// a server that died (safe: holding this store means holding the database lock, so no
    /// live server owns it). Must be called inside a tokio runtime.
    pub fn bind_control_socket(&self) -> Result<UnixListener, StoreError> {
        let path = control_socket_path(self.data_dir());
        let staging = self
            .data_dir()
            .join(format!(".{SOCKET_FILE}.{}", std::process::id()));
        let bind_error = |source| StoreError::Bind {
            path: path.clone(),
            source,
        };
        remove_if_present(&staging).map_err(bind_error)?;
        let listener = UnixListener::bind(&staging).map_err(bind_error)?;
        let placed = std::fs::set_permissions(&staging, Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&staging, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&staging);
            return Err(bind_error(e));
        }
        Ok(listener)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Serves admin requests on `listener` (from [`SledStore::bind_control_socket`]) until
/// `shutdown` resolves; then stops accepting, gives requests in flight a few seconds, and
/// removes the socket file.
pub async fn serve_control(
    listener: UnixListener,
    store: SledStore,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(handle_connection(stream, store.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(control_socket_path(store.data_dir()));
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.shutdown().await;
    }
}

async fn handle_connection(stream: UnixStream, store: SledStore) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE);
        let n = match tokio::time::timeout(IDLE_TIMEOUT, limited.read_line(&mut line)).await {
            Ok(Ok(n)) => n,
            Ok(Err(error)) => {
                tracing::debug!(%error, "control socket: read failed");
                return;
            }
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        // No newline: either the line hit the cap, or the client sent its last request
        // without one and closed its side; the latter is answered normally.
        let too_long = !line.ends_with('\n') && n as u64 >= MAX_LINE;
        let response = if too_long {
            bad_request(format!("request line longer than {MAX_LINE} bytes"))
        } else {
            respond(&store, &line).await
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialise to JSON");
        out.push(b'\n');
        if let Err(error) = write.write_all(&out).await {
            tracing::debug!(%error, "control socket: write failed");
            return;
        }
        if too_long {
            return;
        }
    }
}

fn bad_request(message: String) -> Response {
    Response::Error(WireError {
        kind: ErrorKind::BadRequest,
        message,
    })
}

async fn respond(store: &SledStore, line: &str) -> Response {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("malformed request: {error}")),
    };
    let op = request.op();
    let mutates = request.mutates();
    tracing::info!(op, "control socket: request");
    let result = execute(store, request);
    if mutates
        && result.is_ok()
        && let Err(error) = store.commit().await
    {
        tracing::error!(op, error = %crate::error_chain(&error), "control socket: commit failed");
        return Response::Error(WireError {
            kind: ErrorKind::Internal,
            message: crate::error_chain(&error),
        });
    }
    match result {
        Ok(reply) => Response::Ok(reply),
        Err(error) => {
            tracing::info!(op, error = %crate::error_chain(&error), "control socket: request failed");
            Response::Error(WireError {
                kind: error.kind(),
                message: crate::error_chain(&error),
            })
        }
    }
}

/// The CLI's side of the socket (blocking; the CLI has no async runtime).
pub struct ControlClient {
    reader: BufReader<StdUnixStream>,
    writer: StdUnixStream,
}

impl ControlClient {
    pub fn connect(path: &Path) -> io::Result<ControlClient> {
        let writer = StdUnixStream::connect(path)?;
        writer.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        writer.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(ControlClient {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: &Request) -> Result<Reply, AdminError> {
        let mut out = serde_json::to_vec(request).expect("requests serialise to JSON");
        out.push(b'\n');
        self.writer.write_all(&out).map_err(AdminError::Control)?;
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .map_err(AdminError::Control)?
            == 0
        {
            return Err(AdminError::Protocol(
                "the server closed the connection without replying".into(),
            ));
        }
        match serde_json::from_str(&line) {
            Ok(Response::Ok(reply)) => Ok(reply),
            Ok(Response::Error(WireError { kind, message })) => {
                Err(AdminError::Server { kind, message })
            }
            Err(e) => Err(AdminError::Protocol(e.to_string())),
        }
    }
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("peer", &self.writer.peer_addr().ok())
            .finish()
    }
}
