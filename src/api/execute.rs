//! `POST /execute`: the prototype's contract (`code`, `data` → `success`, `result`,
//! `executions_left`) plus what it lacked: stdout, stderr, fuel, timing and structured errors.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Authenticated, ObjectBody};
use super::quota::QuotaHeaders;
use crate::keys::{AdmitError, Caller};
use crate::sandbox::{Execution, ExecutionError, Image, Outcome, Prepared};

/// The request body (documentation only: the handler reads fields one by one so that a 422
/// names the field at fault).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ExecuteRequest {
    /// Python source, run as the `__main__` module.
    #[schema(example = "result = sum(data['numbers']) / len(data['numbers'])")]
    code: String,
    /// JSON object bound to the global `data`; `{}` when absent.
    #[schema(value_type = Option<Object>, example = json!({"numbers": [1, 2, 3, 4, 5]}))]
    data: Option<serde_json::Value>,
    /// The runtime to run it in (`GET /runtimes` lists them); the default when absent.
    #[schema(example = "rustpython")]
    runtime: Option<String>,
}

/// The refusals `/execute` and a session's turn share, for their OpenAPI entries
/// (documentation only: never built; the 422s differ, so each route lists its own).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum ExecutionRefusals {
    /// Missing, invalid or revoked API key
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Body, or code plus data, too large
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Body declared as something other than JSON
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// Executions limit exhausted, rate limit, or too many concurrent executions
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait (rate and concurrency limits)")))]
    Limited(ErrorBody),
    /// At capacity (with Retry-After) or key database unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The reply to an execution that ran, whether the code succeeded or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    /// Whether the code ran to the end and its `result` serialised.
    pub success: bool,
    /// The global `result` after the run (`null` when unset); only when `success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Box<RawValue>>,
    /// Why the run failed; only when not `success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
    /// Executions this key has left. Always present in API replies; absent only from
    /// `pyexec run --json`, which runs without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executions_left: Option<u64>,
    /// The matplotlib figures the code left open (CPython), as PNG images; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// What the code printed, up to the output limit.
    pub stdout: String,
    /// What the code wrote to stderr, up to the output limit.
    pub stderr: String,
    /// Fuel (units of wasm work) the run used.
    pub fuel_used: u64,
    /// Wall-clock time of the run, in milliseconds.
    pub duration_ms: f64,
    /// The runtime that ran the code.
    #[schema(example = "rustpython")]
    pub runtime: String,
}

impl ExecuteResponse {
    /// The envelope of `outcome`; shared by `POST /execute` and `pyexec run --json`.
    pub fn new(outcome: Outcome, executions_left: Option<u64>) -> Self {
        let (success, result, error) = match outcome.result {
            Ok(result) => (true, Some(result), None),
            Err(error) => (false, None, Some(error)),
        };
        Self {
            success,
            result,
            error,
            executions_left,
            images: outcome.images,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            fuel_used: outcome.fuel_used,
            duration_ms: milliseconds(outcome.duration),
            runtime: outcome.runtime,
        }
    }
}

/// Milliseconds with microsecond precision.
fn milliseconds(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// Runs Python code in a fresh sandbox and returns its `result`.
///
/// Failures of the code itself (exceptions, limits) are answered with 200 and
/// `"success": false`; everything else with an error status and `{"detail", "code"}`.
#[utoipa::path(
    post,
    path = "/execute",
    tag = "execution",
    request_body = ExecuteRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The code ran; see `success`", body = ExecuteResponse,
         headers(("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64), ("X-Executions-Left" = u64))),
        (status = 422, description = "Malformed JSON, missing `code`, a field of the wrong type, `data` nested past the nesting limit, or an unknown `runtime` (with the `available` ones)", body = ErrorBody),
        ExecutionRefusals,
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<ObjectBody, ApiError>,
) -> Response {
    with_quota_headers(&caller, async |quota| {
        run(&state, &caller, body, quota).await
    })
    .await
}

/// The reply `run` makes (or its error), with the caller's quota headers as `run` leaves them.
pub(super) async fn with_quota_headers<T: Serialize>(
    caller: &Caller,
    run: impl AsyncFnOnce(&mut QuotaHeaders) -> Result<T, ApiError>,
) -> Response {
    let mut quota = QuotaHeaders::peek(caller);
    let mut response = match run(&mut quota).await {
        Ok(reply) => Json(reply).into_response(),
        Err(err) => err.into_response(),
    };
    quota.apply(response.headers_mut());
    response
}

/// The checks in the order that keeps accounting honest: nothing is charged unless the
/// execution is sure to run (valid, within the concurrency limit, queue place held), and the
/// rate limit and quota are checked and charged together, in one step of the key store.
async fn run(
    state: &AppState,
    caller: &Caller,
    body: Result<ObjectBody, ApiError>,
    quota: &mut QuotaHeaders,
) -> Result<ExecuteResponse, ApiError> {
    let key = &caller.record;
    let body = body?;
    let (code, data) = code_and_data(&body)?;
    let runtime: Option<String> = body.optional("runtime", "a string")?;

    let _slot = state.concurrency.acquire(key.id())?;
    let prepared = state.sandbox.prepare(Execution {
        code,
        data,
        fuel: key.fuel_limit,
        tenant: Some(key.id().to_string()),
        runtime,
    })?;
    let (outcome, executions_left) = admit_and_run(state, caller, prepared, quota).await?;
    Ok(ExecuteResponse::new(outcome, Some(executions_left)))
}

/// `code` and `data` of an execution's body (a turn's too): `data` must be an object.
pub(super) fn code_and_data(
    body: &ObjectBody,
) -> Result<(String, Option<Box<RawValue>>), ApiError> {
    let code: String = body.required("code", "a string")?;
    let data = match body.raw("data") {
        None => None,
        Some(raw) if raw.get().starts_with('{') => Some(raw.to_owned()),
        Some(_) => return Err(ApiError::invalid("data", "data: must be a JSON object")),
    };
    Ok((code, data))
}

/// Charges `caller` for `prepared` (rate limit and quota together, in one step of the key
/// store) and runs it; the reply waits for the charge to be durable. Returns the outcome and
/// the executions the key has left.
pub(super) async fn admit_and_run(
    state: &AppState,
    caller: &Caller,
    prepared: Prepared,
    quota: &mut QuotaHeaders,
) -> Result<(Outcome, u64), ApiError> {
    let key = &caller.record;
    let admitted = state.keys.admit(caller).await.map_err(|err| match err {
        AdmitError::RateLimited(rate) => {
            quota.rate = rate;
            ApiError::RateLimited {
                retry_after: rate.retry_after.unwrap_or(Duration::from_secs(1)),
            }
        }
        AdmitError::LimitExceeded => ApiError::ExecutionsExhausted,
        AdmitError::Revoked => ApiError::RevokedKey,
        AdmitError::NotFound => ApiError::InvalidKey,
        AdmitError::Store(err) => ApiError::Storage(err),
    })?;
    quota.rate = admitted.rate;
    quota.executions_left = admitted.executions_left;

    // A charge not yet durable becomes so while the code runs; the reply waits for both.
    let (outcome, committed) = tokio::join!(prepared.run(), state.keys.commit());
    committed.map_err(ApiError::Storage)?;
    state.metrics.observe(&outcome);
    tracing::info!(
        key = %key.id(),
        runtime = %outcome.runtime,
        outcome = outcome.result.as_ref().map_or_else(|err| err.kind.as_str(), |_| "success"),
        fuel = outcome.fuel_used,
        duration_us = outcome.duration.as_micros() as u64,
        "execution"
    );
    Ok((outcome, admitted.executions_left))
}
