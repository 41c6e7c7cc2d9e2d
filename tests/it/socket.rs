//! Socket.IO contract (docs/events.md) against a real embedded node and real clients.
//!
//! Notes on the client (tf-rust-socketio): every incoming packet is dispatched as its own task,
//! so the order in which events land in `Sock` is not the order the server sent them; and ack
//! ids are random in 0..999, so one client never has two acks outstanding at once here.
//! To prove a socket got NOTHING (or nothing more), `harness::settle` sends a sentinel message
//! through the same fan-out after the event under test and counts only once the sentinel is in.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use serde_json::{Value, json};
use tf_rust_socketio::{Event, Payload, TransportType, asynchronous::ClientBuilder};

use crate::harness::*;

const UNKNOWN_ID: &str = "65a1b2c3d4e5f60718293a4b";

fn mt_token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Waits for the next `name` event that satisfies `pred` (non-matching ones are consumed).
async fn next_where(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = s.next(name).await;
        if pred(&v) {
            return v;
        }
    }
}

/// Consumes `name` events up to and including the first that satisfies `pred`; returns them all.
async fn drain_until(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
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

async fn join(s: &Sock, conv: &str) {
    let ack = s.ack("join_conversation", json!({ "conversationId": conv })).await;
    assert_eq!(ok(&ack)["conversationId"], conv);
}

/// Events `name` received and not yet consumed by `next` that satisfy `pred`.
async fn count_where(s: &Sock, name: &str, pred: impl Fn(&Value) -> bool) -> usize {
    s.received().await.iter().filter(|(n, v)| n == name && pred(v)).count()
}

fn assert_validation(ack: &Value, field: &str) {
    err_code(ack, "validation");
    let msg = ack["message"].as_str().unwrap_or_default();
    assert!(msg.contains(field), "validation message should name {field:?}: {ack}");
}

async fn send(s: &Sock, conv: &str, content: &str, cmid: &str) -> Value {
    let ack =
        s.ack("send_message", json!({ "conversationId": conv, "content": content, "clientMessageId": cmid })).await;
    ok(&ack)["message"].clone()
}

async fn history(api: &Api, conv: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/chat/conversations/{conv}/messages")).await;
    assert_eq!(r.status, 200, "history: {}", r.body);
    r.body["data"]["messages"].as_array().expect("messages").clone()
}

async fn unread_total(api: &Api) -> i64 {
    let r = api.get("/api/chat/unread").await;
    assert_eq!(r.status, 200, "unread: {}", r.body);
    r.body["data"]["total"].as_i64().expect("total")
}

// ---------------------------------------------------------------- auth (§3)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_bad_tokens_with_unauthorized() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let now = now_secs();
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("missing token", None),
        ("empty auth object", Some(json!({}))),
        ("garbage", Some(json!({ "token": "not-a-jwt" }))),
        ("expired", Some(json!({ "token": mt_token(json!({ "userId": "alice", "exp": now - 3600 }), SECRET) }))),
        (
            "wrong secret",
            Some(
                json!({ "token": mt_token(json!({ "userId": "alice", "exp": now + 3600 }), "some-other-secret-0123456789abcdef") }),
            ),
        ),
        ("no exp claim", Some(json!({ "token": mt_token(json!({ "userId": "alice" }), SECRET) }))),
        ("no user claim", Some(json!({ "token": mt_token(json!({ "exp": now + 3600 }), SECRET) }))),
    ];
    for (what, auth) in cases {
        let res = Sock::try_connect(&node.base, SockOpts { auth, ..Default::default() }).await;
        match res {
            Ok(_) => panic!("{what}: connection was accepted"),
            Err(e) => assert!(e.contains("unauthorized"), "{what}: connect_error should say unauthorized: {e}"),
        }
    }
    // Garbage in the query parameter is refused too.
    let res =
        Sock::try_connect(&node.base, SockOpts { query_token: Some("garbage".into()), ..Default::default() }).await;
    assert!(res.as_ref().err().is_some_and(|e| e.contains("unauthorized")), "query garbage: {:?}", res.err());

    // A token we minted ourselves with the right secret and `sub` works.
    let sub = mt_token(json!({ "sub": "alice", "exp": now + 3600, "role": "contractor" }), SECRET);
    let s = Sock::try_connect(&node.base, SockOpts { auth: Some(json!({ "token": sub })), ..Default::default() })
        .await
        .expect("sub token accepted");
    ok(&s.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    // The refused attempts did not break the node.
    assert_eq!(Api::with_token(&node.base, None).get("/healthz").await.status, 200);
    s.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_token_in_query_auth_payload_and_header() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;

    let via_query = Sock::try_connect(&node.base, SockOpts { query_token: Some(token("alice")), ..Default::default() })
        .await
        .expect("query token accepted");
    let via_auth =
        Sock::try_connect(&node.base, SockOpts { auth: Some(json!({ "token": token("bob") })), ..Default::default() })
            .await
            .expect("auth payload accepted");
    // The identity comes from the token: alice (query) can send into her conversation and bob
    // (auth payload) receives it as the receiver.
    let msg = send(&via_query, &conv, "hello via query token", "q1").await;
    assert_eq!(msg["senderId"], "alice");
    assert_eq!(msg["receiverId"], "bob");
    assert_eq!(via_auth.next("new_message").await["message"]["_id"], msg["_id"]);

    // `Authorization: Bearer` header on the handshake.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let (tx1, tx2) = (tx.clone(), tx);
    let client = ClientBuilder::new(node.base.clone())
        .reconnect(false)
        .transport_type(TransportType::Websocket)
        .opening_header("Authorization", format!("Bearer {}", token("bob")))
        .on(Event::Connect, move |_p: Payload, _c| {
            let _ = tx1.send("connect");
            async {}.boxed()
        })
        .on(Event::Error, move |_p: Payload, _c| {
            let _ = tx2.send("error");
            async {}.boxed()
        })
        .connect()
        .await
        .expect("transport");
    let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("connect or error").expect("channel");
    assert_eq!(first, "connect", "Authorization header should be accepted");
    let _ = client.disconnect().await;
    via_query.disconnect().await;
    via_auth.disconnect().await;
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- send_message fan-out

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_acks_delivers_and_fans_out_exactly_once() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a1 = Sock::connect(&node.base, "alice").await;
    let a2 = Sock::connect(&node.base, "alice").await;
    let b1 = Sock::connect(&node.base, "bob").await;
    let b2 = Sock::connect(&node.base, "bob").await;
    let carol = Sock::connect(&node.base, "carol").await;

    let ack = a1
        .ack("send_message", json!({ "conversationId": conv, "content": "hello bob", "clientMessageId": "c-1" }))
        .await;
    assert_eq!(ack["status"], "success", "{ack}");
    let msg = ok(&ack)["message"].clone();
    assert_eq!(msg["seq"], 1);
    assert_eq!(msg["senderId"], "alice");
    assert_eq!(msg["receiverId"], "bob");
    assert_eq!(msg["conversationId"], conv.as_str());
    assert_eq!(msg["content"], "hello bob");
    assert_eq!(msg["messageType"], "text");
    assert_eq!(msg["status"], "sent");
    assert_eq!(msg["clientMessageId"], "c-1");
    assert!(msg["_id"].as_str().is_some_and(|s| s.len() == 24), "{msg}");
    assert_eq!(msg["timestamp"], msg["createdAt"]);

    let delivered = a1.next("message_delivered").await;
    assert_eq!(delivered["clientMessageId"], "c-1");
    assert_eq!(delivered["message"], msg);

    for s in [&a1, &a2, &b1, &b2] {
        let nm = s.next("new_message").await;
        assert_eq!(nm["message"], msg, "new_message carries the stored message");
    }
    settle(&node.base, &[(&a1, "alice"), (&a2, "alice"), (&b1, "bob"), (&b2, "bob"), (&carol, "carol")]).await;
    // (`next` consumed the expected event: anything left is a duplicate)
    for (name, s) in [("a1", &a1), ("a2", &a2), ("b1", &b1), ("b2", &b2)] {
        assert_eq!(s.count("new_message").await, 0, "{name}: exactly one new_message");
    }
    assert_eq!(a1.count("message_delivered").await, 0, "sender socket: exactly one message_delivered");
    for (name, s) in [("a2", &a2), ("b1", &b1), ("b2", &b2), ("carol", &carol)] {
        assert_eq!(s.count("message_delivered").await, 0, "{name}: message_delivered is for the sending socket only");
    }
    assert_eq!(carol.count("new_message").await, 0, "a third user must not receive the message");

    // The receiver's reply reaches alice's both sockets too.
    let reply = send(&b2, &conv, "hi alice", "r-1").await;
    assert_eq!(reply["seq"], 2);
    for s in [&a1, &a2, &b1] {
        next_where(s, "new_message", |v| v["message"]["_id"] == reply["_id"]).await;
    }
    settle(&node.base, &[(&carol, "carol")]).await;
    assert_eq!(carol.count("new_message").await, 0);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_get_gapless_unique_seqs() {
    const N: usize = 50;
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Arc::new(Sock::connect(&node.base, "alice").await);
    let b = Arc::new(Sock::connect(&node.base, "bob").await);

    let spawn_sender = |s: Arc<Sock>, who: &'static str, conv: String| {
        tokio::spawn(async move {
            let sends = (0..N).map(|i| {
                let (s, conv) = (s.clone(), conv.clone());
                async move {
                    s.emit(
                        "send_message",
                        json!({ "conversationId": conv, "content": format!("{who} {i}"), "clientMessageId": format!("{who}-{i}") }),
                    )
                    .await;
                }
            });
            futures::future::join_all(sends).await;
        })
    };
    let ta = spawn_sender(a.clone(), "alice", conv.clone());
    let tb = spawn_sender(b.clone(), "bob", conv.clone());
    ta.await.unwrap();
    tb.await.unwrap();

    let mut seqs = Vec::new();
    let mut ids = HashSet::new();
    for (who, s) in [("alice", &a), ("bob", &b)] {
        let mut cmids = BTreeSet::new();
        for _ in 0..N {
            let d = s.next("message_delivered").await;
            let cmid = d["clientMessageId"].as_str().expect("clientMessageId").to_owned();
            assert!(cmid.starts_with(who), "{who} got someone else's message_delivered: {d}");
            assert_eq!(d["message"]["clientMessageId"], cmid.as_str());
            assert_eq!(d["message"]["senderId"], who);
            assert!(cmids.insert(cmid), "duplicate message_delivered: {d}");
            seqs.push(d["message"]["seq"].as_i64().expect("seq"));
            ids.insert(d["message"]["_id"].as_str().expect("id").to_owned());
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=(2 * N) as i64).collect::<Vec<_>>(), "seqs must be exactly 1..=100");
    assert_eq!(ids.len(), 2 * N);

    for (who, s) in [("alice", &a), ("bob", &b)] {
        let mut got = HashSet::new();
        for _ in 0..2 * N {
            let nm = s.next("new_message").await;
            assert!(got.insert(nm["message"]["_id"].as_str().expect("id").to_owned()), "{who}: duplicate {nm}");
        }
        assert_eq!(got, ids, "{who}: new_message for every message");
        settle(&node.base, &[(s, who)]).await;
        assert_eq!(s.count("new_message").await, 0, "{who}: each exactly once");
        assert_eq!(s.count("message_delivered").await, 0, "{who}: one message_delivered per send");
        assert_eq!(s.count("error").await, 0, "{who}: no error events");
    }
    // The stored history agrees.
    let r = Api::new(&node.base, "bob").get(&format!("/api/chat/conversations/{conv}/messages?limit=100")).await;
    let stored: Vec<i64> =
        r.body["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(stored, (1..=(2 * N) as i64).collect::<Vec<_>>(), "history oldest first, no gaps");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_client_message_id_is_deduplicated() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Sock::connect(&node.base, "alice").await;
    let b = Sock::connect(&node.base, "bob").await;

    let first = send(&a, &conv, "only once", "dup-1").await;
    b.next("new_message").await;
    let second = send(&a, &conv, "only once", "dup-1").await;
    assert_eq!(second["_id"], first["_id"], "retry returns the original message");
    assert_eq!(second["seq"], first["seq"]);
    // The same clientMessageId from ANOTHER sender is a different message.
    let bobs = send(&b, &conv, "bob's own", "dup-1").await;
    assert_ne!(bobs["_id"], first["_id"]);
    assert_eq!(bobs["seq"], 2, "the retry consumed no seq");
    let is_bobs = |v: &Value| v["message"]["_id"] == bobs["_id"];
    let of_first = |v: &Value| v["message"]["_id"] == first["_id"];
    let mut on_b = drain_until(&b, "new_message", is_bobs).await;
    let mut on_a = drain_until(&a, "new_message", is_bobs).await;
    // The retry's own delivery is published after its ack, so it may come after bob's message:
    // wait for the ones expected, then the sentinel, then count what else arrived.
    while on_b.iter().filter(|v| of_first(v)).count() < 1 {
        on_b.push(b.next_match("new_message", of_first).await);
    }
    while on_a.iter().filter(|v| of_first(v)).count() < 2 {
        on_a.push(a.next_match("new_message", of_first).await);
    }
    settle(&node.base, &[(&b, "bob"), (&a, "alice")]).await;
    let late = |got: Vec<Value>| got.iter().filter(|v| of_first(v)).count();
    let on_b = on_b.iter().filter(|v| of_first(v)).count() + late(b.take("new_message").await);
    let on_a = on_a.iter().filter(|v| of_first(v)).count() + late(a.take("new_message").await);
    // A retry is delivered again (in case its first attempt failed after the commit); clients
    // dedupe by _id.
    assert_eq!(on_b, 1, "receiver got the message once per attempt (the first consumed above)");
    assert_eq!(on_a, 2, "sender's socket got the message once per attempt");
    assert_eq!(history(&Api::new(&node.base, "bob"), &conv).await.len(), 2);

    // The same clientMessageId sent at once from two devices (no acks): one message.
    let a2 = Sock::connect(&node.base, "alice").await;
    let race = json!({ "conversationId": conv, "content": "raced", "clientMessageId": "race-1" });
    let emits = [&a, &a2, &a, &a2, &a, &a2].map(|s| s.emit("send_message", race.clone()));
    futures::future::join_all(emits).await;
    let mut ids = HashSet::new();
    for s in [&a, &a2] {
        for _ in 0..3 {
            let d = next_where(s, "message_delivered", |v| v["clientMessageId"] == "race-1").await;
            ids.insert(d["message"]["_id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(ids.len(), 1, "concurrent retries map to one message: {ids:?}");
    let id = ids.into_iter().next().unwrap_or_default();
    let got = b.next("new_message").await;
    assert_eq!(got["message"]["_id"], id.as_str());
    assert_eq!(got["message"]["seq"], 3);
    settle(&node.base, &[(&b, "bob")]).await;
    let rest: Vec<Value> = b.received().await.into_iter().filter(|(n, _)| n == "new_message").map(|(_, v)| v).collect();
    assert_eq!(rest.len(), 5, "the raced message reached the receiver once per attempt: {rest:?}");
    assert!(rest.iter().all(|v| v["message"]["_id"] == id.as_str()), "as one message: {rest:?}");
    assert_eq!(history(&Api::new(&node.base, "bob"), &conv).await.len(), 3);
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- authorization

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_participants_unknown_and_invalid_conversations_are_refused() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let carol = Sock::connect(&node.base, "carol").await;
    let b = Sock::connect(&node.base, "bob").await;

    let payload = |event: &str, id: &str| -> Value {
        match event {
            "send_message" => json!({ "conversationId": id, "content": "let me in" }),
            "mark_as_delivered" => json!({ "conversationId": id, "upToSeq": 1 }),
            "sync" => json!({ "conversations": [{ "conversationId": id, "afterSeq": 0 }] }),
            _ => json!({ "conversationId": id }),
        }
    };
    let events = [
        "send_message",
        "join_conversation",
        "typing_start",
        "typing_stop",
        "mark_as_read",
        "mark_as_delivered",
        "sync",
    ];
    for event in events {
        let ack = carol.ack(event, payload(event, &conv)).await;
        err_code(&ack, "forbidden");
        let ack = carol.ack(event, payload(event, UNKNOWN_ID)).await;
        err_code(&ack, "not_found");
        let ack = carol.ack(event, payload(event, "not-an-id")).await;
        assert_validation(&ack, "conversationId");
        let ack = carol.ack(event, payload(event, "{\"$gt\":\"\"}")).await;
        err_code(&ack, "validation");
    }
    // Nothing leaked to bob and nothing was stored.
    settle(&node.base, &[(&b, "bob")]).await;
    assert_eq!(b.count("new_message").await, 0);
    assert_eq!(b.count("messages_read").await, 0);
    assert!(history(&Api::new(&node.base, "bob"), &conv).await.is_empty());
    // REST agrees for carol.
    let r = Api::new(&node.base, "carol").get(&format!("/api/chat/conversations/{conv}/messages")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- typing

/// The typing expiry the typing tests inject (the default is 5 s).
const TYPING_EXPIRY: Duration = Duration::from_millis(2000);
/// How late an expiry may arrive and still count: scheduling and delivery on a loaded machine.
/// Below the 5 s default, so a node that ignored the injected expiry fails.
const TYPING_SLACK: Duration = Duration::from_millis(2500);

async fn typing_node(env: &Env) -> Node {
    env.node_with("n1", &["--typing-expiry-ms", &TYPING_EXPIRY.as_millis().to_string()]).await
}

/// `typing_start` sent at `sent` (before the emit, so the server's timer started later) ended
/// by itself now: not before the expiry, and not long after it.
fn assert_expired_in_time(sent: Instant, what: &str) {
    let after = sent.elapsed();
    assert!(after >= TYPING_EXPIRY, "{what}: expired after {after:?}, before the {TYPING_EXPIRY:?} expiry");
    assert!(after <= TYPING_EXPIRY + TYPING_SLACK, "{what}: expired only after {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_only_the_other_sides_joined_sockets_and_expires() {
    let env = Env::embedded();
    let node = typing_node(&env).await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a1 = Sock::connect(&node.base, "alice").await;
    let a2 = Sock::connect(&node.base, "alice").await;
    let b1 = Sock::connect(&node.base, "bob").await;
    let b2 = Sock::connect(&node.base, "bob").await;
    join(&a1, &conv).await;
    join(&b1, &conv).await;

    // start
    ok(&a1.ack("typing_start", json!({ "conversationId": conv })).await);
    let t = b1.next("user_typing").await;
    assert_eq!(t, json!({ "conversationId": conv, "userId": "alice", "isTyping": true }));
    settle(&node.base, &[(&b2, "bob"), (&a1, "alice"), (&a2, "alice"), (&b1, "bob")]).await;
    for (name, s) in [("b2 (not joined)", &b2), ("a1 (own, joined)", &a1), ("a2 (own)", &a2)] {
        assert_eq!(s.count("user_typing").await, 0, "{name} must not get user_typing");
    }
    assert_eq!(b1.count("user_typing").await, 0, "exactly one user_typing per start");

    // stop
    ok(&a1.ack("typing_stop", json!({ "conversationId": conv })).await);
    let t = b1.next("user_typing").await;
    assert_eq!(t, json!({ "conversationId": conv, "userId": "alice", "isTyping": false }));

    // expiry: start and never stop
    let started = Instant::now();
    ok(&a2.ack("typing_start", json!({ "conversationId": conv })).await);
    assert_eq!(b1.next("user_typing").await["isTyping"], true);
    let t = b1.next("user_typing").await;
    assert_eq!(t, json!({ "conversationId": conv, "userId": "alice", "isTyping": false }), "typing expires by itself");
    assert_expired_in_time(started, "a start never stopped");
    settle(&node.base, &[(&b2, "bob")]).await;
    assert_eq!(b2.count("user_typing").await, 0);

    // leave: no more typing events for b1
    ok(&b1.ack("leave_conversation", json!({ "conversationId": conv })).await);
    settle(&node.base, &[(&b1, "bob")]).await;
    let before = b1.count("user_typing").await;
    ok(&a1.ack("typing_start", json!({ "conversationId": conv })).await);
    ok(&a1.ack("typing_stop", json!({ "conversationId": conv })).await);
    settle(&node.base, &[(&b1, "bob")]).await;
    assert_eq!(b1.count("user_typing").await, before, "a socket that left gets no typing events");
    // b2 joins now and gets them.
    join(&b2, &conv).await;
    ok(&a1.ack("typing_start", json!({ "conversationId": conv })).await);
    assert_eq!(b2.next("user_typing").await["isTyping"], true);
    node.stop().await.unwrap();
}

/// start → stop → (user pauses) → start: the indicator lasts the expiry after the LATEST start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_expiry_counts_from_the_latest_start() {
    let env = Env::embedded();
    let node = typing_node(&env).await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Sock::connect(&node.base, "alice").await;
    let b = Sock::connect(&node.base, "bob").await;
    ok(&b.ack("join_conversation", json!({ "conversationId": conv })).await);

    ok(&a.ack("typing_start", json!({ "conversationId": conv })).await);
    ok(&a.ack("typing_stop", json!({ "conversationId": conv })).await);
    // The test client may hand these two over in either order.
    let mut got = [b.next("user_typing").await["isTyping"].clone(), b.next("user_typing").await["isTyping"].clone()];
    got.sort_by_key(|v| v == &json!(true));
    assert_eq!(got, [json!(false), json!(true)]);
    // Not synchronisation: the scenario needs the user to pause (most of an expiry) before
    // typing again, so that an expiry counted from the first start would show.
    tokio::time::sleep(TYPING_EXPIRY * 6 / 10).await;
    let restarted = Instant::now();
    ok(&a.ack("typing_start", json!({ "conversationId": conv })).await);
    assert_eq!(b.next("user_typing").await["isTyping"], true);
    assert_eq!(b.next("user_typing").await["isTyping"], false);
    assert_expired_in_time(restarted, "typing from the second start");
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- read / delivered receipts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_as_read_partial_then_all() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice_api = Api::new(&node.base, "alice");
    let bob_api = Api::new(&node.base, "bob");
    let conv = alice_api.conversation_with("bob").await;
    let a1 = Sock::connect(&node.base, "alice").await;
    let a2 = Sock::connect(&node.base, "alice").await;
    let b1 = Sock::connect(&node.base, "bob").await;
    let b2 = Sock::connect(&node.base, "bob").await;
    for i in 1..=3 {
        send(&a1, &conv, &format!("m{i}"), &format!("r-{i}")).await;
    }
    assert_eq!(unread_total(&bob_api).await, 3, "sends raise the receiver's unread count");
    assert_eq!(unread_total(&alice_api).await, 0, "but not the sender's");

    // partial
    let ack = b1.ack("mark_as_read", json!({ "conversationId": conv, "upToSeq": 2 })).await;
    let d = ok(&ack);
    assert_eq!(d["upToSeq"], 2);
    assert_eq!(d["unreadCount"], 1);
    for s in [&a1, &a2, &b1, &b2] {
        let ev = s.next("messages_read").await;
        assert_eq!(ev["conversationId"], conv.as_str());
        assert_eq!(ev["readerId"], "bob");
        assert_eq!(ev["upToSeq"], 2);
        assert_eq!(ev["readAt"], d["readAt"]);
    }
    assert_eq!(unread_total(&bob_api).await, 1);
    let statuses: Vec<Value> = history(&bob_api, &conv).await.iter().map(|m| m["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("read"), json!("read"), json!("sent")]);

    // all (no upToSeq)
    let ack = b2.ack("mark_as_read", json!({ "conversationId": conv })).await;
    let d = ok(&ack);
    assert_eq!(d["upToSeq"], 3);
    assert_eq!(d["unreadCount"], 0);
    assert!(d["readAt"].as_str().is_some_and(|s| s.ends_with('Z')), "readAt RFC 3339 UTC: {d}");
    for s in [&a1, &a2, &b1, &b2] {
        let ev = s.next("messages_read").await;
        assert_eq!(ev, json!({ "conversationId": conv, "readerId": "bob", "upToSeq": 3, "readAt": d["readAt"] }));
    }
    settle(&node.base, &[(&a1, "alice"), (&a2, "alice"), (&b1, "bob"), (&b2, "bob")]).await;
    for s in [&a1, &a2, &b1, &b2] {
        assert_eq!(s.count("messages_read").await, 0, "each socket got each messages_read once");
    }
    let unread = bob_api.get("/api/chat/unread").await;
    assert_eq!(unread.body["data"]["total"], 0, "{}", unread.body);
    let statuses: Vec<Value> = history(&alice_api, &conv).await.iter().map(|m| m["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("read"); 3]);

    // Negative upToSeq is refused.
    assert_validation(&b1.ack("mark_as_read", json!({ "conversationId": conv, "upToSeq": -1 })).await, "upToSeq");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_as_delivered_notifies_the_sender() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice_api = Api::new(&node.base, "alice");
    let conv = alice_api.conversation_with("bob").await;
    let a1 = Sock::connect(&node.base, "alice").await;
    let a2 = Sock::connect(&node.base, "alice").await;
    let b1 = Sock::connect(&node.base, "bob").await;
    let b2 = Sock::connect(&node.base, "bob").await;
    for i in 1..=3 {
        send(&a1, &conv, &format!("m{i}"), &format!("d-{i}")).await;
    }
    let ack = b1.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 2 })).await;
    let d = ok(&ack);
    assert_eq!(d["upToSeq"], 2);
    assert_eq!(d["updated"], 2);
    for s in [&a1, &a2] {
        assert_eq!(s.next("messages_delivered").await, json!({ "conversationId": conv, "upToSeq": 2 }));
    }
    settle(&node.base, &[(&a1, "alice"), (&a2, "alice"), (&b1, "bob"), (&b2, "bob")]).await;
    for s in [&a1, &a2] {
        assert_eq!(s.count("messages_delivered").await, 0, "exactly once");
    }
    for (name, s) in [("b1", &b1), ("b2", &b2)] {
        assert_eq!(s.count("messages_delivered").await, 0, "{name}: messages_delivered goes to the sender only");
    }
    let statuses: Vec<Value> = history(&alice_api, &conv).await.iter().map(|m| m["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("delivered"), json!("delivered"), json!("sent")]);

    // A read message is not downgraded to delivered.
    ok(&b1.ack("mark_as_read", json!({ "conversationId": conv, "upToSeq": 1 })).await);
    let d = ok(&b1.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 3 })).await).clone();
    assert_eq!((&d["upToSeq"], &d["updated"]), (&json!(3), &json!(1)), "{d}");
    let statuses: Vec<Value> = history(&alice_api, &conv).await.iter().map(|m| m["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("read"), json!("delivered"), json!("delivered")]);
    for s in [&a1, &a2] {
        assert_eq!(s.next("messages_delivered").await, json!({ "conversationId": conv, "upToSeq": 3 }));
    }

    // Past the newest message: clamped to it, in the ack and in the event (like mark_as_read).
    send(&a1, &conv, "m4", "d-4").await;
    let d = ok(&b2.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 1000 })).await).clone();
    assert_eq!((&d["upToSeq"], &d["updated"]), (&json!(4), &json!(1)), "{d}");
    for s in [&a1, &a2] {
        assert_eq!(s.next("messages_delivered").await, json!({ "conversationId": conv, "upToSeq": 4 }));
    }
    // A receipt that changes nothing is acknowledged, and nobody is told.
    let d = ok(&b1.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 4 })).await).clone();
    assert_eq!((&d["upToSeq"], &d["updated"]), (&json!(4), &json!(0)), "{d}");
    settle(&node.base, &[(&a1, "alice"), (&a2, "alice"), (&b1, "bob"), (&b2, "bob")]).await;
    for (name, s) in [("a1", &a1), ("a2", &a2), ("b1", &b1), ("b2", &b2)] {
        assert_eq!(s.count("messages_delivered").await, 0, "{name}: a no-op receipt sends no messages_delivered");
    }
    // upToSeq is required.
    assert_validation(&b1.ack("mark_as_delivered", json!({ "conversationId": conv })).await, "upToSeq");
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_online_status_reports_connected_users() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let dave_api = Api::new(&node.base, "dave");
    dave_api.conversation_with("alice").await;
    dave_api.conversation_with("bob").await;
    let dave = Sock::connect(&node.base, "dave").await;
    // Their user_status events prove their connects are fully registered.
    let _alice = Sock::connect(&node.base, "alice").await;
    next_where(&dave, "user_status", |v| v["userId"] == "alice" && v["online"] == true).await;
    let _bob = Sock::connect(&node.base, "bob").await;
    next_where(&dave, "user_status", |v| v["userId"] == "bob" && v["online"] == true).await;

    let ack = dave.ack("get_online_status", json!({ "userIds": ["alice", "bob", "carol"] })).await;
    let statuses = ok(&ack)["statuses"].as_array().expect("statuses").clone();
    assert_eq!(statuses.len(), 3, "{ack}");
    let of = |id: &str| statuses.iter().find(|s| s["userId"] == id).unwrap_or_else(|| panic!("{id} in {ack}")).clone();
    assert_eq!(of("alice")["online"], true);
    assert_eq!(of("bob")["online"], true);
    assert_eq!(of("carol")["online"], false);
    assert!(of("carol").get("lastSeen").is_some(), "lastSeen field present (null): {ack}");

    let ids: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    assert_validation(&dave.ack("get_online_status", json!({ "userIds": ids })).await, "userIds");
    let ids: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    let ack = dave.ack("get_online_status", json!({ "userIds": ids })).await;
    assert_eq!(ok(&ack)["statuses"].as_array().map(Vec::len), Some(200));
    assert_validation(&dave.ack("get_online_status", json!({ "userIds": ["a b"] })).await, "userIds");
    assert_validation(&dave.ack("get_online_status", json!({ "userIds": "alice" })).await, "userIds");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_status_on_first_connect_and_last_disconnect() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    Api::new(&node.base, "alice").conversation_with("bob").await;
    let b1 = Sock::connect(&node.base, "bob").await;
    let b2 = Sock::connect(&node.base, "bob").await;
    let carol = Sock::connect(&node.base, "carol").await;
    let is_alice = |v: &Value| v["userId"] == "alice";

    let a1 = Sock::connect(&node.base, "alice").await;
    for s in [&b1, &b2] {
        let st = next_where(s, "user_status", is_alice).await;
        assert_eq!(st["online"], true, "{st}");
    }
    let a2 = Sock::connect(&node.base, "alice").await;
    ok(&a2.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    settle(&node.base, &[(&b1, "bob"), (&b2, "bob")]).await;
    for s in [&b1, &b2] {
        assert_eq!(count_where(s, "user_status", is_alice).await, 0, "a second socket is not a new online");
    }
    a1.disconnect().await;
    a2.disconnect().await;
    for s in [&b1, &b2] {
        let st = next_where(s, "user_status", is_alice).await;
        assert_eq!(st["online"], false, "{st}");
        assert!(st["lastSeen"].as_str().is_some_and(|t| t.ends_with('Z')), "lastSeen set: {st}");
    }
    settle(&node.base, &[(&b1, "bob"), (&b2, "bob"), (&carol, "carol")]).await;
    for s in [&b1, &b2, &carol] {
        assert_eq!(count_where(s, "user_status", is_alice).await, 0, "exactly one offline, nothing else");
    }
    // carol shares no conversation with alice: never told.
    assert_eq!(carol.count("user_status").await, 0);
    let ack = b1.ack("get_online_status", json!({ "userIds": ["alice"] })).await;
    let st = &ok(&ack)["statuses"][0];
    assert_eq!(st["online"], false);
    assert!(st["lastSeen"].is_string(), "{st}");
    node.stop().await.unwrap();
}

/// A socket that goes away while its connect is still being processed (a flaky mobile network)
/// must not leave its user online forever: the partner gets online, then offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_disconnect_does_not_leave_a_ghost_online() {
    const N: usize = 3;
    let env = Env::embedded();
    let node = env.node("n1").await;
    let dave_api = Api::new(&node.base, "dave");
    let ghosts: Vec<String> = (0..N).map(|i| format!("ghost{i}")).collect();
    for g in &ghosts {
        dave_api.conversation_with(g).await;
    }
    let dave = Sock::connect(&node.base, "dave").await;
    // Fresh users (never seen by the node): their connect includes a store write.
    for g in &ghosts {
        Sock::connect(&node.base, g).await.disconnect().await;
    }
    // Their presence ends offline …
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ack = dave.ack("get_online_status", json!({ "userIds": ghosts })).await;
        if ok(&ack)["statuses"].as_array().expect("statuses").iter().all(|s| s["online"] == false) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a ghost stayed online: {ack}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // … and every "online" dave was told about is followed by an "offline" (a socket that was
    // gone before its connect was reported is announced neither way; the client may reorder
    // events, so this compares counts and awaits the missing ones).
    let mut tally: std::collections::HashMap<String, (usize, usize)> = std::collections::HashMap::new();
    let count = |tally: &mut std::collections::HashMap<String, (usize, usize)>, st: &serde_json::Value| {
        let e = tally.entry(st["userId"].as_str().unwrap_or_default().to_owned()).or_default();
        if st["online"] == true {
            e.0 += 1;
        } else {
            assert!(st["lastSeen"].is_string(), "{st}");
            e.1 += 1;
        }
    };
    for st in dave.take("user_status").await {
        count(&mut tally, &st);
    }
    while tally.values().any(|(on, off)| on > off) {
        let st = dave.next("user_status").await;
        count(&mut tally, &st);
    }
    for (user, (on, off)) in &tally {
        assert!(on == off && *on <= 1, "{user}: {on} online vs {off} offline announcements");
    }
    let ack = dave.ack("get_online_status", json!({ "userIds": ghosts })).await;
    for st in ok(&ack)["statuses"].as_array().expect("statuses") {
        assert_eq!(st["online"], false, "no socket left: {st}");
    }
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- sync

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_missed_messages_after_reconnect() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;
    let b = Sock::connect(&node.base, "bob").await;
    let first = alice.send(&conv, "before").await;
    let seen = b.next("new_message").await["message"]["seq"].as_i64().expect("seq");
    assert_eq!(seen, first["seq"].as_i64().unwrap());
    b.disconnect().await;

    let mut missed = Vec::new();
    for i in 1..=3 {
        missed.push(alice.send(&conv, &format!("missed {i}")).await);
    }
    let b = Sock::connect(&node.base, "bob").await;
    let ack = b.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": seen }] })).await;
    let convs = ok(&ack)["conversations"].as_array().expect("conversations").clone();
    assert_eq!(convs.len(), 1, "{ack}");
    assert_eq!(convs[0]["conversationId"], conv.as_str());
    assert_eq!(convs[0]["hasMore"], false);
    let got = convs[0]["messages"].as_array().expect("messages");
    assert_eq!(got, &missed, "exactly the missed messages, in seq order");

    // afterSeq 0 gives everything.
    let ack = b.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": 0 }] })).await;
    assert_eq!(ok(&ack)["conversations"][0]["messages"].as_array().map(Vec::len), Some(4));
    // Bad requests.
    let ack = b.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": -1 }] })).await;
    assert_validation(&ack, "afterSeq");
    let many: Vec<Value> = (0..101).map(|_| json!({ "conversationId": conv, "afterSeq": 0 })).collect();
    assert_validation(&b.ack("sync", json!({ "conversations": many })).await, "conversations");
    let ack = b.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": "x" }] })).await;
    assert_validation(&ack, "afterSeq");
    assert_validation(&b.ack("sync", json!({})).await, "conversations");
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- limits (§7)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_rate_limit_is_per_user() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limit-messages", "5", "--rate-limit-window-secs", "60"]).await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Sock::connect(&node.base, "alice").await;
    let b = Sock::connect(&node.base, "bob").await;
    for i in 0..5 {
        send(&a, &conv, &format!("m{i}"), &format!("rl-{i}")).await;
    }
    let ack = a
        .ack("send_message", json!({ "conversationId": conv, "content": "one too many", "clientMessageId": "rl-5" }))
        .await;
    err_code(&ack, "rate_limited");
    assert!(ack["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0), "retryAfterMs > 0: {ack}");
    // Another device of the same user shares the budget.
    let a2 = Sock::connect(&node.base, "alice").await;
    err_code(
        &a2.ack("send_message", json!({ "conversationId": conv, "content": "other device" })).await,
        "rate_limited",
    );
    // bob is unaffected.
    let m = send(&b, &conv, "bob is fine", "b-1").await;
    assert_eq!(m["seq"], 6, "the refused sends consumed no seq");
    assert_eq!(history(&Api::new(&node.base, "bob"), &conv).await.len(), 6);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_node_stays_healthy() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Sock::connect(&node.base, "alice").await;
    let b = Sock::connect(&node.base, "bob").await;

    // missing fields
    assert_validation(&a.ack("send_message", json!({ "content": "x" })).await, "conversationId");
    assert_validation(&a.ack("send_message", json!({ "conversationId": conv })).await, "content");
    assert_validation(&a.ack("join_conversation", json!({})).await, "conversationId");
    // wrong types
    assert_validation(&a.ack("send_message", json!({ "conversationId": conv, "content": 5 })).await, "content");
    assert_validation(&a.ack("send_message", json!({ "conversationId": 5, "content": "x" })).await, "conversationId");
    assert_validation(&a.ack("mark_as_read", json!({ "conversationId": conv, "upToSeq": "2" })).await, "upToSeq");
    assert_validation(&a.ack("get_online_status", json!({ "userIds": [1, 2] })).await, "userIds");
    // content rules
    let ack = a.ack("send_message", json!({ "conversationId": conv, "content": "x".repeat(5000) })).await;
    assert_validation(&ack, "content");
    let ack = a.ack("send_message", json!({ "conversationId": conv, "content": "nul\u{0000}byte" })).await;
    assert_validation(&ack, "content");
    let ack = a.ack("send_message", json!({ "conversationId": conv, "content": "esc\u{1b}[31m" })).await;
    assert_validation(&ack, "content");
    assert_validation(&a.ack("send_message", json!({ "conversationId": conv, "content": "  \n\t " })).await, "content");
    assert_validation(&a.ack("send_message", json!({ "conversationId": conv, "content": "" })).await, "content");
    let ack = a.ack("send_message", json!({ "conversationId": conv, "content": "x", "messageType": "system" })).await;
    assert_validation(&ack, "messageType");
    let ack = a
        .ack("send_message", json!({ "conversationId": conv, "content": "x", "clientMessageId": "a".repeat(200) }))
        .await;
    assert_validation(&ack, "clientMessageId");
    // invalid ids
    assert_validation(
        &a.ack("send_message", json!({ "conversationId": "xyz", "content": "x" })).await,
        "conversationId",
    );
    // payload that is not an object
    err_code(&a.ack("send_message", json!("just a string")).await, "validation");
    err_code(&a.ack("send_message", json!(42)).await, "validation");
    err_code(&a.ack("join_conversation", json!([1, 2, 3])).await, "validation");
    // unknown event with an ack
    let ack = a.ack("frobnicate", json!({ "x": 1 })).await;
    err_code(&ack, "validation");
    assert!(ack["message"].as_str().unwrap_or_default().contains("frobnicate"), "{ack}");

    // unknown event without an ack → `error` event
    a.emit("frobnicate", json!({ "x": 1 })).await;
    let e = a.next("error").await;
    assert_eq!(e["code"], "validation", "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("frobnicate")), "{e}");
    assert!(e["event"].is_string(), "error event names the event: {e}");
    // a failing known event without an ack → `error` event naming it
    a.emit("send_message", json!({ "conversationId": "bad-id", "content": "x" })).await;
    let e = a.next("error").await;
    assert_eq!(e["code"], "validation", "{e}");
    assert_eq!(e["event"], "send_message", "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("conversationId")), "{e}");
    a.emit("mark_as_read", json!({ "conversationId": UNKNOWN_ID })).await;
    let e = a.next("error").await;
    assert_eq!((e["code"].as_str(), e["event"].as_str()), (Some("not_found"), Some("mark_as_read")), "{e}");

    // Nothing was stored, bob saw nothing, and the same sockets still work.
    settle(&node.base, &[(&b, "bob")]).await;
    assert_eq!(b.count("new_message").await, 0);
    let m = send(&a, &conv, "still fine", "ok-1").await;
    assert_eq!(m["seq"], 1, "no invalid input was stored");
    assert_eq!(b.next("new_message").await["message"]["_id"], m["_id"]);

    // 1 MiB over websocket: that client is disconnected, nobody else is affected.
    let victim = Sock::connect(&node.base, "alice").await;
    let huge = json!({ "conversationId": conv, "content": "x".repeat(1 << 20) });
    let _ = victim.client.emit("send_message", Payload::Text(vec![huge], None)).await;
    let reason = victim.next("close").await;
    assert!(reason.to_string().contains("transport close"), "close reason: {reason}");
    let m = send(&b, &conv, "after the huge payload", "ok-2").await;
    assert_eq!(m["seq"], 2, "the huge message was not stored");
    next_where(&a, "new_message", |v| v["message"]["_id"] == m["_id"]).await;
    let health = Api::with_token(&node.base, None).get("/healthz").await;
    assert_eq!(health.status, 200);
    // A new connection is still accepted.
    let again = Sock::connect(&node.base, "carol").await;
    ok(&again.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------- transports

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_client_sends_and_receives() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let a = Sock::try_connect(
        &node.base,
        SockOpts { auth: Some(json!({ "token": token("alice") })), polling: true, ..Default::default() },
    )
    .await
    .expect("polling connect");
    let b = Sock::connect(&node.base, "bob").await;

    let m = send(&a, &conv, "over polling", "p-1").await;
    assert_eq!(a.next("message_delivered").await["clientMessageId"], "p-1");
    assert_eq!(a.next("new_message").await["message"]["_id"], m["_id"]);
    assert_eq!(b.next("new_message").await["message"]["_id"], m["_id"]);
    let reply = send(&b, &conv, "to the polling client", "w-1").await;
    assert_eq!(
        next_where(&a, "new_message", |v| v["message"]["_id"] == reply["_id"]).await["message"]["content"],
        "to the polling client"
    );
    // Polling refuses bad tokens the same way.
    let refused = Sock::try_connect(
        &node.base,
        SockOpts { auth: Some(json!({ "token": "garbage" })), polling: true, ..Default::default() },
    )
    .await;
    assert!(refused.as_ref().err().is_some_and(|e| e.contains("unauthorized")), "{:?}", refused.err());
    node.stop().await.unwrap();
}

/// The 64 KiB packet cap, exactly at it and one byte over, on websocket and on long-polling. At
/// the cap the packet is read (its content is then refused as too long, by an `error` event,
/// and the socket stays); one byte over, the transport is closed. Nothing is stored, and the
/// other side keeps chatting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_64_kib_packet_cap_at_and_just_over_the_boundary() {
    const CAP: usize = 64 * 1024;
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let b = Sock::connect(&node.base, "bob").await;
    // The client frames an emit without ack as `42["send_message",{..}]`: pad the content so
    // that the whole packet is `len` bytes.
    let payload_of_len = |len: usize| {
        let empty = json!({ "conversationId": conv, "content": "" });
        let overhead = 2 + serde_json::to_string(&json!(["send_message", empty])).expect("json").len();
        json!({ "conversationId": conv, "content": "x".repeat(len - overhead) })
    };
    for polling in [false, true] {
        let transport = if polling { "long-polling" } else { "websocket" };
        let opts = || SockOpts { auth: Some(json!({ "token": token("alice") })), polling, ..Default::default() };

        let at = Sock::try_connect(&node.base, opts()).await.expect("connect");
        at.emit("send_message", payload_of_len(CAP)).await;
        let e = at.next("error").await;
        assert_eq!(
            (e["code"].as_str(), e["event"].as_str()),
            (Some("validation"), Some("send_message")),
            "{transport}, a packet of exactly 64 KiB is read: {e}"
        );
        ok(&at.ack("get_online_status", json!({ "userIds": ["bob"] })).await);
        assert_eq!(at.count("close").await, 0, "{transport}: the socket at the cap stays connected");

        let over = Sock::try_connect(&node.base, opts()).await.expect("connect");
        let _ = over.client.emit("send_message", Payload::Text(vec![payload_of_len(CAP + 1)], None)).await;
        let reason = over.next("close").await;
        // (the client may report its own transport error; the server must not have read it)
        let read = count_where(&over, "error", |v| v["event"] == "send_message").await;
        assert_eq!(read, 0, "{transport}: one byte over is not read as an event: {:?}", over.received().await);
        if !polling {
            assert_eq!(reason, "transport close", "{transport}: one byte over closes the transport");
        }

        let m = send(&b, &conv, &format!("after the {transport} probes"), &format!("cap-{transport}")).await;
        assert_eq!(history(&Api::new(&node.base, "bob"), &conv).await.len(), m["seq"].as_u64().unwrap_or(0) as usize);
        assert!(
            history(&Api::new(&node.base, "bob"), &conv).await.iter().all(|h| h["senderId"] == "bob"),
            "nothing oversized stored"
        );
    }
    node.stop().await.unwrap();
}
