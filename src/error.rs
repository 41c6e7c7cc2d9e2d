//! The one error type at the boundary (REST and Socket.IO): a stable snake_case `code`, an HTTP
//! status and a message that is safe to show. Internal details are logged once, never returned.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("unauthorized")]
    Unauthorized,
    #[error("you are not a participant of this conversation")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("payload too large (limit 64 KiB)")]
    PayloadTooLarge,
    #[error("rate limited: retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("service temporarily unavailable, retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { field: field.into(), message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The socket ack body: `{status: "error", code, message, retryAfterMs?}`.
    pub fn to_ack(&self) -> ErrorAck {
        let retry_after_ms = match self {
            Self::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        };
        ErrorAck { status: "error", code: self.code(), message: self.to_string(), retry_after_ms }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("resource"),
            StoreError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "store unavailable");
                Self::Unavailable
            }
            StoreError::Conflict(msg) | StoreError::Internal(msg) => {
                tracing::error!(error = %msg, "store error");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { status: "error", code: self.code(), message: self.to_string(), data: () };
        let mut resp = (self.status(), Json(body)).into_response();
        if let Self::RateLimited { retry_after_ms } = self {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The REST success envelope `{status: "success", message, data}`.
#[derive(Serialize)]
struct SuccessBody<'a, T> {
    status: &'static str,
    message: &'a str,
    data: T,
}

/// The REST error envelope `{status: "error", code, message, data: null}`.
#[derive(Serialize)]
struct ErrorBody {
    status: &'static str,
    code: &'static str,
    message: String,
    data: (),
}

/// The socket ack for success: `{status: "success", data}`.
#[derive(Serialize)]
pub struct SuccessAck<T> {
    status: &'static str,
    data: T,
}

/// The socket ack for a failure: `{status: "error", code, message, retryAfterMs?}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorAck {
    status: &'static str,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// The success envelope `{status: "success", message, data}`.
pub fn success<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    (status, Json(SuccessBody { status: "success", message, data })).into_response()
}

/// The socket ack body for success: `{status: "success", data}`.
pub fn ack_success<T: Serialize>(data: T) -> SuccessAck<T> {
    SuccessAck { status: "success", data }
}
