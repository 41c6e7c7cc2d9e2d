//! The connection throttle, at the Engine.IO handshake: a new session (a request on
//! `/socket.io/` without `sid`, polling or websocket) over its budget is answered
//! `429 Too Many Requests` with `Retry-After`, before engineioxide sees it.
//!
//! Why here and not in the connect middleware: a namespace `connect_error` is final for the
//! official clients (they never retry), while a failed handshake is a transport error that
//! their reconnection manager retries with backoff, so a throttled client gets in by itself.
//!
//! Key: the user when the handshake carries a valid token (`token` query parameter or
//! `Authorization` header), so users behind one NAT or carrier-grade NAT do not share a budget;
//! otherwise the client address ([`crate::edge::client_ip`], `X-Forwarded-For` only from
//! `CHAT_TRUSTED_PROXIES`). Clients that send their token in the Socket.IO `auth` payload are
//! keyed by address: that payload only arrives after the handshake.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    edge::{address_key, client_ip},
    error::ApiError,
    limits::LimitKind,
    state::AppState,
};

pub async fn throttle_handshakes(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !is_handshake(&req) {
        return next.run(req).await;
    }
    let key = key_of(&st, &req);
    match st.chat.check_rate(LimitKind::Connection, &key).await {
        Ok(()) => next.run(req).await,
        Err(e @ ApiError::RateLimited { .. }) => e.into_response(),
        Err(e) => {
            // A limiter outage must not lock everyone out.
            tracing::warn!(error = %e, "connection throttle unavailable: letting the handshake in");
            next.run(req).await
        }
    }
}

/// A request that opens a new Engine.IO session.
fn is_handshake(req: &Request) -> bool {
    req.uri().path().starts_with(super::SOCKET_IO_PATH)
        && !form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).any(|(k, _)| k == "sid")
}

fn key_of(st: &AppState, req: &Request) -> String {
    let token = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .or_else(|| {
            req.headers().get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok()).map(str::to_owned)
        });
    if let Some(identity) = token.and_then(|t| st.jwt.verify(&t).ok()) {
        return format!("user:{}", identity.id());
    }
    match client_ip(req.headers(), req.extensions(), &st.config.trusted_proxies) {
        Some(ip) => format!("addr:{}", address_key(ip)),
        None => "addr:unknown".to_owned(),
    }
}
