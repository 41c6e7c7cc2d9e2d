//! The load generator's Socket.IO client: `tf-rust-socketio` (async), websocket transport, no
//! built-in reconnection (the storm scenario reconnects by hand to a surviving node).
//!
//! tf-rust-socketio draws ack ids at random in 0..999, so two outstanding acks on one client can
//! collide: every client here has at most one outstanding ack; paced (open-loop) senders emit
//! without acks and take `message_delivered` as the server's confirmation.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use serde_json::Value;
use tf_rust_socketio::{
    Event, Payload, TransportType,
    asynchronous::{Client, ClientBuilder},
};
use tokio::sync::oneshot;

use crate::infra::{Res, token};

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

fn first_value(p: &Payload) -> Value {
    match p {
        Payload::Text(v, _) => v.first().cloned().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(s, _) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Payload::Binary(_, _) => Value::Null,
    }
}

type Once<T> = Arc<Mutex<Option<oneshot::Sender<T>>>>;

fn fire<T>(slot: &Once<T>, v: T) {
    if let Some(tx) = slot.lock().ok().and_then(|mut t| t.take()) {
        let _ = tx.send(v);
    }
}

/// Connects `user` to `base` over websocket and waits until the namespace connect succeeded.
pub async fn connect(base: &str, user: &str, h: Handlers) -> Res<Client> {
    let (tx, rx) = oneshot::channel::<Result<(), String>>();
    let slot: Once<Result<(), String>> = Arc::new(Mutex::new(Some(tx)));
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
    let (tx, rx) = oneshot::channel::<Value>();
    let slot: Once<Value> = Arc::new(Mutex::new(Some(tx)));
    client
        .emit_with_ack(event, Payload::Text(vec![payload], None), ACK_TIMEOUT, move |p: Payload, _c: Client| {
            let v = match first_value(&p) {
                Value::Array(mut a) if a.len() == 1 => a.remove(0),
                v => v,
            };
            fire(&slot, v);
            async {}.boxed()
        })
        .await?;
    Ok(tokio::time::timeout(ACK_TIMEOUT, rx).await.map_err(|_| format!("no ack for {event}"))??)
}

/// Emits without an ack.
pub async fn emit(client: &Client, event: &str, payload: Value) -> Res<()> {
    Ok(client.emit(event, Payload::Text(vec![payload], None)).await?)
}
