//! `JsonObject<T>`: the JSON body extractor of the REST APIs. Like axum's `Json`, but the body
//! must be a JSON object: serde's derived struct deserializers also accept an array and fill
//! the fields by position, which PROTOCOL.md does not allow anywhere.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header,
};
use serde::de::DeserializeOwned;

use crate::validate::is_object;

pub(crate) struct JsonObject<T>(pub T);

/// Why a body was refused.
#[derive(Debug)]
pub(crate) enum BodyRejection {
    /// Not `application/json` (or `+json`).
    ContentType,
    /// Past the route's body limit.
    TooLarge,
    /// Not a JSON object of the expected shape; the message says why.
    Invalid(String),
}

impl BodyRejection {
    /// The message for a `400`-class answer.
    pub(crate) fn message(&self) -> String {
        match self {
            BodyRejection::ContentType => "expected `Content-Type: application/json`".into(),
            BodyRejection::TooLarge => "the request body is too large".into(),
            BodyRejection::Invalid(m) => m.clone(),
        }
    }
}

/// Handlers take `Result<JsonObject<T>, BodyRejection>` and answer in their API's error shape;
/// this plain `400` is only the fallback for one that takes `JsonObject<T>` directly.
impl axum::response::IntoResponse for BodyRejection {
    fn into_response(self) -> axum::response::Response {
        (axum::http::StatusCode::BAD_REQUEST, self.message()).into_response()
    }
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonObject<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(BodyRejection::ContentType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                BodyRejection::TooLarge
            } else {
                BodyRejection::Invalid(format!("reading the body: {}", e.body_text()))
            }
        })?;
        if !is_object(&bytes) {
            return Err(BodyRejection::Invalid("the body must be a JSON object".into()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonObject)
            .map_err(|e| BodyRejection::Invalid(format!("invalid body: {e}")))
    }
}
