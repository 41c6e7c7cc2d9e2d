//! Socket.IO calls over `tf-rust-socketio` (async), the real client tests and benches drive nodes
//! with: the payload of an event, emits with and without an ack.
//!
//! The client draws ack ids at random in 0..999, so two outstanding acks on one client can
//! collide: a caller that needs many acks in flight spreads them over clients.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use serde_json::Value;
use tf_rust_socketio::{Payload, asynchronous::Client};
use tokio::sync::oneshot;

/// The first argument of an event (`Null` for none, or for binary).
pub fn first_value(p: &Payload) -> Value {
    match p {
        Payload::Text(v, _) => v.first().cloned().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(s, _) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Payload::Binary(_, _) => Value::Null,
    }
}

/// A oneshot sender a client callback (`Fn`, maybe called again) fires at most once.
pub type Once<T> = Arc<Mutex<Option<oneshot::Sender<T>>>>;

pub fn once<T>() -> (Once<T>, oneshot::Receiver<T>) {
    let (tx, rx) = oneshot::channel();
    (Arc::new(Mutex::new(Some(tx))), rx)
}

/// Sends `v` through `slot` unless something already did.
pub fn fire<T>(slot: &Once<T>, v: T) {
    if let Some(tx) = slot.lock().ok().and_then(|mut t| t.take()) {
        let _ = tx.send(v);
    }
}

/// Emits `event` with an ack and returns the ack's payload, waiting at most `within`.
pub async fn emit_ack(client: &Client, event: &str, payload: Value, within: Duration) -> Result<Value, String> {
    let (slot, rx) = once::<Value>();
    client
        .emit_with_ack(event, Payload::Text(vec![payload], None), within, move |p: Payload, _c: Client| {
            // Ack args arrive as one array: `[data]`.
            let v = match first_value(&p) {
                Value::Array(mut a) if a.len() == 1 => a.remove(0),
                v => v,
            };
            fire(&slot, v);
            async {}.boxed()
        })
        .await
        .map_err(|e| format!("emit {event}: {e}"))?;
    match tokio::time::timeout(within, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(format!("the ack for {event} was dropped")),
        Err(_) => Err(format!("no ack for {event}")),
    }
}

/// Emits `event` without an ack.
pub async fn emit(client: &Client, event: &str, payload: Value) -> Result<(), String> {
    client.emit(event, Payload::Text(vec![payload], None)).await.map_err(|e| format!("emit {event}: {e}"))
}
