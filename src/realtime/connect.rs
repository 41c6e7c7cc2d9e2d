//! Connect middleware: everything that can refuse a connection happens here, before the socket
//! joins the namespace, so a refused client gets `connect_error` and never becomes connected.
//!
//! Only the client's own faults refuse here (socket.io clients treat `connect_error` as final):
//! a bad token, or one socket too many for that user. Load is throttled earlier, at the
//! Engine.IO handshake (see [`super::throttle`]), where an HTTP 429 makes clients retry.

use socketioxide::{adapter::Adapter, extract::SocketRef};

use crate::{
    auth::Identity, coord::fanout::socketio::user_room, limits::MAX_SOCKETS_PER_USER, state::AppState,
    telemetry::metrics as m,
};

/// A connect slower than this is logged: it is a fifth of socketioxide's connect timeout.
const SLOW_CONNECT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unauthorized")]
    Unauthorized,
    /// The user already has [`MAX_SOCKETS_PER_USER`] sockets on this node.
    #[error("too_many_sockets")]
    TooManySockets,
}

impl ConnectError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::TooManySockets => "too_many_sockets",
        }
    }
}

/// The token from `auth: {token}`, an `Authorization` header, or a `token` query parameter.
fn find_token<A: Adapter>(s: &SocketRef<A>, auth: Option<&serde_json::Value>) -> Option<String> {
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return Some(t.to_owned());
    }
    let parts = s.req_parts();
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok()) {
        return Some(h.to_owned());
    }
    let query = parts.uri.query()?;
    url_token(query)
}

fn url_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

pub async fn authenticate<A: Adapter>(
    state: &AppState,
    s: &SocketRef<A>,
    auth: Option<serde_json::Value>,
) -> Result<(), ConnectError> {
    let res = check(state, s, auth.as_ref()).await;
    if let Err(e) = &res {
        metrics::counter!(m::CONNECTION_ERRORS_TOTAL, "reason" => e.reason()).increment(1);
    }
    res
}

async fn check<A: Adapter>(
    state: &AppState,
    s: &SocketRef<A>,
    auth: Option<&serde_json::Value>,
) -> Result<(), ConnectError> {
    // Never refuse for a reason of ours (draining, a Redis outage, load): socket.io clients
    // treat a `connect_error` as final and stop reconnecting. A draining node accepts, and
    // closes the transport at the end of its drain so the client reconnects elsewhere.
    let token = find_token(s, auth).ok_or(ConnectError::Unauthorized)?;
    let identity: Identity = state.jwt.verify(&token).map_err(|e| {
        tracing::debug!(error = %e, "socket auth refused");
        ConnectError::Unauthorized
    })?;
    // Registered and counted before the client is told it is connected: a second device is
    // online everywhere by the time it can act, and a first message can name its sender.
    let started = std::time::Instant::now();
    tracing::debug!(sid = %s.id, user = identity.id(), "connect: verified");
    if state.chat.presence().local_sockets(identity.id()).await >= MAX_SOCKETS_PER_USER {
        metrics::counter!(m::RATE_LIMITED_TOTAL, "kind" => "sockets_per_user").increment(1);
        return Err(ConnectError::TooManySockets);
    }
    tracing::debug!(sid = %s.id, "connect: counted");
    if let Err(e) = state.chat.register_user(&identity).await {
        tracing::warn!(error = %e, "user registration failed");
    }
    tracing::debug!(sid = %s.id, "connect: registered");
    // Subscribed to the user's events (awaited inside), then in the user's room, and only then
    // is the client told it is connected (socketioxide sends `connect` after this middleware):
    // nothing published after the client sees `connect` can miss this socket.
    state.chat.socket_connected(identity.id(), &s.id.to_string()).await;
    let took = started.elapsed();
    tracing::debug!(sid = %s.id, ?took, "connect: attached");
    if took > SLOW_CONNECT {
        // socketioxide closes a session whose connect takes longer than its connect timeout.
        tracing::warn!(sid = %s.id, ?took, "slow connect middleware (registration, presence, subscription)");
    }
    s.join(user_room(identity.id()));
    s.extensions.insert(identity);
    super::handlers::register_events(s, state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_decoded() {
        assert_eq!(url_token("EIO=4&transport=websocket&token=a%2Eb.c").as_deref(), Some("a.b.c"));
        assert_eq!(url_token("EIO=4"), None);
    }
}
