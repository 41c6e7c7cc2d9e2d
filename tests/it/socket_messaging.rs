//! Socket.IO contract: send_message fan-out and authorization.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use serde_json::{Value, json};

use crate::harness::*;
use crate::socket_util::*;

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
