//! The one error type of the API: a status, a stable code and a message naming what is wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An API error, rendered as `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `NotFound`.
    pub code: &'static str,
    /// What is wrong, naming the field or resource.
    pub message: String,
}

impl ApiError {
    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthorized",
            message: "missing or wrong bearer token in the Authorization header".into(),
        }
    }

    /// 404 for `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "NotFound", message: what.into() }
    }

    /// 400 for a body that is not the expected JSON; the message names the field.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "InvalidBody", message: message.into() }
    }

    /// Any status with a code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 500 with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "InternalError", message: message.into() }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    /// serde's message names the field and the position ("missing field `name` at line 1 column 2").
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::bad_body(rejection.body_text())
    }
}

impl From<crate::groups::GroupsError> for ApiError {
    fn from(e: crate::groups::GroupsError) -> Self {
        use crate::groups::GroupsError as E;
        let (status, code) = match &e {
            E::InvalidName(_) => (StatusCode::BAD_REQUEST, "InvalidName"),
            E::NameTaken(_) => (StatusCode::CONFLICT, "NameTaken"),
            E::InvalidId(_) => (StatusCode::BAD_REQUEST, "InvalidId"),
            E::InvalidOption(_) => (StatusCode::BAD_REQUEST, "InvalidOption"),
            E::IdTaken(_) => (StatusCode::CONFLICT, "IdTaken"),
            E::Limit(_) => (StatusCode::CONFLICT, "LimitExceeded"),
            E::Protected(_) => (StatusCode::CONFLICT, "Protected"),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            E::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            E::Cluster(_) => (StatusCode::SERVICE_UNAVAILABLE, "ClusterUnavailable"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}
