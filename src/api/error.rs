//! The server API's one error shape, `{code, message, details}`, with its HTTP status, and the
//! request body extractor that turns every malformed body into it.

use axum::{
    Json,
    extract::{FromRequest, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use crate::{http::body::JsonObject, state::StateError};

/// Every error of the server API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorBody {
    /// Machine-readable: `unauthorized`, `bad_request`, `unsupported_media_type`,
    /// `payload_too_large`, `bad_channel`, `unknown_namespace`, `not_enabled`,
    /// `idempotency_in_progress`, `unavailable`, `internal_error`; `method_not_allowed` and
    /// `not_found` for a wrong method or path.
    pub code: &'static str,
    /// For humans.
    pub message: String,
    /// More about the error, when there is more (`null` otherwise).
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ApiErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, body: ApiErrorBody { code, message: message.into(), details: None } }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: apikey <key>` header is required",
        )
    }

    /// Shared state or the history database failed or did not answer.
    pub fn unavailable(what: &str, err: &StateError) -> Self {
        tracing::warn!(error = %err, what, "server API call failed on a dependency");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{what} is unavailable"))
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A JSON object body of type `T`: like `http::body::JsonObject`, with every refusal in the
/// server API's error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match JsonObject::<T>::from_request(req, state).await {
            Ok(JsonObject(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

impl From<crate::http::body::BodyRejection> for ApiError {
    fn from(r: crate::http::body::BodyRejection) -> Self {
        use crate::http::body::BodyRejection as R;
        match r {
            R::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ),
            R::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than --api-max-body-bytes",
            ),
            R::Invalid(message) => ApiError::bad_request(message),
        }
    }
}
