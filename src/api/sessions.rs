//! `/sessions`: interpreter state kept across executions. A session is opened for the calling
//! key (not charged), runs turns (`POST /sessions/{id}/execute`, each charged and admitted as
//! one `/execute`) and is listed, shown and deleted; only its key ever sees it. The sandbox
//! keeps the sessions and their bounds; this module maps them to HTTP.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::execute::{ExecuteResponse, admit_and_run, code_and_data, with_quota_headers};
use super::extract::{Authenticated, ObjectBody, OptionalObjectBody};
use super::quota::QuotaHeaders;
use crate::keys::Caller;
use crate::sandbox::{Execution, OpenSession, SessionInfo, TurnMode};

/// The body of `POST /sessions` (documentation only; every field is optional, and so is the
/// body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OpenSessionRequest {
    /// The runtime the session's interpreter is (`GET /runtimes`); the default when absent.
    #[schema(example = "rustpython")]
    runtime: Option<String>,
    /// Seconds without a turn after which the session is closed; the server's default when
    /// absent, and at most the server's maximum (a larger value is lowered to it).
    #[schema(example = 300, minimum = 1)]
    idle_timeout_s: Option<u64>,
}

/// An open session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// `ses_<node>_<random>`: the node is the server that holds the session.
    #[schema(example = "ses_a1b2c3_5f0c9e2d7a4b41e8b36d0f9c2e1a7b54")]
    pub session_id: String,
    #[schema(example = "rustpython")]
    pub runtime: String,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the session closes unless a turn runs first (a turn moves it, up to the session's
    /// maximum lifetime). RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub idle_timeout_s: u64,
    /// Turns run so far.
    pub turns: u64,
    /// Whether a turn is running now.
    pub busy: bool,
}

impl From<SessionInfo> for SessionResponse {
    fn from(info: SessionInfo) -> Self {
        Self {
            session_id: info.id,
            runtime: info.runtime,
            created_at: rfc3339(info.created_at),
            expires_at: rfc3339(info.expires_at),
            idle_timeout_s: info.idle_timeout.as_secs(),
            turns: info.turns,
            busy: info.busy,
        }
    }
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::from(at))
        .format(&Rfc3339)
        .expect("a time since 1970 formats as RFC 3339")
}

/// The calling key's open sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsResponse {
    /// Oldest first.
    pub sessions: Vec<SessionResponse>,
}

/// The reply to a turn: exactly `POST /execute`'s, plus the session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnResponse {
    #[serde(flatten)]
    pub execution: ExecuteResponse,
    pub session_id: String,
    /// The turn hit a limit the host enforces (fuel, time, memory, stack, output, process
    /// exit) or the sandbox failed: the interpreter may be in any state, so the session was
    /// closed and its id is no longer valid. A Python exception does not close it.
    pub session_closed: bool,
}

/// Opens a session: a Python interpreter kept for the calling key, whose globals, imports,
/// functions and objects live from one turn to the next. Not charged.
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    request_body(content = Option<OpenSessionRequest>, description = "Optional"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The session is open", body = SessionResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 422, description = "A field of the wrong type or an unknown `runtime` (with the `available` ones)", body = ErrorBody),
        (status = 429, description = "The key has its maximum of sessions open (`session_limit_exceeded`)", body = ErrorBody),
        (status = 503, description = "This server holds as many sessions as it can, or is at capacity (`overloaded`, with Retry-After)", body = ErrorBody),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<OptionalObjectBody, ApiError>,
) -> Result<Response, ApiError> {
    let OptionalObjectBody(body) = body?;
    let runtime: Option<String> = body.optional("runtime", "a string")?;
    let idle_timeout = match body.optional::<u64>("idle_timeout_s", "a positive integer")? {
        Some(0) => {
            return Err(ApiError::invalid(
                "idle_timeout_s",
                "idle_timeout_s: must be a positive integer",
            ));
        }
        seconds => seconds.map(Duration::from_secs),
    };
    let info = state
        .sandbox
        .open_session(OpenSession {
            tenant: tenant(&caller),
            runtime,
            idle_timeout,
            max_for_tenant: caller.record.max_sessions.map(|n| n as usize),
        })
        .await?;
    tracing::info!(key = %caller.record.id(), session = %info.id, runtime = %info.runtime, "session opened");
    Ok((StatusCode::CREATED, Json(SessionResponse::from(info))).into_response())
}

/// The calling key's open sessions.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The key's open sessions", body = SessionsResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Json<SessionsResponse> {
    let sessions = state.sandbox.sessions(&tenant(&caller));
    Json(SessionsResponse {
        sessions: sessions.into_iter().map(SessionResponse::from).collect(),
    })
}

/// One of the calling key's open sessions.
#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 404, description = "No open session of this key has this id (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let info = state.sandbox.session(&tenant(&caller), &id)?;
    Ok(Json(info.into()))
}

/// Closes one of the calling key's sessions and returns its memory (after its running turn,
/// if one runs).
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "The session is closed"),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 404, description = "No open session of this key has this id (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sandbox.close_session(&tenant(&caller), &id)?;
    tracing::info!(key = %caller.record.id(), session = %id, "session deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Runs code as the session's next turn: the globals of earlier turns are there, `data` is
/// bound anew, and `result` is what this turn assigned (`null` if nothing). Charged, admitted
/// and limited like `POST /execute`, whose reply it is, plus `session_id` and `session_closed`.
#[utoipa::path(
    post,
    path = "/sessions/{id}/execute",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = super::execute::ExecuteRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The turn ran; see `success` and `session_closed`", body = TurnResponse,
         headers(("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64), ("X-Executions-Left" = u64))),
        (status = 404, description = "No open session of this key has this id (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "Another turn of the session is running (`session_busy`)", body = ErrorBody),
        (status = 422, description = "Malformed JSON, missing `code`, a field of the wrong type, or `data` nested past the nesting limit", body = ErrorBody),
        super::execute::ExecutionRefusals,
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<ObjectBody, ApiError>,
) -> Response {
    with_quota_headers(&caller, async |quota| {
        turn(&state, &caller, &id, body, quota).await
    })
    .await
}

/// As `/execute`: nothing is charged unless the turn is sure to run (valid, the session
/// claimed, within the concurrency limit, queue place held).
async fn turn(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: Result<ObjectBody, ApiError>,
    quota: &mut QuotaHeaders,
) -> Result<TurnResponse, ApiError> {
    let key = &caller.record;
    let body = body?;
    let (code, data) = code_and_data(&body)?;
    let _slot = state.concurrency.acquire(key.id())?;
    let prepared = state.sandbox.prepare_turn(
        id,
        Execution {
            code,
            data,
            fuel: key.fuel_limit,
            tenant: Some(tenant(caller)),
            runtime: None,
        },
        TurnMode::Module,
    )?;
    let (outcome, executions_left) = admit_and_run(state, caller, prepared, quota).await?;
    let session_closed = outcome.session_closed;
    if session_closed {
        tracing::info!(key = %key.id(), session = %id, "session closed by a limit");
    }
    Ok(TurnResponse {
        execution: ExecuteResponse::new(outcome, Some(executions_left)),
        session_id: id.to_owned(),
        session_closed,
    })
}

/// The sandbox's name for the caller: its key's id.
fn tenant(caller: &Caller) -> String {
    caller.record.id().to_string()
}
