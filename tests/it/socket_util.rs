//! Socket.IO contract (docs/events.md) against a real embedded node and real clients.
//!
//! Notes on the client (tf-rust-socketio): every incoming packet is dispatched as its own task,
//! so the order in which events land in `Sock` is not the order the server sent them; and ack
//! ids are random in 0..999, so one client never has two acks outstanding at once here.
//! To prove a socket got NOTHING (or nothing more), `harness::settle` sends a sentinel message
//! through the same fan-out after the event under test and counts only once the sentinel is in.

use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const UNKNOWN_ID: &str = "65a1b2c3d4e5f60718293a4b";

pub(crate) fn mt_token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Waits for the next `name` event that satisfies `pred` (non-matching ones are consumed).
pub(crate) async fn next_where(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = s.next(name).await;
        if pred(&v) {
            return v;
        }
    }
}

/// Consumes `name` events up to and including the first that satisfies `pred`; returns them all.
pub(crate) async fn drain_until(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = s.next(name).await;
        let done = pred(&v);
        out.push(v);
        if done {
            return out;
        }
    }
}

pub(crate) async fn join(s: &Sock, conv: &str) {
    let ack = s.ack("join_conversation", json!({ "conversationId": conv })).await;
    assert_eq!(ok(&ack)["conversationId"], conv);
}

/// Events `name` received and not yet consumed by `next` that satisfy `pred`.
pub(crate) async fn count_where(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> usize {
    s.received().await.iter().filter(|(n, v)| n == name && pred(v)).count()
}

pub(crate) fn assert_validation(ack: &Value, field: &str) {
    err_code(ack, "validation");
    let msg = ack["message"].as_str().unwrap_or_default();
    assert!(msg.contains(field), "validation message should name {field:?}: {ack}");
}

pub(crate) async fn send(s: &Sock, conv: &str, content: &str, cmid: &str) -> Value {
    let ack =
        s.ack("send_message", json!({ "conversationId": conv, "content": content, "clientMessageId": cmid })).await;
    ok(&ack)["message"].clone()
}

pub(crate) async fn history(api: &Api, conv: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/chat/conversations/{conv}/messages")).await;
    assert_eq!(r.status, 200, "history: {}", r.body);
    r.body["data"]["messages"].as_array().expect("messages").clone()
}

pub(crate) async fn unread_total(api: &Api) -> i64 {
    let r = api.get("/api/chat/unread").await;
    assert_eq!(r.status, 200, "unread: {}", r.body);
    r.body["data"]["total"].as_i64().expect("total")
}
