//! Every event and REST route has a budget by cost class (`CHAT_RATE_LIMITS`), typing is
//! coalesced, a user's sockets per node are capped; defaults leave normal bursts alone.

use serde_json::json;

use crate::{
    abuse_kit::Bystanders,
    harness::{Api, Env, Sock, SockOpts, err_code, ok, token, unique},
};

/// Each socket event kind over a budget of 3 per minute: the 4th is `rate_limited` with
/// `retryAfterMs`, for that user only.
#[tokio::test]
async fn every_event_kind_has_a_budget() {
    let env = Env::embedded();
    let limits = "typing=3/60s,receipt=3/60s,presence=3/60s,join=3/60s";
    let node = env.node_with("n1", &["--rate-limits", limits]).await;
    let by = Bystanders::new(&node.base).await;
    let (a, b) = (unique("mallory"), unique("peer"));
    let conv = Api::new(&node.base, &a).conversation_with(&b).await;
    let sock = Sock::connect(&node.base, &a).await;
    let c = json!({ "conversationId": conv });
    let cases = [
        ("typing_start", c.clone()),
        ("mark_as_read", c.clone()),
        ("get_online_status", json!({ "userIds": [b] })),
        ("join_conversation", c.clone()),
    ];
    for (event, payload) in cases {
        for _ in 0..3 {
            ok(&sock.ack(event, payload.clone()).await);
        }
        let ack = sock.ack(event, payload).await;
        err_code(&ack, "rate_limited");
        assert!(ack["retryAfterMs"].as_u64().unwrap() > 1000, "{event}: {ack}");
    }
    // typing_stop shares typing's budget, mark_as_delivered the receipts', leave the joins'.
    err_code(&sock.ack("typing_stop", c.clone()).await, "rate_limited");
    err_code(&sock.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 1 })).await, "rate_limited");
    err_code(&sock.ack("leave_conversation", c).await, "rate_limited");
    by.still_fine("with a user over every budget").await;
}

#[tokio::test]
async fn rest_reads_and_creates_have_budgets_answered_429_with_retry_after() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limits", "read=3/60s,create=2/60s,presence=1/60s"]).await;
    let by = Bystanders::new(&node.base).await;
    let api = Api::new(&node.base, &unique("mallory"));
    let conv = api.conversation_with(&unique("peer")).await;
    let routes = ["/api/chat/conversations", &format!("/api/chat/conversations/{conv}/messages"), "/api/chat/unread"];
    for r in routes {
        assert_eq!(api.get(r).await.status, 200, "{r}");
    }
    for r in routes {
        let resp = api.get(r).await;
        assert_eq!(resp.status, 429, "{r}: reads share one budget");
        assert_eq!(resp.body["code"], "rate_limited");
        let secs: u64 = resp.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    let r = api.post("/api/chat/conversations", json!({ "participantId": unique("other") })).await;
    assert_eq!(r.status, 201);
    let r = api.post("/api/chat/conversations", json!({ "participantId": unique("other") })).await;
    assert_eq!(r.status, 429, "create budget: {}", r.body);
    assert_eq!(api.get(&format!("/api/chat/users/status?ids={}", unique("x"))).await.status, 200);
    assert_eq!(api.get(&format!("/api/chat/users/status?ids={}", unique("x"))).await.status, 429);
    by.still_fine("with a REST user over its budgets").await;
}

/// The defaults never meet a normal burst: twenty identical creates at once are one
/// conversation, none refused.
#[tokio::test]
async fn twenty_concurrent_identical_creates_are_one_conversation() {
    let env = Env::embedded();
    // The defaults, not the harness' unlimited budgets.
    let node = env.node_with("n1", &["--rate-limits", ""]).await;
    let (a, b) = (unique("alice"), unique("bob"));
    let api = Api::new(&node.base, &a);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, b) = (api.clone(), b.clone());
            tokio::spawn(async move { api.post("/api/chat/conversations", json!({ "participantId": b })).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.status == 200 || r.status == 201, "{} {}", r.status, r.body);
        ids.insert(r.body["data"]["_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
}

/// A `typing_start` while already typing is not broadcast again.
#[tokio::test]
async fn typing_is_coalesced() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--typing-expiry-ms", "300"]).await;
    let (a, b) = (unique("alice"), unique("bob"));
    let conv = Api::new(&node.base, &a).conversation_with(&b).await;
    let alice = Sock::connect(&node.base, &a).await;
    let bob = Sock::connect(&node.base, &b).await;
    ok(&bob.ack("join_conversation", json!({ "conversationId": conv })).await);
    for _ in 0..30 {
        ok(&alice.ack("typing_start", json!({ "conversationId": conv })).await);
    }
    // The expiry after the last start ends it: everything bob will get has arrived by then.
    let t = bob.next("user_typing").await;
    assert_eq!(t["isTyping"], true);
    let t = bob.next("user_typing").await;
    assert_eq!(t["isTyping"], false);
    assert_eq!(bob.count("user_typing").await, 0, "one start broadcast for 30 typing_start");
}

#[tokio::test]
async fn sockets_per_user_are_capped_with_a_clear_reason() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let by = Bystanders::new(&node.base).await;
    let a = unique("mallory");
    let mut socks = Vec::new();
    for _ in 0..jobsphere_chat::limits::MAX_SOCKETS_PER_USER {
        socks.push(Sock::connect(&node.base, &a).await);
    }
    let opts = SockOpts { auth: Some(json!({ "token": token(&a) })), ..Default::default() };
    let e = Sock::try_connect(&node.base, opts).await.err().expect("one socket too many is refused");
    assert!(e.contains("too_many_sockets"), "{e}");
    // One closes: the next gets in.
    socks.pop().unwrap().disconnect().await;
    let deadline = tokio::time::Instant::now() + crate::harness::WAIT;
    loop {
        let opts = SockOpts { auth: Some(json!({ "token": token(&a) })), ..Default::default() };
        if Sock::try_connect(&node.base, opts).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a freed place is never given back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    by.still_fine("with a user at its socket cap").await;
}
