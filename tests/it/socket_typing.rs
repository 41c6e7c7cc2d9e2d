//! Socket.IO contract: typing indicators.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::socket_util::*;

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
