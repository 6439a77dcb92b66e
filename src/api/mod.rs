//! HTTP: routing, authentication, request and response types, the error model, metrics, the
//! OpenAPI document and the playground page. It calls the key store and the sandbox through
//! their handles and contains no wasmtime or sled code itself.
//!
//! One [`app`] router serves both `pyexec serve` and the tests.

mod error;
mod execute;
mod extract;
mod metrics;
mod openapi;
mod playground;
mod quota;
mod usage;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request};
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use self::error::{ApiError, ErrorBody};
pub use self::execute::ExecuteResponse;
pub use self::extract::API_KEY_HEADER;
pub use self::metrics::Metrics;
pub use self::openapi::ApiDoc;
pub use self::quota::KeyConcurrency;
use crate::keys::KeyStore;
use crate::sandbox::Sandbox;

/// Bytes a request body may take beyond the input limit: JSON escaping of the code and the
/// envelope around it.
const BODY_OVERHEAD: usize = 64 << 10;

/// What every handler shares; each field is a cheap handle.
#[derive(Clone)]
pub struct AppState {
    /// Keys, quotas and rate limits.
    pub keys: KeyStore,
    /// Where code runs.
    pub sandbox: Sandbox,
    /// Counters and histograms served at `/metrics`.
    pub metrics: Metrics,
    /// The per-key cap on executions in flight.
    pub concurrency: KeyConcurrency,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl AppState {
    /// State for `keys` and `sandbox`, allowing each key `per_key_concurrency` executions in
    /// flight.
    pub fn new(keys: KeyStore, sandbox: Sandbox, per_key_concurrency: usize) -> Self {
        // JSON may escape each byte of code into up to six; allow double plus the envelope.
        let body_limit = 2 * sandbox.limits().input_bytes + BODY_OVERHEAD;
        Self {
            keys,
            sandbox,
            metrics: Metrics::default(),
            concurrency: KeyConcurrency::new(per_key_concurrency),
            body_limit,
        }
    }
}

/// The routes, with request ids, tracing, metrics and the body limit.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(playground::playground))
        .route("/execute", post(execute::execute))
        .route("/usage", get(usage::usage))
        .route("/health", get(usage::health))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_responses,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .extensions()
                    .get::<RequestId>()
                    .and_then(|id| id.header_value().to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", id, method = %request.method(), path = %request.uri().path())
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Request ids for requests that come without an `X-Request-Id`.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", rand::random::<u64>());
        Some(RequestId::new(
            HeaderValue::from_str(&id).expect("hex is a valid header value"),
        ))
    }
}
