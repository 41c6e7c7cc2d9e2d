//! `GET|POST /api/dev/sign-in`: a development sign-in for the web client and for trying the
//! service, which mints a token for any user id the caller picks.
//!
//! Open only in the embedded default with the generated development secret: no `REDIS_URL`, no
//! `MONGODB_URI`, no `JWT_SECRET` and no `JWT_PUBLIC_KEY_FILE`. Then nobody else trusts the
//! secret, so a minted token opens nothing but this one node. Anywhere else the route answers
//! 403 `forbidden`, and tokens come from the JobSphere auth service (or `jobsphere-chat token`).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::extract::ApiJson;
use crate::{
    auth::Identity,
    chat::{
        model::{Role, User},
        validate,
    },
    config::Config,
    error::{ApiError, success},
    state::AppState,
};

/// Lifetime of a development token: short, so clients exercise their refresh path.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

const MAX_NAME: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/dev/sign-in", get(get_sign_in).post(post_sign_in))
}

/// Whether this node may mint development tokens (see the module header).
pub fn enabled(config: &Config) -> bool {
    !config.is_cluster() && config.jwt_secret.is_none() && config.jwt_public_key_file.is_none()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DevSignInStatus)]
struct SignInStatus {
    enabled: bool,
}

/// GET /api/dev/sign-in: `{enabled}`, so a client knows whether to offer the form.
#[utoipa::path(get, path = "/api/dev/sign-in", tag = "development", summary = "Whether this node offers the development sign-in",
    responses((status = 200, body = super::openapi::Success<SignInStatus>)))]
async fn get_sign_in(State(st): State<AppState>) -> Response {
    success(StatusCode::OK, "development sign-in", SignInStatus { enabled: enabled(&st.config) })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DevSignInRequest)]
struct SignInBody {
    user_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DevSignedIn)]
struct SignedIn {
    token: String,
    expires_in_secs: u64,
    user: User,
}

/// POST /api/dev/sign-in {userId, name?, role?}: a token for that user, who is registered.
#[utoipa::path(post, path = "/api/dev/sign-in", tag = "development", request_body = SignInBody,
    summary = "A token for any user (embedded default with the generated secret only)",
    responses((status = 200, body = super::openapi::Success<SignedIn>),
        (status = 403, description = "cluster mode or a configured JWT key", body = super::openapi::ErrorBody),
        (status = 400, description = "a bad field", body = super::openapi::ErrorBody)))]
async fn post_sign_in(State(st): State<AppState>, ApiJson(b): ApiJson<SignInBody>) -> Result<Response, ApiError> {
    if !enabled(&st.config) {
        return Ok(refused());
    }
    validate::user_id("userId", &b.user_id)?;
    let name = b.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| b.user_id.clone());
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", format!("must be at most {MAX_NAME} printable characters")));
    }
    let role = match b.role.as_deref() {
        None => Role::Customer,
        Some(r) => {
            Role::parse(r).ok_or_else(|| ApiError::validation("role", "must be customer, contractor or admin"))?
        }
    };
    let user = User { id: b.user_id, name, email: None, role, avatar: None };
    let token = st.jwt.sign(&user, DEV_TOKEN_TTL).map_err(|e| {
        tracing::warn!(error = %e, "development sign-in could not sign");
        ApiError::Internal
    })?;
    st.chat.register_user(&Identity { user: user.clone(), expires_at: None }).await?;
    Ok(success(StatusCode::OK, "signed in", SignedIn { token, expires_in_secs: DEV_TOKEN_TTL.as_secs(), user }))
}

/// 403 in the error envelope, saying why and what to use instead.
fn refused() -> Response {
    let body = json!({
        "status": "error",
        "code": "forbidden",
        "message": "development sign-in is off: this node runs in cluster mode or with a configured JWT key; \
                    use a token from your auth service",
        "data": null,
    });
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}
