//! Socket.IO: the engine config (limits), the namespace with its connect middleware and event
//! handlers, over either the local adapter or the Redis adapter.

use std::time::Duration;

use axum::Router;
use socketioxide::{
    SocketIo, SocketIoBuilder,
    adapter::Adapter,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
};

use socketioxide_core::adapter::DefinedAdapter;

use crate::{edge::MAX_PAYLOAD, state::AppState};

pub mod connect;
pub mod events;
pub mod expiry;
pub mod handlers;
pub mod reply;
pub mod throttle;

/// Engine settings shared by both adapters. `max_payload` only covers long-polling; websocket
/// frames are capped separately (exceeding them closes that one connection).
///
/// Binary attachments are refused: the app has no binary event, and socketioxide's defaults
/// (10,000 attachments, 10 MB buffered per packet, 60 s to complete it) would let one socket
/// park 10 MB for a minute. With no attachment allowed, a binary event fails to parse and
/// socketioxide closes that socket (`parse_error`) before buffering anything.
pub fn builder() -> SocketIoBuilder {
    let parser = socketioxide::ParserConfig::common()
        .max_incoming_binaries(0)
        .max_incoming_binary_buf_size(0)
        .packet_completion_timeout(Duration::from_secs(1));
    SocketIo::builder()
        .with_parser(parser)
        .max_payload(MAX_PAYLOAD as u64)
        .ws_max_message_size(MAX_PAYLOAD)
        .ws_max_frame_size(MAX_PAYLOAD)
        // Every websocket keeps this buffer (zero-filled, so resident) for its whole life, idle
        // or not: 4096 → 1024 saved 3 KiB per idle socket. Larger frames still fit
        // (the buffer grows to the frame), they just take more reads; 256 saved only 0.6 KiB more.
        .ws_read_buffer_size(1024)
        .max_buffer_size(1024)
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .ack_timeout(Duration::from_secs(5))
}

/// Registers the `/` namespace; returns the adapter's init result (a future for Redis).
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, state: AppState) -> A::InitRes {
    let middleware = move |s: SocketRef<A>, TryData(auth): TryData<serde_json::Value>| {
        let st = state.clone();
        async move { connect::authenticate(&st, &s, auth.ok()).await }
    };
    // The event handlers are registered by the middleware (see `handlers::register_events`).
    let handler = move |_: SocketRef<A>| {
        handlers::on_connect();
        std::future::ready(())
    };
    io.ns("/", handler.with(middleware))
}

/// Attaches the Socket.IO layer to the router, behind (outermost first) the handshake throttle
/// (its 429s are not Engine.IO errors), the Engine.IO error counter (engineioxide answers
/// handshake/session errors itself, see `telemetry::engineio`) and [`own_head`].
pub fn attach<A: Adapter>(router: Router, layer: socketioxide::layer::SocketIoLayer<A>, state: AppState) -> Router {
    router
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(own_head::<axum::body::Body>))
        .layer(tower::util::MapRequestLayer::new(tag_connection::<axum::body::Body>))
        .layer(axum::middleware::from_fn(crate::telemetry::engineio::count_errors))
        .layer(axum::middleware::from_fn_with_state(state, throttle::throttle_handshakes))
}

/// Where socketioxide serves Socket.IO (its default `req_path`).
pub const SOCKET_IO_PATH: &str = "/socket.io/";

/// Marks the request's connection as carrying Socket.IO (the drain closes those) and tells it
/// which Engine.IO session it carries, so that closing a session's transport (see [`expiry`])
/// finds the connections it moved to after its handshake.
fn tag_connection<B>(req: axum::http::Request<B>) -> axum::http::Request<B> {
    if !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return req;
    }
    let Some(conn) = req.extensions().get::<crate::http::server::ConnHandle>() else { return req };
    conn.mark_realtime();
    if let Some(query) = req.uri().query()
        && let Some((_, sid)) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "sid")
    {
        conn.set_session(&sid);
    }
    req
}

/// Gives a Socket.IO request's URI and header values their own small allocations.
///
/// hyper parses the request head without copying: the URI and every header value are slices
/// of the connection's read buffer (16 KiB allocated), and so is axum's `OriginalUri` extension.
/// engineioxide keeps the request `Parts` for the session's whole life (`SocketRef::req_parts`),
/// so each idle websocket pinned that whole buffer. Copying the few hundred bytes of the head
/// releases it (32.8 → 24.5 KiB RSS per idle websocket at 10,000). Other requests are
/// left alone: they do not outlive their response.
fn own_head<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return req;
    }
    if let Ok(uri) = axum::http::Uri::try_from(req.uri().to_string()) {
        // axum's router stored a clone of the URI (a slice of the same buffer) as `OriginalUri`.
        if let Some(original) = req.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
            original.0 = uri.clone();
        }
        *req.uri_mut() = uri;
    }
    for v in req.headers_mut().values_mut() {
        if let Ok(mut owned) = axum::http::HeaderValue::from_bytes(v.as_bytes()) {
            owned.set_sensitive(v.is_sensitive());
            *v = owned;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use axum::{
        extract::OriginalUri,
        http::{HeaderValue, Request, Uri},
    };

    use super::*;

    /// Whether `b` points into `buf`.
    fn inside(b: &[u8], buf: &[u8]) -> bool {
        buf.as_ptr_range().contains(&b.as_ptr())
    }

    #[test]
    fn socket_io_heads_stop_pointing_into_the_read_buffer() {
        let uri = Uri::from_static("/socket.io/?EIO=4&transport=websocket");
        let mut req = Request::builder().uri(uri.clone()).body(()).unwrap();
        req.headers_mut().insert("authorization", HeaderValue::from_static("Bearer abc"));
        req.extensions_mut().insert(OriginalUri(uri));
        // Clones share their bytes, as hyper's head shares the connection buffer: afterwards the
        // request must point elsewhere.
        let (before_uri, before_auth) = (req.uri().clone(), req.headers()["authorization"].clone());

        let req = own_head(req);
        assert_eq!(req.uri(), &before_uri);
        assert_eq!(req.headers()["authorization"], before_auth);
        assert!(!inside(req.uri().path().as_bytes(), before_uri.path().as_bytes()));
        assert!(!inside(req.headers()["authorization"].as_bytes(), before_auth.as_bytes()));
        let original = &req.extensions().get::<OriginalUri>().unwrap().0;
        assert_eq!(original, &before_uri);
        assert!(!inside(original.path().as_bytes(), before_uri.path().as_bytes()));
    }

    #[test]
    fn other_requests_are_untouched() {
        let req = Request::builder().uri("/api/chat/conversations").header("x", "y").body(()).unwrap();
        let ptr = req.headers()["x"].as_bytes().as_ptr();
        assert_eq!(own_head(req).headers()["x"].as_bytes().as_ptr(), ptr);
    }
}
