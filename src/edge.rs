//! What both transports (REST and Socket.IO) share at the network edge: the payload cap and the
//! client's address.

use std::net::SocketAddr;

use axum::{
    extract::ConnectInfo,
    http::{Extensions, HeaderMap},
};

/// Socket.IO max payload, the websocket message/frame caps and the HTTP body limit.
pub const MAX_PAYLOAD: usize = 64 * 1024;

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
