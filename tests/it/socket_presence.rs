//! Socket.IO contract: presence and sync.

use serde_json::{Value, json};

use crate::harness::*;
use crate::socket_util::*;

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
