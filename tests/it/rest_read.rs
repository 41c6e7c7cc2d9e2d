//! REST API: read receipts, unread counts and presence.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// read + unread

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_without_body_marks_everything_and_unread_counts_follow() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let c1 = alice.conversation_with("bob").await;
    let c2 = data(&alice.post("/api/chat/conversations", json!({ "participantId": "bob", "jobId": "j2" })).await, 201)
        ["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..3 {
        alice.send(&c1, &format!("c1-{i}")).await;
    }
    for i in 0..2 {
        alice.send(&c2, &format!("c2-{i}")).await;
    }
    bob.send(&c1, "reply").await; // seq 4, to alice

    let u = data(&bob.get("/api/chat/unread").await, 200);
    assert_eq!(u["total"], 5, "{u}");
    let items = u["conversations"].as_array().unwrap();
    let count_of = |items: &[Value], id: &str| {
        items.iter().find(|i| i["conversationId"] == id).map(|i| i["unreadCount"].as_i64().unwrap()).unwrap_or(0)
    };
    assert_eq!(count_of(items, &c1), 3);
    assert_eq!(count_of(items, &c2), 2);
    let ua = data(&alice.get("/api/chat/unread").await, 200);
    assert_eq!(ua["total"], 1, "{ua}");
    assert_eq!(count_of(ua["conversations"].as_array().unwrap(), &c1), 1);
    let bl = data(&bob.get("/api/chat/conversations").await, 200);
    assert_eq!(find_conv(&bl, &c1)["unreadCount"], 3);
    assert_eq!(find_conv(&bl, &c2)["unreadCount"], 2);

    let alice_sock = Sock::connect(&node.base, "alice").await;
    // No body at all: everything.
    let r = bob.req(Method::POST, &read_path(&c1), None).await;
    let d = data(&r, 200);
    assert_eq!(d["conversationId"], c1);
    assert_eq!(d["unreadCount"], 0);
    assert_eq!(d["upToSeq"], 4);
    assert_millis_utc(&d["readAt"]);
    // Same event as mark_as_read: the sender hears of it.
    let ev = alice_sock.next("messages_read").await;
    assert_eq!(ev["conversationId"], c1);
    assert_eq!(ev["readerId"], "bob");
    assert_eq!(ev["upToSeq"], 4);

    let u = data(&bob.get("/api/chat/unread").await, 200);
    assert_eq!(u["total"], 2, "{u}");
    assert_eq!(count_of(u["conversations"].as_array().unwrap(), &c1), 0);
    assert_eq!(count_of(u["conversations"].as_array().unwrap(), &c2), 2);
    let bl = data(&bob.get("/api/chat/conversations").await, 200);
    assert_eq!(find_conv(&bl, &c1)["unreadCount"], 0);
    assert_eq!(find_conv(&bl, &c2)["unreadCount"], 2);
    // bob's read does not touch alice's own unread message.
    let ua = data(&alice.get("/api/chat/unread").await, 200);
    assert_eq!(ua["total"], 1, "{ua}");
    let h = data(&bob.get(&msgs_path(&c1)).await, 200);
    let statuses: Vec<&str> = h["messages"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["read", "read", "read", "sent"], "{h}");

    // An empty JSON object also means everything; whitespace-only body too.
    let d = data(&bob.post(&read_path(&c2), json!({})).await, 200);
    assert_eq!(d["unreadCount"], 0);
    let d = data(&alice.raw(Method::POST, &read_path(&c1), b"  \n".to_vec()).await, 200);
    assert_eq!(d["unreadCount"], 0);
    let u = data(&bob.get("/api/chat/unread").await, 200);
    assert_eq!(u["total"], 0, "{u}");
    assert!(u["conversations"].as_array().unwrap().iter().all(|i| i["unreadCount"] == 0), "{u}");
    let ua = data(&alice.get("/api/chat/unread").await, 200);
    assert_eq!(ua["total"], 0, "{ua}");

    // Reading again is harmless.
    let d = data(&bob.req(Method::POST, &read_path(&c1), None).await, 200);
    assert_eq!(d["unreadCount"], 0);
    alice_sock.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_up_to_seq_is_partial_and_validated() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;
    alice.send(&conv, "1").await;
    alice.send(&conv, "2").await;
    alice.send(&conv, "3").await;
    bob.send(&conv, "4").await;
    alice.send(&conv, "5").await;

    let d = data(&bob.post(&read_path(&conv), json!({ "upToSeq": 4 })).await, 200);
    assert_eq!(d["upToSeq"], 4);
    assert_eq!(d["unreadCount"], 1, "only seq 5 is still unread: {d}");
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    let statuses: Vec<&str> = h["messages"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["read", "read", "read", "sent", "sent"], "{h}");
    let u = data(&bob.get("/api/chat/unread").await, 200);
    assert_eq!(u["total"], 1);
    assert_eq!(u["conversations"], json!([{ "conversationId": conv, "unreadCount": 1 }]));
    assert_eq!(find_conv(&data(&bob.get("/api/chat/conversations").await, 200), &conv)["unreadCount"], 1);

    // upToSeq 0 reads nothing more.
    let d = data(&bob.post(&read_path(&conv), json!({ "upToSeq": 0 })).await, 200);
    assert_eq!(d["unreadCount"], 1);

    for bad in [json!(-1), json!("3"), json!(1.5), json!(true), json!([3])] {
        assert_validation(&bob.post(&read_path(&conv), json!({ "upToSeq": bad })).await, "upToSeq");
    }
    assert_validation(&bob.post(&read_path(&conv), json!({ "upToSeq": 1, "all": true })).await, "all");
    assert_error(&bob.raw(Method::POST, &read_path(&conv), b"{\"upToSeq\":".to_vec()).await, 400, "validation");
    assert_eq!(data(&bob.get("/api/chat/unread").await, 200)["total"], 1, "rejected reads changed nothing");

    // Past the end: clamps to the last seq.
    let d = data(&bob.post(&read_path(&conv), json!({ "upToSeq": 1000 })).await, 200);
    assert_eq!(d["unreadCount"], 0);
    assert_eq!(d["upToSeq"], 5);
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(h["messages"][4]["status"], "read");
    assert_eq!(h["messages"][3]["status"], "sent", "bob's own message is alice's to read");
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_status_reports_presence_and_validates_ids() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");

    let d = data(&alice.get("/api/chat/users/status?ids=bob,carol").await, 200);
    let st = d["statuses"].as_array().expect("statuses");
    assert_eq!(st.len(), 2, "{d}");
    for s in st {
        let o = s.as_object().unwrap();
        for k in ["userId", "online", "lastSeen"] {
            assert!(o.contains_key(k), "status lacks {k}: {s}");
        }
        assert_eq!(s["online"], false);
        assert_eq!(s["lastSeen"], Value::Null, "never seen: {s}");
    }
    let ids: HashSet<&str> = st.iter().map(|s| s["userId"].as_str().unwrap()).collect();
    assert_eq!(ids, HashSet::from(["bob", "carol"]));

    let bob = Sock::connect(&node.base, "bob").await;
    wait_status(&alice, "bob", |s| s["online"] == true).await;
    let d = data(&alice.get("/api/chat/users/status?ids=bob,%20carol%20,").await, 200);
    let st = d["statuses"].as_array().unwrap();
    assert_eq!(st.len(), 2, "blank entries and spaces ignored: {d}");
    assert!(st.iter().any(|s| s["userId"] == "bob" && s["online"] == true), "{d}");
    assert!(st.iter().any(|s| s["userId"] == "carol" && s["online"] == false), "{d}");

    bob.disconnect().await;
    let s = wait_status(&alice, "bob", |s| s["online"] == false).await;
    assert_millis_utc(&s["lastSeen"]);

    // Validation.
    for q in ["", "?ids=", "?ids=,,", "?other=bob"] {
        let r = alice.get(&format!("/api/chat/users/status{q}")).await;
        assert_validation(&r, "ids");
    }
    let many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    let r = alice.get(&format!("/api/chat/users/status?ids={}", many.join(","))).await;
    assert_error(&r, 400, "validation");
    assert!(r.body["message"].as_str().unwrap().to_lowercase().contains("ids"), "{}", r.body);
    let d = data(&alice.get(&format!("/api/chat/users/status?ids={}", many[..200].join(","))).await, 200);
    assert_eq!(d["statuses"].as_array().unwrap().len(), 200);
    for bad in ["a b", "{\"$gt\":\"\"}", "bob;drop", &"x".repeat(129)] {
        let r = alice.get(&format!("/api/chat/users/status?ids=bob,{}", enc(bad))).await;
        assert_error(&r, 400, "validation");
        assert!(r.body["message"].as_str().unwrap().to_lowercase().contains("ids"), "{}", r.body);
    }
    node.stop().await.unwrap();
}
