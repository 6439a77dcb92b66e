//! `GET /runtimes`: the Python runtimes a request may choose between, as the sandbox
//! describes them. Needs no key; knows nothing of how a runtime runs.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::sandbox::RuntimeInfo;

/// The reply of `GET /runtimes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimesResponse {
    /// The runtime used when a request names none.
    #[schema(example = "rustpython")]
    pub default: String,
    /// Every runtime, the default first.
    pub runtimes: Vec<RuntimeInfo>,
}

/// The runtimes `POST /execute` accepts in `runtime`, with their versions, preloaded modules,
/// packages and default limits.
#[utoipa::path(
    get,
    path = "/runtimes",
    tag = "execution",
    responses((status = 200, description = "The runtimes there are", body = RuntimesResponse))
)]
pub async fn runtimes(State(state): State<AppState>) -> Json<RuntimesResponse> {
    Json(RuntimesResponse {
        default: state.sandbox.default_runtime().info().name.clone(),
        runtimes: state.sandbox.runtimes(),
    })
}
