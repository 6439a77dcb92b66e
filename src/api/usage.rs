//! `GET /usage` (the calling key's budgets and limits) and `GET /health` (liveness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ErrorBody, whole_seconds};
use super::extract::Authenticated;
use super::quota::QuotaHeaders;

/// The calling key and what it may still do.
#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    /// The key's public identifier (its display prefix).
    pub id: String,
    pub name: String,
    /// `test` or `prod`.
    pub env: String,
    pub executions_limit: u64,
    pub executions_used: u64,
    pub executions_left: u64,
    pub rate_limit: RateLimitUsage,
    /// Limits each execution of this key runs under.
    pub limits: ExecutionLimits,
}

/// The per-minute rate limit's state.
#[derive(Serialize, ToSchema)]
pub struct RateLimitUsage {
    pub limit_per_minute: u32,
    /// Requests allowed right now.
    pub remaining: u32,
    /// Seconds until the full budget is back.
    pub reset_seconds: u64,
}

/// The limits of one execution.
#[derive(Serialize, ToSchema)]
pub struct ExecutionLimits {
    /// Fuel per execution (the key's own limit, or the server default).
    pub fuel: u64,
    pub timeout_ms: u64,
    pub memory_bytes: usize,
    /// stdout + stderr, and the serialised `result`.
    pub output_bytes: usize,
    /// Code plus data.
    pub input_bytes: usize,
}

/// The calling key's usage, budgets and execution limits.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "account",
    security(("api_key" = [])),
    responses(
        (status = 200, body = UsageResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Response {
    let quota = QuotaHeaders::peek(&caller);
    let key = &caller.record;
    let limits = state.sandbox.limits();
    let body = UsageResponse {
        id: key.id().to_string(),
        name: key.name.clone(),
        env: key.env.to_string(),
        executions_limit: key.executions_limit,
        executions_used: key.executions_used,
        executions_left: key.executions_left(),
        rate_limit: RateLimitUsage {
            limit_per_minute: quota.rate.limit,
            remaining: quota.rate.remaining,
            reset_seconds: whole_seconds(quota.rate.reset_after),
        },
        limits: ExecutionLimits {
            fuel: key.fuel_limit.unwrap_or(limits.fuel),
            timeout_ms: limits.timeout.as_millis() as u64,
            memory_bytes: limits.memory_bytes,
            output_bytes: limits.output_bytes,
            input_bytes: limits.input_bytes,
        },
    };
    let mut response = Json(body).into_response();
    quota.apply(response.headers_mut());
    response
}

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `unavailable` when this instance cannot serve executions.
    pub status: &'static str,
    pub version: &'static str,
    /// Why the instance is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Liveness: 200 while this instance can serve executions; 503 while its key store cannot:
/// the sled database failed to write (a full disk, say; only a restart clears it), or
/// PostgreSQL does not answer (cleared by itself once the database is back). No
/// authentication.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, body = HealthResponse),
        (status = 503, description = "The key store is failing: PostgreSQL unreachable, or the sled database failed to write (restart once its cause is fixed)", body = HealthResponse),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let (status, health, detail) = match state.keys.unavailable().await {
        None => (StatusCode::OK, "ok", None),
        Some(failure) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Some(failure),
        ),
    };
    let body = HealthResponse {
        status: health,
        version: env!("CARGO_PKG_VERSION"),
        detail,
    };
    (status, Json(body)).into_response()
}
