//! HTTP: routing, authentication, request and response types, the error model, metrics, the
//! OpenAPI document and the playground page. It calls the key store and the sandbox through
//! their handles and contains no wasmtime or database code itself, and never learns which
//! key-store backend it has.
//!
//! One [`app`] router serves both `pyexec serve` and the tests.

mod error;
mod execute;
mod extract;
mod metrics;
mod openapi;
mod playground;
mod quota;
mod runtimes;
mod sessions;
mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request};
use axum::middleware;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use self::error::{ApiError, ErrorBody};
pub use self::execute::ExecuteResponse;
pub use self::extract::{API_KEY_HEADER, BODY_READ_TIMEOUT};
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
        .route("/runtimes", get(runtimes::runtimes))
        .route("/sessions", post(sessions::open).get(sessions::list))
        .route("/sessions/{id}", get(sessions::show).delete(sessions::delete))
        .route("/sessions/{id}/execute", post(sessions::execute))
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

/// A client gets this long to send a request's headers (and an idle keep-alive connection is
/// closed after it): slow or stalled connections cannot pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once unless `pyexec serve --max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in flight finish (idle connections are closed). At most `max_connections` are
/// served at once; a connection past that is closed as soon as it is accepted.
///
/// hyper-util rather than `axum::serve`, for the header-read timeout and the connection cap.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(state);
    let mut connection = auto::Builder::new(TokioExecutor::new());
    connection
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    connection
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HEADER_READ_TIMEOUT);
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let served = graceful.watch(
            connection
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = served.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
