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

use crate::app::AppState;

pub mod connect;
pub mod events;
pub mod fanout;
pub mod handlers;
pub mod reply;

/// Socket.IO max payload and the websocket message/frame caps (DESIGN §7).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Engine settings shared by both adapters. `max_payload` only covers long-polling; websocket
/// frames are capped separately (exceeding them closes that one connection).
pub fn builder() -> SocketIoBuilder {
    SocketIo::builder()
        .max_payload(MAX_PAYLOAD as u64)
        .ws_max_message_size(MAX_PAYLOAD)
        .ws_max_frame_size(MAX_PAYLOAD)
        .ws_read_buffer_size(4096)
        .max_buffer_size(1024)
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .ack_timeout(Duration::from_secs(5))
}

/// Registers the `/` namespace; returns the adapter's init result (a future for Redis).
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, state: AppState) -> A::InitRes {
    let st = state.clone();
    let middleware = move |s: SocketRef<A>, TryData(auth): TryData<serde_json::Value>| {
        let st = st.clone();
        async move { connect::authenticate(&st, &s, auth.ok()).await }
    };
    // Not an async block: the registration must happen inside the call, before socketioxide
    // reads the socket's next packet (it spawns the returned future).
    let handler = move |s: SocketRef<A>| {
        handlers::on_connect(&state, &s);
        std::future::ready(())
    };
    io.ns("/", handler.with(middleware))
}

/// Attaches the Socket.IO layer to the router.
pub fn attach<A: Adapter>(router: Router, layer: socketioxide::layer::SocketIoLayer<A>) -> Router {
    router.layer(layer)
}
