//! REST API: bad input and the error envelope.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// bad input (docs/)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules_are_enforced() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;
    let send = |content: Value| {
        let (alice, path) = (alice.clone(), msgs_path(&conv));
        async move { alice.post(&path, json!({ "content": content })).await }
    };

    for bad in [
        json!("x".repeat(5000)),
        json!("x".repeat(4001)),
        json!("é".repeat(4001)),
        json!(""),
        json!("   "),
        json!(" \n\t\r "),
        json!("\u{3000}\u{2003}"),
        json!("a\u{0000}b"),
        json!("\u{001b}[31mred"),
        json!("bell\u{0007}"),
        json!("del\u{007f}"),
        json!("c1\u{0085}"),
        json!(null),
        json!(5),
        json!(["a"]),
        json!({ "text": "a" }),
    ] {
        let r = send(bad.clone()).await;
        assert!(r.status < 500, "{bad}: {} {}", r.status, r.body);
        assert_validation(&r, "content");
    }
    assert_validation(&alice.post(&msgs_path(&conv), json!({})).await, "content");
    assert_validation(&alice.post(&msgs_path(&conv), json!({ "messageType": "text" })).await, "content");

    // Accepted, and returned exactly.
    for good in [
        "x".repeat(4000),
        "é".repeat(4000),
        "😀".repeat(4000),
        "日本語".repeat(1333),
        "a\nb\r\nc\td".to_owned(),
        "  padded  ".to_owned(),
        "x".to_owned(),
    ] {
        let r = send(json!(good)).await;
        let m = data(&r, 201)["message"].clone();
        assert_eq!(m["content"].as_str().unwrap(), good, "content changed in transit");
    }
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), (1..=7).collect::<Vec<_>>(), "only the good ones stored, no gaps");
    assert_eq!(h["messages"][2]["content"].as_str().unwrap().chars().count(), 4000);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_the_node_keeps_serving() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;
    let path = msgs_path(&conv);

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", b"{\"content\":".to_vec()),
        ("not json", b"hello".to_vec()),
        ("single quotes", b"{'content':'hi'}".to_vec()),
        ("trailing garbage", b"{\"content\":\"hi\"} x".to_vec()),
        ("two objects", b"{\"content\":\"a\"}{\"content\":\"b\"}".to_vec()),
        ("array", b"[{\"content\":\"hi\"}]".to_vec()),
        ("string", b"\"hi\"".to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("invalid utf-8", b"{\"content\":\"\xff\xfe\"}".to_vec()),
        ("lone surrogate", b"{\"content\":\"\\ud800\"}".to_vec()),
        ("deep nesting", format!("{{\"content\":{}{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
        ("huge number", format!("{{\"content\":\"a\",\"messageType\":{}}}", "9".repeat(10_000)).into_bytes()),
    ];
    for (name, b) in bodies {
        let r = alice.raw(Method::POST, &path, b).await;
        assert!(r.status < 500, "{name}: {} {}", r.status, r.body);
        assert_error(&r, 400, "validation");
    }
    // Malformed JSON is reported as such, on the body.
    let r = alice.raw(Method::POST, &path, b"{\"content\":".to_vec()).await;
    assert_validation(&r, "body");
    // Unknown fields are refused and named.
    let r = alice.post(&path, json!({ "content": "hi", "senderId": "bob" })).await;
    assert_validation(&r, "senderId");
    let r = alice.post(&path, json!({ "content": "hi", "seq": 99 })).await;
    assert_validation(&r, "seq");
    // Duplicate keys are not a way around validation.
    let r = alice.raw(Method::POST, &path, b"{\"content\":\"ok\",\"content\":\"\\u0000\"}".to_vec()).await;
    assert_validation(&r, "content");

    // A body that is JSON but sent as text/plain or without a content type: read as JSON (the
    // body decides, as for clients that cannot set the header).
    for ct in [Some("text/plain"), None] {
        let tok = format!("Bearer {}", token("alice"));
        let mut headers = vec![("authorization", tok.as_str())];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let r = request(&node.base, Method::POST, &path, &headers, Some(b"{\"content\":\"typed\"}".to_vec())).await;
        assert_eq!(data(&r, 201)["message"]["content"], "typed", "{ct:?}");
    }

    // Nothing bad got stored, the node answers, and everyone can still talk.
    let h = data(&alice.get(&path).await, 200);
    let contents: Vec<&Value> = h["messages"].as_array().unwrap().iter().map(|m| &m["content"]).collect();
    assert_eq!(contents, [&json!("typed"), &json!("typed")], "only the two content-type probes were stored: {h}");
    let health = request(&node.base, Method::GET, "/healthz", &[], None).await;
    assert_eq!(health.status, 200);
    let m = bob.send(&conv, "still here").await;
    assert_eq!(m["senderId"], "bob");
    let m2 = alice.send(&conv, "me too").await;
    assert_eq!(m2["seq"].as_i64().unwrap(), m["seq"].as_i64().unwrap() + 1);
    node.stop().await.unwrap();
}

/// The ways a client sends too much: a chunked body that grows past 64 KiB, a body just over it,
/// and a 1 MiB body.
async fn assert_oversized_refused(node: &Node, path: &str) {
    let auth = format!("Bearer {}", token("alice"));
    let head = |extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n{extra}",
            node.addr
        )
    };
    // Chunked, 1 byte over 64 KiB.
    let n = 64 * 1024 + 1;
    let mut chunked = format!("{n:x}\r\n").into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', n));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_http(node.addr, &head("Transfer-Encoding: chunked\r\n"), &chunked).await;
    assert_error(&r, 413, "payload_too_large");
    // Content-Length framed, 1 byte over 64 KiB.
    let body = vec![b' '; n];
    let r = raw_http(node.addr, &head(&format!("Content-Length: {n}\r\n")), &body).await;
    assert_error(&r, 413, "payload_too_large");
    // 1 MiB announced; the server stops reading after 64 KiB, so only that much is sent (sending
    // the rest to a server that will not read it only races its close against our read).
    let mib = json!({ "content": "x".repeat(1024 * 1024 - 14) }).to_string().into_bytes();
    assert_eq!(mib.len(), 1024 * 1024);
    let r = raw_http(node.addr, &head("Content-Length: 1048576\r\n"), &mib[..n]).await;
    assert_error(&r, 413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_with_the_envelope() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;

    assert_oversized_refused(&node, &msgs_path(&conv)).await;
    assert_oversized_refused(&node, "/api/chat/conversations").await;
    // Exactly at the limit is read (and then judged on content): a validation error, not 413.
    let mut at_limit = json!({ "content": "z".repeat(60 * 1024) }).to_string().into_bytes();
    at_limit.extend(std::iter::repeat_n(b' ', 64 * 1024 - at_limit.len()));
    assert_eq!(at_limit.len(), 64 * 1024);
    assert_validation(&alice.raw(Method::POST, &msgs_path(&conv), at_limit).await, "content");

    // The node is fine and nothing was stored.
    let health = request(&node.base, Method::GET, "/healthz", &[], None).await;
    assert_eq!(health.status, 200);
    bob.send(&conv, "fine").await;
    let h = data(&alice.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), vec![1]);
    assert_eq!(data(&alice.get("/api/chat/conversations").await, 200)["conversations"].as_array().unwrap().len(), 1);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_read_body_is_413_with_the_envelope() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;
    assert_oversized_refused(&node, &read_path(&conv)).await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_bodies_are_not_accepted_as_objects() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;
    alice.send(&conv, "one").await;

    let cases: Vec<(&Api, String, &[u8])> = vec![
        (&alice, "/api/chat/conversations".to_owned(), b"[\"carol\"]"),
        (&alice, msgs_path(&conv), b"[\"hi\"]"),
        (&alice, msgs_path(&conv), b"[\"hi\", \"image\", \"c1\"]"),
        (&bob, read_path(&conv), b"[1]"),
    ];
    let mut wrong = Vec::new();
    for (api, path, body) in cases {
        let r = api.raw(Method::POST, &path, body.to_vec()).await;
        if r.status != 400 || r.body["code"] != "validation" {
            wrong.push(format!("{path} {} -> {} {}", String::from_utf8_lossy(body), r.status, r.body));
        }
    }
    assert!(wrong.is_empty(), "array bodies accepted:\n{}", wrong.join("\n"));

    assert_eq!(data(&alice.get("/api/chat/conversations").await, 200)["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(seqs(&data(&alice.get(&msgs_path(&conv)).await, 200)["messages"]), vec![1]);
    assert_eq!(data(&bob.get("/api/chat/unread").await, 200)["total"], 1);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_envelopes() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    for p in [
        "/api/chat/nope",
        "/api/chat/conversations/65a1b2c3d4e5f60718293a4b",
        "/api/chat/conversations/x/y/z",
        "/nope",
        "/api",
    ] {
        let r = alice.get(p).await;
        assert_error(&r, 404, "not_found");
        // No route, so no token is looked at: the same 404 without one.
        let anon = request(&node.base, Method::GET, p, &[], None).await;
        assert_error(&anon, 404, "not_found");
    }
    // Wrong methods on known routes: 405 with the methods the route has, never a 500.
    for (m, p, allow) in [
        (Method::DELETE, "/api/chat/conversations".to_owned(), "GET,HEAD,POST"),
        (Method::PUT, "/api/chat/unread".to_owned(), "GET,HEAD"),
        (Method::POST, "/api/chat/unread".to_owned(), "GET,HEAD"),
        (Method::GET, "/api/chat/conversations/65a1b2c3d4e5f60718293a4b/read".to_owned(), "POST"),
        (Method::PATCH, "/healthz".to_owned(), "GET,HEAD"),
    ] {
        let r = alice.req(m.clone(), &p, None).await;
        assert_eq!(r.status, 405, "{m} {p}: {}", r.body);
        let got = r.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().replace(' ', "");
        assert_eq!(got, allow, "{m} {p}: Allow");
    }
    node.stop().await.unwrap();
}
