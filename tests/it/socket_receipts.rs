//! Socket.IO contract: read / delivered receipts.

use serde_json::{Value, json};

use crate::harness::*;
use crate::socket_util::*;

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
