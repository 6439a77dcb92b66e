//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers and types.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::execute::{ExecuteRequest, ExecuteResponse};
use super::runtimes::RuntimesResponse;
use super::sessions::{OpenSessionRequest, SessionResponse, SessionsResponse, TurnResponse};
use super::usage::{
    HealthResponse, History, HistoryBucket, RateLimitUsage, SessionsUsage, UsageResponse,
};
use crate::sandbox::Limits;
use crate::sandbox::runtime::Package;
use crate::sandbox::{ErrorKind, ExecutionError, Image, RuntimeInfo};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pyexec",
        description = "Runs untrusted Python in a fuel-metered, memory-capped WebAssembly sandbox."
    ),
    paths(
        super::execute::execute,
        super::runtimes::runtimes,
        super::sessions::open,
        super::sessions::list,
        super::sessions::show,
        super::sessions::delete,
        super::sessions::execute,
        super::usage::usage,
        super::usage::health,
        super::metrics::metrics,
        openapi_json,
    ),
    components(schemas(
        ExecuteRequest,
        ExecuteResponse,
        ExecutionError,
        Image,
        ErrorKind,
        ErrorBody,
        RuntimesResponse,
        OpenSessionRequest,
        SessionResponse,
        SessionsResponse,
        TurnResponse,
        RuntimeInfo,
        Package,
        Limits,
        UsageResponse,
        RateLimitUsage,
        History,
        HistoryBucket,
        SessionsUsage,
        HealthResponse,
    )),
    modifiers(&ApiKeyAuth),
    tags(
        (name = "execution", description = "Running code"),
        (name = "sessions", description = "Interpreter state kept across executions"),
        (name = "account", description = "The calling key"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
            );
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
