//! The typed errors of the key store. Messages name keys by their public ID only, never by
//! secret or hash.

use std::path::PathBuf;

/// Failures of the database itself, or invalid input to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally `pyexec serve`) has the database open.
    #[error("the key database {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("cannot create the data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key database error")]
    Db(#[from] sled::Error),
    #[error("the stored record of key {key} is corrupt")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot get randomness from the operating system")]
    Entropy(#[source] rand::rngs::SysError),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot sync the key database to disk")]
    Sync(#[source] std::io::Error),
    #[error("cannot make {path} private")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A group-commit flush failed; the message is the flush error's.
    #[error("cannot make usage durable: {0}")]
    Commit(String),
    #[error("cannot bind the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--store` is not a PostgreSQL connection string.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// PostgreSQL could not be reached when the store was opened.
    #[error("cannot connect to PostgreSQL at {database}: {message}")]
    Connect { database: String, message: String },
    /// A statement failed (the database may be down, restarting or out of connections).
    #[error("PostgreSQL error")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database could not be reached, or did not answer in time.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// `store copy` without `--overwrite` found these key IDs in the target already.
    #[error("these keys already exist in the target store (nothing was copied): {0}")]
    AlreadyExists(String),
    #[error("the stored {what} of key {key} is not valid")]
    CorruptRow { key: String, what: String },
    /// The database was migrated by a newer pyexec.
    #[error(
        "the database schema is at version {found}, newer than this pyexec supports          ({supported}): upgrade pyexec"
    )]
    SchemaTooNew { found: i32, supported: i32 },
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Why a presented key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed, unknown, or the secret does not match (deliberately indistinguishable).
    #[error("invalid API key")]
    Invalid,
    #[error("API key has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an execution was not admitted (and so not charged).
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The key's per-minute budget is used up; the status says until when.
    #[error("rate limit exceeded")]
    RateLimited(super::rate::RateLimitStatus),
    #[error("execution limit reached")]
    LimitExceeded,
    #[error("API key has been revoked")]
    Revoked,
    #[error("API key not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failures of the admin operations (`pyexec keys …`), direct or through the control socket.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No key has this ID, or the full key given does not match the stored hash.
    #[error("unknown API key {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database is locked and the control socket of the process holding it failed.
    #[error(
        "the key database is in use by another process (is `pyexec serve` running?), \
         and its control socket {path} is not reachable"
    )]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the server over its control socket failed")]
    Control(#[source] std::io::Error),
    #[error("unexpected reply from the server's control socket: {0}")]
    Protocol(String),
    /// An error the server reported; `message` is its full error chain, already formatted.
    #[error("{message}")]
    Server {
        kind: super::sled::control::ErrorKind,
        message: String,
    },
}
