//! Extractors that turn every malformed request into the error envelope: the caller's identity
//! from `Authorization: Bearer`, JSON bodies decoded with field paths, query strings.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{auth::Identity, error::ApiError, state::AppState};

/// The authenticated caller (401 otherwise); their user record is registered/refreshed.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header.strip_prefix("Bearer ").ok_or(ApiError::Unauthorized)?;
        let identity = state.jwt.verify(token).map_err(|e| {
            tracing::debug!(error = %e, "REST auth refused");
            ApiError::Unauthorized
        })?;
        tracing::Span::current().record("user_id", identity.id());
        state.chat.register_user(&identity).await?;
        Ok(Self(identity))
    }
}

/// A JSON object body; errors name the field, an oversized body is 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        decode_json(&bytes).map(Self)
    }
}

/// An optional JSON object body: empty (or only whitespace) is `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        decode_json(&bytes).map(|v| Self(Some(v)))
    }
}

/// The body within the 64 KiB limit; a larger announced length is refused before reading.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > crate::edge::MAX_PAYLOAD) {
        return Err(ApiError::PayloadTooLarge);
    }
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::validation("body", "could not be read")
        }
    })
}

/// Decodes a JSON object; a type error names the field path, a syntax error says the body is
/// malformed. Arrays are refused: serde would read them positionally into a struct.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(ApiError::validation("body", "must be a JSON object")),
        None => return Err(ApiError::validation("body", "is required")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::validation("body", format!("malformed JSON ({inner})"))
        } else {
            ApiError::validation(if path == "." { "body".to_owned() } else { path }, inner.to_string())
        }
    })?;
    de.end().map_err(|e| ApiError::validation("body", format!("malformed JSON ({e})")))?;
    Ok(value)
}

/// A query string; a bad value is a 400 `validation` error.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(q)| Self(q)).map_err(|e| {
            ApiError::validation("query", e.body_text().replace("Failed to deserialize query string: ", ""))
        })
    }
}
