//! The error model of the API: every error that is not the user's code is an [`ApiError`],
//! answered as `{"detail": "…", "code": "…"}` (the prototype's shape plus a stable code), with
//! the status and headers each variant documents. Internal causes are logged, never sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::sandbox::Rejected;

/// Errors the API answers with instead of running code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no `X-API-Key` header.
    #[error("Missing API key: send it in the X-API-Key header")]
    MissingKey,
    /// 401: the key is unknown or malformed.
    #[error("Invalid API key")]
    InvalidKey,
    /// 401: the key was revoked.
    #[error("API key has been revoked")]
    RevokedKey,
    /// 429: the key's executions are used up.
    #[error("API executions limit exceeded")]
    ExecutionsExhausted,
    /// 429 + `Retry-After`: the key's per-minute rate limit.
    #[error("API rate limit exceeded")]
    RateLimited {
        /// Until one more request would be allowed.
        retry_after: Duration,
    },
    /// 429 + `Retry-After`: the key already has its maximum of executions in flight.
    #[error("Too many concurrent executions for this API key (at most {limit})")]
    TooManyConcurrent {
        /// Executions one key may have in flight.
        limit: usize,
    },
    /// 422: the body is not what the endpoint takes.
    #[error("{message}")]
    Invalid {
        /// The offending field, when one is to blame.
        field: Option<&'static str>,
        /// What is wrong, for a human.
        message: String,
    },
    /// 422 (`invalid_request`, field `runtime`): the request names a runtime there is not;
    /// the body lists the ones there are in `available`.
    #[error("runtime: unknown runtime {requested:?}; available: {}", available.join(", "))]
    UnknownRuntime {
        /// The name asked for.
        requested: String,
        /// The runtimes there are, the default first.
        available: Vec<String>,
    },
    /// 413: the body (or code + data) is larger than allowed.
    #[error("Request body too large: the limit is {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415: the body is declared as something other than JSON.
    #[error("Unsupported content type: send application/json")]
    UnsupportedMediaType,
    /// 400: the body could not be read (e.g. the client closed the connection mid-body).
    #[error("Could not read the request body")]
    UnreadableBody,
    /// 404: no such route.
    #[error("Not found")]
    NotFound,
    /// 405: the route exists, the method does not.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 503 + `Retry-After`: every worker is busy and the queue is full, or this node has as
    /// many sessions open as it can hold.
    #[error("The service is at capacity; retry shortly")]
    Overloaded,
    /// 404: no open session of the calling key has this id (never existed, expired, deleted,
    /// another key's, or opened on another node, which the detail names).
    #[error("{0}")]
    SessionNotFound(String),
    /// 409: the session is running another turn.
    #[error("{0}")]
    SessionBusy(String),
    /// 429: the key has as many sessions open as it may.
    #[error("{0}")]
    SessionLimit(String),
    /// 503 + `Retry-After`: the key store failed or is unreachable; the cause is logged.
    /// Nothing was charged and nothing ran.
    #[error("The key database is unavailable; retry shortly")]
    Storage(#[source] crate::keys::StoreError),
}

/// The JSON body of every [`ApiError`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable explanation (the prototype's field).
    pub detail: String,
    /// Stable machine-readable code, e.g. `executions_limit_exceeded`.
    pub code: &'static str,
    /// The request field at fault, for `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// The runtimes there are, when the request named another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<Vec<String>>,
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::InvalidKey | ApiError::RevokedKey => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::ExecutionsExhausted
            | ApiError::RateLimited { .. }
            | ApiError::TooManyConcurrent { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Invalid { .. } | ApiError::UnknownRuntime { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::SessionNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::SessionBusy(_) => StatusCode::CONFLICT,
            ApiError::SessionLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded | ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_api_key",
            ApiError::InvalidKey => "invalid_api_key",
            ApiError::RevokedKey => "revoked_api_key",
            ApiError::ExecutionsExhausted => "executions_limit_exceeded",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::TooManyConcurrent { .. } => "concurrency_limit_exceeded",
            ApiError::Invalid { .. } | ApiError::UnknownRuntime { .. } => "invalid_request",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Overloaded => "overloaded",
            ApiError::SessionNotFound(_) => "session_not_found",
            ApiError::SessionBusy(_) => "session_busy",
            ApiError::SessionLimit(_) => "session_limit_exceeded",
            ApiError::Storage(_) => "storage_unavailable",
        }
    }

    /// `Retry-After`, for the errors worth retrying.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::TooManyConcurrent { .. } | ApiError::Overloaded | ApiError::Storage(_) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field),
            message: message.into(),
        }
    }
}

impl From<Rejected> for ApiError {
    fn from(rejected: Rejected) -> Self {
        match rejected {
            Rejected::Overloaded { .. } => ApiError::Overloaded,
            Rejected::InputTooLarge { limit, .. } => ApiError::TooLarge { limit },
            Rejected::DataTooDeep { .. } => ApiError::invalid("data", rejected.to_string()),
            Rejected::UnknownRuntime {
                requested,
                available,
            } => ApiError::UnknownRuntime {
                requested,
                available,
            },
            Rejected::SessionNotFound { .. } => ApiError::SessionNotFound(rejected.to_string()),
            Rejected::SessionBusy { .. } => ApiError::SessionBusy(rejected.to_string()),
            Rejected::SessionLimit { .. } => ApiError::SessionLimit(rejected.to_string()),
        }
    }
}

/// Whole seconds, rounded up: a client that waits this long is not refused again.
pub(crate) fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Storage(source) = &self {
            tracing::error!(error = %crate::error_chain(source), "key database failure");
        }
        let (field, available) = match &self {
            ApiError::Invalid { field, .. } => (*field, None),
            ApiError::UnknownRuntime { available, .. } => {
                (Some("runtime"), Some(available.clone()))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            detail: self.to_string(),
            code: self.code(),
            field,
            available,
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(retry_after) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(whole_seconds(retry_after)),
            );
        }
        response
    }
}
