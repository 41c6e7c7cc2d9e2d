//! REST API and health endpoints. Routes live beside their handlers; this file
//! merges them in one visible list.

use axum::Router;

use crate::state::AppState;

pub mod conversations;
pub mod dev_login;
pub mod extract;
pub mod health;
pub mod layers;
pub mod openapi;
pub mod server;
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
