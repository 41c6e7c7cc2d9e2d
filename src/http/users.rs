//! Unread totals and presence lookups.

use axum::{Router, extract::State, http::StatusCode, response::Response, routing::get};
use serde::Deserialize;

use super::extract::{ApiQuery, Caller};
use crate::{
    chat::responses::Statuses,
    error::{ApiError, success},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/chat/unread", get(get_unread)).route("/api/chat/users/status", get(get_status))
}

/// GET /api/chat/unread
#[utoipa::path(get, path = "/api/chat/unread", tag = "users", summary = "My unread counts",
    responses((status = 200, body = super::openapi::Success<crate::chat::responses::UnreadSummary>), super::openapi::Errors))]
async fn get_unread(State(st): State<AppState>, Caller(me): Caller) -> Result<Response, ApiError> {
    Ok(success(StatusCode::OK, "unread counts", st.chat.unread(&me).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusParams {
    /// Comma-separated user ids, at most 200.
    ids: Option<String>,
}

/// GET /api/chat/users/status?ids=a,b
#[utoipa::path(get, path = "/api/chat/users/status", tag = "users", params(StatusParams), summary = "Presence of users",
    responses((status = 200, body = super::openapi::Success<super::openapi::Statuses>), super::openapi::Errors))]
async fn get_status(
    State(st): State<AppState>,
    Caller(me): Caller,
    ApiQuery(p): ApiQuery<StatusParams>,
) -> Result<Response, ApiError> {
    let ids: Vec<String> =
        p.ids.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if ids.is_empty() {
        return Err(ApiError::validation("ids", "is required: comma-separated user ids"));
    }
    let statuses = st.chat.statuses(me.id(), &ids).await?;
    Ok(success(StatusCode::OK, "statuses", Statuses { statuses }))
}
