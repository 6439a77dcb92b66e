//! `GET /usage` (the calling key's budgets, limits and recent usage) and `GET /health`
//! (liveness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody, whole_seconds};
use super::extract::Authenticated;
use super::quota::QuotaHeaders;
use crate::keys;
use crate::sandbox::Limits;

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
    pub limits: Limits,
    /// Executions per UTC hour and per UTC day, recently.
    pub history: History,
    /// The key's sessions on this server.
    pub sessions: SessionsUsage,
}

/// The key's open sessions (`/sessions`) on the server that answers.
#[derive(Serialize, ToSchema)]
pub struct SessionsUsage {
    /// Open now.
    pub open: usize,
    /// How many may be open at once.
    pub limit: usize,
}

/// The key's recent executions (charged executions: those that ran, whatever their outcome),
/// per UTC hour and per UTC day. Each list has every bucket of its window, oldest first, zeros
/// included, so it can be charted as is; its last bucket is the current hour or day, still
/// counting. Kept for `retention_days` (`serve --usage-retention-days`); resetting a key's
/// executions does not erase its history.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// How many days usage is kept; `daily` never reaches further back.
    pub retention_days: u32,
    /// 24 buckets: the current hour and the 23 before it.
    pub hourly: Vec<HistoryBucket>,
    /// `min(retention_days, 30)` buckets: today and the days before it.
    pub daily: Vec<HistoryBucket>,
}

/// Executions charged from `start` for one hour or one day.
#[derive(Serialize, ToSchema)]
pub struct HistoryBucket {
    /// When the bucket starts: RFC 3339, UTC, on a whole hour (or midnight).
    #[schema(format = DateTime, example = "2026-12-03T09:00:00Z")]
    pub start: String,
    pub executions: u64,
}

impl From<keys::UsageHistory> for History {
    fn from(history: keys::UsageHistory) -> History {
        let buckets = |buckets: Vec<keys::UsageBucket>| {
            buckets
                .into_iter()
                .map(|bucket| HistoryBucket {
                    start: bucket
                        .start
                        .format(&Rfc3339)
                        .unwrap_or_else(|_| bucket.start.to_string()),
                    executions: bucket.executions,
                })
                .collect()
        };
        History {
            retention_days: history.retention_days,
            hourly: buckets(history.hourly),
            daily: buckets(history.daily),
        }
    }
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

/// The calling key's usage, budgets, execution limits and recent usage per hour and day.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "account",
    security(("api_key" = [])),
    responses(
        (status = 200, body = UsageResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 503, description = "The key store is unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let quota = QuotaHeaders::peek(&caller);
    let key = &caller.record;
    let limits = state.sandbox.limits();
    let history = state
        .keys
        .usage_history(&key.id, OffsetDateTime::now_utc())
        .await
        .map_err(ApiError::Storage)?;
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
        limits: Limits {
            fuel: key.fuel_limit.unwrap_or(limits.fuel),
            ..limits
        },
        history: history.into(),
        sessions: SessionsUsage {
            open: state.sandbox.sessions(&key.id().to_string()).len(),
            limit: (state.sandbox.session_config()).cap_for(key.max_sessions.map(|n| n as usize)),
        },
    };
    let mut response = Json(body).into_response();
    quota.apply(response.headers_mut());
    Ok(response)
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
