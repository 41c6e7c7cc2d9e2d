//! Socket.IO contract: limits and transports.

use serde_json::json;
use tf_rust_socketio::Payload;

use crate::harness::*;
use crate::socket_util::*;

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
