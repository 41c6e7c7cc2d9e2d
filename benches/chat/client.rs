//! The load generator's Socket.IO client: `tf-rust-socketio` (async), websocket transport, no
//! built-in reconnection (the storm scenario reconnects by hand to a surviving node).
//!
//! tf-rust-socketio draws ack ids at random in 0..999, so two outstanding acks on one client can
//! collide: every client here has at most one outstanding ack; paced (open-loop) senders emit
//! without acks and take `message_delivered` as the server's confirmation.

use std::{sync::Arc, time::Duration};

use crate::{
    infra::Res,
    kit::{
        auth::token,
        sio::{self, fire, first_value, once},
    },
};
use futures::FutureExt;
use serde_json::Value;
use tf_rust_socketio::{
    Event, Payload, TransportType,
    asynchronous::{Client, ClientBuilder},
};

pub type OnEvent = Arc<dyn Fn(Value) + Send + Sync>;
pub type OnClose = Arc<dyn Fn() + Send + Sync>;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default, Clone)]
pub struct Handlers {
    pub new_message: Option<OnEvent>,
    pub message_delivered: Option<OnEvent>,
    /// Called once when the established connection closes (not for a refused connect).
    pub close: Option<OnClose>,
}

/// Connects `user` to `base` over websocket and waits until the namespace connect succeeded.
pub async fn connect(base: &str, user: &str, h: Handlers) -> Res<Client> {
    let (slot, rx) = once::<Result<(), String>>();
    let (s1, s2) = (slot.clone(), slot.clone());
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c1 = connected.clone();
    let mut b = ClientBuilder::new(base.to_owned())
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .auth(serde_json::json!({ "token": token(user) }))
        .on(Event::Connect, move |_p: Payload, _c: Client| {
            c1.store(true, std::sync::atomic::Ordering::SeqCst);
            fire(&s1, Ok(()));
            async {}.boxed()
        })
        .on(Event::Error, move |p: Payload, _c: Client| {
            fire(&s2, Err(first_value(&p).to_string()));
            async {}.boxed()
        });
    if let Some(cb) = h.close.clone() {
        let (connected, closed_once) = (connected.clone(), closed_once.clone());
        b = b.on(Event::Close, move |_p: Payload, _c: Client| {
            if connected.load(std::sync::atomic::Ordering::SeqCst)
                && !closed_once.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                cb();
            }
            async {}.boxed()
        });
    }
    if let Some(cb) = h.new_message.clone() {
        b = b.on("new_message", move |p: Payload, _c: Client| {
            cb(first_value(&p));
            async {}.boxed()
        });
    }
    if let Some(cb) = h.message_delivered.clone() {
        b = b.on("message_delivered", move |p: Payload, _c: Client| {
            cb(first_value(&p));
            async {}.boxed()
        });
    }
    let client = tokio::time::timeout(CONNECT_TIMEOUT, b.connect())
        .await
        .map_err(|_| format!("connect {user} to {base}: transport timeout"))?
        .map_err(|e| format!("connect {user} to {base}: {e}"))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(client),
        Ok(Ok(Err(e))) => {
            let _ = client.disconnect().await;
            Err(format!("connect {user} to {base}: refused: {e}").into())
        }
        _ => {
            let _ = client.disconnect().await;
            Err(format!("connect {user} to {base}: no connect event").into())
        }
    }
}

/// Emits with an ack and waits for it (one outstanding ack per client, see the module doc).
pub async fn emit_ack(client: &Client, event: &str, payload: Value) -> Res<Value> {
    Ok(sio::emit_ack(client, event, payload, ACK_TIMEOUT).await?)
}

/// Emits without an ack.
pub async fn emit(client: &Client, event: &str, payload: Value) -> Res<()> {
    Ok(sio::emit(client, event, payload).await?)
}
