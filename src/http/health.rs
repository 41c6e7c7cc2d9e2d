//! `/healthz` (liveness: the process answers) and `/readyz` (store and Redis reachable, not
//! draining). Both answer within a second even while a dependency hangs.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde::Serialize;

use crate::state::{AppState, Checks};

const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(get_healthz)).route("/readyz", get(get_readyz))
}

/// GET /healthz
#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Liveness: the process answers",
    responses((status = 200, body = super::openapi::Health)))]
async fn get_healthz() -> impl IntoResponse {
    Json(HealthBody { status: "ok" })
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
}

#[derive(Serialize)]
struct ReadyBody {
    status: &'static str,
    checks: Checks,
}

/// GET /readyz
#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: store and Redis reachable, not draining",
    responses((status = 200, body = super::openapi::Ready), (status = 503, description = "not ready", body = super::openapi::Ready)))]
async fn get_readyz(State(st): State<AppState>) -> impl IntoResponse {
    let report = st.readiness(CHECK_TIMEOUT).await;
    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(ReadyBody { status: if report.ready { "ready" } else { "not_ready" }, checks: report.checks }))
}
