//! REST API: sending messages and history.

use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_returns_the_message_and_retries_are_idempotent() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;
    let bob_sock = Sock::connect(&node.base, "bob").await;

    let before = Utc::now();
    let r = alice.post(&msgs_path(&conv), json!({ "content": "hello bob" })).await;
    let m = data(&r, 201)["message"].clone();
    let after = Utc::now();
    let obj = m.as_object().expect("message object");
    for k in [
        "_id",
        "conversationId",
        "seq",
        "senderId",
        "receiverId",
        "messageType",
        "content",
        "status",
        "clientMessageId",
        "timestamp",
        "createdAt",
    ] {
        assert!(obj.contains_key(k), "message lacks {k}: {m}");
    }
    let id = m["_id"].as_str().unwrap();
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{m}");
    assert_eq!(m["conversationId"], conv);
    assert_eq!(m["seq"], 1);
    assert_eq!(m["senderId"], "alice");
    assert_eq!(m["receiverId"], "bob");
    assert_eq!(m["messageType"], "text");
    assert_eq!(m["content"], "hello bob");
    assert_eq!(m["status"], "sent");
    assert_eq!(m["clientMessageId"], Value::Null);
    assert_eq!(m["timestamp"], m["createdAt"]);
    let t = assert_millis_utc(&m["createdAt"]);
    assert!(t >= before - chrono::Duration::seconds(2) && t <= after + chrono::Duration::seconds(2), "{t}");
    // Same effects as the socket event: bob's socket gets new_message.
    assert_eq!(bob_sock.next("new_message").await["message"], m);

    // With a clientMessageId: 201, then 200 with the very same message on retry.
    let body = json!({ "content": "with id", "clientMessageId": "cm-1" });
    let first = data(&alice.post(&msgs_path(&conv), body.clone()).await, 201)["message"].clone();
    assert_eq!(first["seq"], 2);
    assert_eq!(first["clientMessageId"], "cm-1");
    for _ in 0..2 {
        let again = data(&alice.post(&msgs_path(&conv), body.clone()).await, 200)["message"].clone();
        assert_eq!(again["_id"], first["_id"]);
        assert_eq!(again["seq"], first["seq"]);
        assert_eq!(again["createdAt"], first["createdAt"]);
    }
    // A retry with other content still returns the original (the id decides).
    let again = data(
        &alice.post(&msgs_path(&conv), json!({ "content": "changed", "clientMessageId": "cm-1" })).await,
        200,
    )["message"]
        .clone();
    assert_eq!(again["_id"], first["_id"]);
    assert_eq!(again["content"], "with id");
    // The same clientMessageId from the other sender is a different message.
    let from_bob = data(
        &bob.post(&msgs_path(&conv), json!({ "content": "mine", "clientMessageId": "cm-1" })).await,
        201,
    )["message"]
        .clone();
    assert_ne!(from_bob["_id"], first["_id"]);
    assert_eq!(from_bob["seq"], 3);
    assert_eq!(from_bob["receiverId"], "alice");

    // bob's socket saw seq 2 once per attempt (a retry is delivered again, in case the first
    // attempt failed after its commit; clients dedupe by _id) and seq 3 once. A marker send
    // afterwards bounds the wait: one node delivers to one socket in order.
    let marker = alice.send(&conv, "marker").await;
    assert_eq!(marker["seq"], 4);
    let mut got = Vec::new();
    while !got.contains(&4) {
        got.push(bob_sock.next("new_message").await["message"]["seq"].as_i64().unwrap());
    }
    let left = bob_sock.count("new_message").await;
    got.sort_unstable();
    assert_eq!((got.as_slice(), left), (&[2, 2, 2, 2, 3, 4][..], 0), "new_message events after the first");

    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), vec![1, 2, 3, 4], "no duplicates from retries: {h}");
    assert_eq!(h["messages"][0], m);

    // Bad clientMessageIds.
    for bad in [json!("has space"), json!(""), json!("x".repeat(129)), json!(12), json!("é")] {
        let r = alice.post(&msgs_path(&conv), json!({ "content": "x", "clientMessageId": bad })).await;
        assert_validation(&r, "clientMessageId");
    }
    bob_sock.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_is_stored_verbatim_and_message_types_are_checked() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;

    let html = "<script>alert('x')</script> <b>bold</b> &amp; \"quotes\" ' <img src=x onerror=alert(1)>";
    let m = alice.send(&conv, html).await;
    assert_eq!(m["content"], html);
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(h["messages"][0]["content"], html, "history returns the text unchanged");

    for t in ["image", "file", "text"] {
        let r =
            alice.post(&msgs_path(&conv), json!({ "content": format!("https://cdn/x.{t}"), "messageType": t })).await;
        let m = data(&r, 201)["message"].clone();
        assert_eq!(m["messageType"], t);
    }
    for bad in [json!("system"), json!("video"), json!("TEXT"), json!(""), json!(3), json!(["text"])] {
        let r = alice.post(&msgs_path(&conv), json!({ "content": "x", "messageType": bad })).await;
        assert_validation(&r, "messageType");
    }
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), vec![1, 2, 3, 4], "rejected sends stored nothing: {h}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_with_before_and_page() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;

    let empty = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(empty, json!({ "messages": [], "hasMore": false }));

    for i in 1..=7 {
        let api = if i % 2 == 0 { &bob } else { &alice };
        let m = api.send(&conv, &format!("m{i}")).await;
        assert_eq!(m["seq"], i);
    }
    let page = |q: &str| {
        let (alice, path) = (alice.clone(), format!("{}?{q}", msgs_path(&conv)));
        async move { data(&alice.get(&path).await, 200) }
    };

    let all = data(&bob.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&all["messages"]), (1..=7).collect::<Vec<_>>());
    assert_eq!(all["hasMore"], false);
    for (i, m) in all["messages"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["content"], format!("m{}", i + 1));
        assert_eq!(m["senderId"], if (i + 1) % 2 == 0 { "bob" } else { "alice" });
    }

    let p = page("limit=3").await;
    assert_eq!(seqs(&p["messages"]), vec![5, 6, 7]);
    assert_eq!(p["hasMore"], true);
    let p = page("limit=3&before=5").await;
    assert_eq!(seqs(&p["messages"]), vec![2, 3, 4]);
    assert_eq!(p["hasMore"], true);
    let p = page("limit=3&before=2").await;
    assert_eq!(seqs(&p["messages"]), vec![1]);
    assert_eq!(p["hasMore"], false);
    let p = page("limit=3&before=1").await;
    assert_eq!(seqs(&p["messages"]), Vec::<i64>::new());
    assert_eq!(p["hasMore"], false);
    let p = page("limit=3&before=4").await;
    assert_eq!(seqs(&p["messages"]), vec![1, 2, 3]);
    assert_eq!(p["hasMore"], false, "exactly 3 older messages: none beyond");
    let p = page("before=1000").await;
    assert_eq!(seqs(&p["messages"]), (1..=7).collect::<Vec<_>>());

    let p = page("limit=3&page=1").await;
    assert_eq!(seqs(&p["messages"]), vec![5, 6, 7]);
    assert_eq!(p["hasMore"], true);
    let p = page("limit=3&page=2").await;
    assert_eq!(seqs(&p["messages"]), vec![2, 3, 4]);
    assert_eq!(p["hasMore"], true);
    let p = page("limit=3&page=3").await;
    assert_eq!(seqs(&p["messages"]), vec![1]);
    assert_eq!(p["hasMore"], false);
    let p = page("limit=3&page=4").await;
    assert_eq!(seqs(&p["messages"]), Vec::<i64>::new());
    assert_eq!(p["hasMore"], false);
    let p = page("limit=7").await;
    assert_eq!(p["hasMore"], false);
    let p = page("limit=6").await;
    assert_eq!(seqs(&p["messages"]), (2..=7).collect::<Vec<_>>());
    assert_eq!(p["hasMore"], true);

    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("before=0", "before"),
        ("before=-3", "before"),
        ("before=abc", "before"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=x", "page"),
    ] {
        assert_validation(&alice.get(&format!("{}?{q}", msgs_path(&conv))).await, field);
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_unknown_and_invalid_conversations() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let carol = Api::new(&node.base, "carol");
    let conv = alice.conversation_with("bob").await;
    alice.send(&conv, "private").await;

    // carol is not a participant: 403 everywhere, and nothing leaks or changes.
    let r = carol.get(&msgs_path(&conv)).await;
    assert_error(&r, 403, "forbidden");
    assert!(!r.body.to_string().contains("private"));
    assert_error(&carol.post(&msgs_path(&conv), json!({ "content": "let me in" })).await, 403, "forbidden");
    assert_error(&carol.post(&read_path(&conv), json!({})).await, 403, "forbidden");
    assert_error(&carol.req(Method::POST, &read_path(&conv), None).await, 403, "forbidden");
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), vec![1]);
    assert_eq!(h["messages"][0]["status"], "sent", "carol's read changed nothing");
    assert_eq!(data(&carol.get("/api/chat/conversations").await, 200)["conversations"], json!([]));

    // A well-formed id nobody created: 404.
    let unknown = "65a1b2c3d4e5f60718293a4b";
    assert_error(&alice.get(&msgs_path(unknown)).await, 404, "not_found");
    assert_error(&alice.post(&msgs_path(unknown), json!({ "content": "hi" })).await, 404, "not_found");
    assert_error(&alice.post(&read_path(unknown), json!({})).await, 404, "not_found");
    // Upper-case hex of an unknown id too.
    assert_error(&alice.get(&msgs_path(&unknown.to_uppercase())).await, 404, "not_found");

    // Malformed ids: 400 before any store access.
    for bad in [
        "nope",
        "65a1b2c3d4e5f60718293a4",
        "65a1b2c3d4e5f60718293a4bb",
        "zza1b2c3d4e5f60718293a4b",
        "%7B%22%24gt%22%3A%22%22%7D",
        "..%2F..%2Fetc",
    ] {
        assert_validation(&alice.get(&msgs_path(bad)).await, "conversationId");
        assert_validation(&alice.post(&msgs_path(bad), json!({ "content": "hi" })).await, "conversationId");
        assert_validation(&alice.post(&read_path(bad), json!({})).await, "conversationId");
    }
    node.stop().await.unwrap();
}
