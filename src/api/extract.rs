//! Extractors that reject in our error shape: the `X-API-Key` authentication and a JSON-object
//! body whose fields are checked one by one, so a 422 names the field at fault.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::AppState;
use super::error::ApiError;
use crate::keys::{AuthError, Caller};

/// A client gets this long to send a whole body: a slow drip cannot hold a connection.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The header clients authenticate with, as in the prototype.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key that authenticated the request, with its budgets as they stood.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(API_KEY_HEADER)
            .ok_or(ApiError::MissingKey)?
            .to_str()
            .map_err(|_| ApiError::InvalidKey)?;
        match state.keys.authenticate(presented).await {
            Ok(caller) => Ok(Authenticated(caller)),
            Err(AuthError::Invalid) => Err(ApiError::InvalidKey),
            Err(AuthError::Revoked) => Err(ApiError::RevokedKey),
            Err(AuthError::Store(err)) => Err(ApiError::Storage(err)),
        }
    }
}

/// A JSON object body, kept as raw JSON per field: numbers stay exact and nothing is parsed
/// twice. Fields are read with [`ObjectBody::required`] and [`ObjectBody::optional`].
pub struct ObjectBody(BTreeMap<String, Box<RawValue>>);

impl FromRequest<AppState> for ObjectBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        ObjectBody::read(request, state, false).await
    }
}

/// An [`ObjectBody`] that may also be absent (an empty body reads as `{}`), for endpoints
/// whose every field is optional.
pub struct OptionalObjectBody(pub ObjectBody);

impl FromRequest<AppState> for OptionalObjectBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        ObjectBody::read(request, state, true)
            .await
            .map(OptionalObjectBody)
    }
}

impl ObjectBody {
    async fn read(
        request: Request,
        state: &AppState,
        may_be_empty: bool,
    ) -> Result<Self, ApiError> {
        let declared = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap_or_default().to_ascii_lowercase());
        if let Some(declared) = declared {
            let essence = declared.split(';').next().unwrap_or_default().trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::UnreadableBody)?;
        let bytes = read.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::TooLarge {
                    limit: state.body_limit,
                }
            }
            _ => ApiError::UnreadableBody,
        })?;
        if may_be_empty && bytes.is_empty() {
            return Ok(ObjectBody(BTreeMap::new()));
        }
        let fields = serde_json::from_slice(&bytes).map_err(|err| ApiError::Invalid {
            field: None,
            message: if err.is_data() {
                "The request body must be a JSON object".to_owned()
            } else {
                format!("The request body is not valid JSON: {err}")
            },
        })?;
        Ok(ObjectBody(fields))
    }

    /// The field `name`, which must be present and of type `T` (`what` names the type).
    pub fn required<T: DeserializeOwned>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<T, ApiError> {
        self.optional(name, what)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name}: field required")))
    }

    /// The field `name` when present and not `null`; it must be of type `T` (`what` names it).
    pub fn optional<T: DeserializeOwned>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("{name}: must be {what}"))),
        }
    }

    /// The field `name` as raw JSON, when present and not `null`.
    pub fn raw(&self, name: &str) -> Option<&RawValue> {
        self.0
            .get(name)
            .map(|raw| raw.as_ref())
            .filter(|raw| raw.get() != "null")
    }
}
