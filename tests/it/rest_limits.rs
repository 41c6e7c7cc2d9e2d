//! REST API: rate limit and health endpoints.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_over_the_budget_are_429_with_retry_after() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limit-messages", "5", "--rate-limit-window-secs", "60"]).await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;
    for i in 0..5 {
        alice.send(&conv, &format!("m{i}")).await;
    }
    let r = alice.post(&msgs_path(&conv), json!({ "content": "one too many" })).await;
    assert_error(&r, 429, "rate_limited");
    let ra = r.headers.get("retry-after").unwrap_or_else(|| panic!("Retry-After missing: {:?}", r.headers));
    let secs: u64 = ra.to_str().unwrap().trim().parse().unwrap_or_else(|_| panic!("Retry-After not seconds: {ra:?}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    // Still limited on the next try; and the refused sends were not stored.
    assert_error(&alice.post(&msgs_path(&conv), json!({ "content": "again" })).await, 429, "rate_limited");
    let other = alice.conversation_with("carol").await;
    assert_error(&alice.post(&msgs_path(&other), json!({ "content": "elsewhere" })).await, 429, "rate_limited");
    // Another user is not limited, in the very same conversation.
    for i in 0..5 {
        bob.send(&conv, &format!("b{i}")).await;
    }
    let h = data(&bob.get(&msgs_path(&conv)).await, 200);
    assert_eq!(seqs(&h["messages"]), (1..=10).collect::<Vec<_>>());
    assert!(h["messages"].as_array().unwrap().iter().all(|m| m["content"] != "one too many"));
    // Reading is not rate limited.
    data(&alice.get("/api/chat/conversations").await, 200);
    data(&alice.post(&read_path(&conv), json!({})).await, 200);
    node.stop().await.unwrap();
}

/// A client that waits the Retry-After it was given gets its send in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_after_retry_after_is_accepted() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limit-messages", "2", "--rate-limit-window-secs", "2"]).await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;
    for i in 0..2 {
        alice.send(&conv, &format!("m{i}")).await;
    }
    let r = alice.post(&msgs_path(&conv), json!({ "content": "too soon" })).await;
    assert_error(&r, 429, "rate_limited");
    let ra = r.headers.get("retry-after").unwrap_or_else(|| panic!("Retry-After missing: {:?}", r.headers));
    let secs: u64 = ra.to_str().unwrap().trim().parse().unwrap_or_else(|_| panic!("Retry-After not seconds: {ra:?}"));
    assert!((1..=2).contains(&secs), "Retry-After {secs} for a 2 s window");
    // The scenario: the client waits as told.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let m = alice.send(&conv, "after Retry-After").await;
    assert_eq!(m["seq"], 3, "{m}");
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let r = request(&node.base, Method::GET, "/healthz", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    // No token needed, and a bad one does not matter.
    let r = request(&node.base, Method::GET, "/healthz", &[("authorization", "Bearer garbage")], None).await;
    assert_eq!(r.status, 200);

    let r = request(&node.base, Method::GET, "/readyz", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");
    let checks = r.body["checks"].as_object().unwrap_or_else(|| panic!("checks object: {}", r.body));
    assert_eq!(checks.get("store"), Some(&json!(true)), "{}", r.body);
    assert_eq!(checks.get("draining"), Some(&json!(false)), "{}", r.body);
    assert!(checks.get("redis").is_none_or(|v| v.is_null() || v == &json!(true)), "{}", r.body);
    node.stop().await.unwrap();
}
