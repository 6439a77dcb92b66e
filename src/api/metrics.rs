//! Prometheus metrics: executions by outcome, fuel and duration histograms, the sandbox's queue,
//! and HTTP responses by route and status. Served at `GET /metrics` in the OpenMetrics text
//! format, which Prometheus scrapes natively.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use crate::sandbox::{Load, Outcome, SessionStats};

/// The service's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    executions: Family<OutcomeLabels, Counter>,
    fuel: Family<RuntimeLabels, Histogram, fn() -> Histogram>,
    duration: Family<RuntimeLabels, Histogram, fn() -> Histogram>,
    queued: Gauge,
    running: Gauge,
    sessions_open: Gauge,
    sessions_closed: Family<ReasonLabels, Counter>,
    http: Family<HttpLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// The runtime that ran it.
    runtime: String,
    /// `success` or the error kind.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The matched route template, or `unmatched`: never the raw path (unbounded cardinality).
    route: String,
    status: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pyexec");
        let executions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "executions",
            "Executions run, by runtime and outcome (success or error kind)",
            executions.clone(),
        );
        // Fuel: 10^4 .. 3·10^10, two buckets a decade.
        let fuel = Family::<_, _, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new((4..=10).flat_map(|decade| [1.0, 3.0].map(|m| m * 10f64.powi(decade))))
        });
        registry.register(
            "execution_fuel",
            "Fuel used per execution, by runtime",
            fuel.clone(),
        );
        // 100 µs .. ~30 s.
        let duration = Family::<_, _, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-4, 2.5, 14))
        });
        registry.register(
            "execution_duration_seconds",
            "Wall-clock time per execution, by runtime",
            duration.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_depth",
            "Executions waiting for a worker",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "executions_running",
            "Executions running now",
            running.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "Sessions open now (each holds an interpreter's memory)",
            sessions_open.clone(),
        );
        let sessions_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_closed",
            "Sessions closed and their memory returned, by reason (idle, lifetime, limit, deleted)",
            sessions_closed.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses, by route and status",
            http.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                executions,
                fuel,
                duration,
                queued,
                running,
                sessions_open,
                sessions_closed,
                http,
            }),
        }
    }
}

impl Metrics {
    /// Records one finished execution.
    pub fn observe(&self, outcome: &Outcome) {
        let label = match &outcome.result {
            Ok(_) => "success",
            Err(err) => err.kind.as_str(),
        };
        self.inner
            .executions
            .get_or_create(&OutcomeLabels {
                runtime: outcome.runtime.clone(),
                outcome: label.to_owned(),
            })
            .inc();
        let runtime = RuntimeLabels {
            runtime: outcome.runtime.clone(),
        };
        let fuel = self.inner.fuel.get_or_create(&runtime);
        fuel.observe(outcome.fuel_used as f64);
        let duration = self.inner.duration.get_or_create(&runtime);
        duration.observe(outcome.duration.as_secs_f64());
    }

    /// The text exposition, with the sandbox's current load.
    pub fn render(&self, load: Load, sessions: SessionStats) -> String {
        self.inner.queued.set(load.queued as i64);
        self.inner.running.set(load.running as i64);
        self.inner.sessions_open.set(sessions.open as i64);
        // The sandbox counts; the counters catch up with it.
        for (reason, closed) in [
            ("idle", sessions.expired_idle),
            ("lifetime", sessions.expired_lifetime),
            ("limit", sessions.closed_by_limit),
            ("deleted", sessions.deleted),
        ] {
            let counter = self
                .inner
                .sessions_closed
                .get_or_create(&ReasonLabels { reason });
            counter.inc_by(closed.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counts every response by method, route and status.
pub async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, elapsed_us = started.elapsed().as_micros() as u64, "response");
    state
        .metrics
        .inner
        .http
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics in the OpenMetrics text format", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(state.sandbox.load(), state.sandbox.session_stats()),
    )
}
