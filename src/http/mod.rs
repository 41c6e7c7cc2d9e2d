//! REST API (DESIGN §4) and health endpoints. Routes live beside their handlers; this file
//! merges them in one visible list.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::ConnectInfo,
    http::{Extensions, HeaderMap},
};

use crate::app::AppState;

pub mod conversations;
pub mod dev_login;
pub mod extract;
pub mod health;
pub mod layers;
pub mod openapi;
pub mod users;
pub mod web;

/// Every REST route (Socket.IO is attached as a layer by the caller).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(conversations::router())
        .merge(users::router())
        .merge(dev_login::router())
        .merge(openapi::router())
        .fallback(|| async { crate::error::ApiError::NotFound("route") });
    let app = layers::rest(api).merge(health::router());
    web::attach(app, &state.config).with_state(state)
}

/// The client's address for throttling: the nearest proxy's `X-Forwarded-For` entry (the
/// rightmost, which a client cannot forge past our load balancer), else the peer address.
pub fn client_ip(headers: &HeaderMap, ext: &Extensions) -> String {
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
        && let Some(last) = xff.rsplit(',').map(str::trim).find(|s| !s.is_empty())
    {
        return last.to_owned();
    }
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into())
}
