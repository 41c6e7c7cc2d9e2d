//! Socket.IO contract: connection auth.

use futures::FutureExt;
use serde_json::{Value, json};
use tf_rust_socketio::{Event, Payload, TransportType, asynchronous::ClientBuilder};

use crate::harness::*;
use crate::socket_util::*;

// ---------------------------------------------------------------- auth (§3)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_bad_tokens_with_unauthorized() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let now = now_secs();
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("missing token", None),
        ("empty auth object", Some(json!({}))),
        ("garbage", Some(json!({ "token": "not-a-jwt" }))),
        ("expired", Some(json!({ "token": mt_token(json!({ "userId": "alice", "exp": now - 3600 }), SECRET) }))),
        (
            "wrong secret",
            Some(
                json!({ "token": mt_token(json!({ "userId": "alice", "exp": now + 3600 }), "some-other-secret-0123456789abcdef") }),
            ),
        ),
        ("no exp claim", Some(json!({ "token": mt_token(json!({ "userId": "alice" }), SECRET) }))),
        ("no user claim", Some(json!({ "token": mt_token(json!({ "exp": now + 3600 }), SECRET) }))),
    ];
    for (what, auth) in cases {
        let res = Sock::try_connect(&node.base, SockOpts { auth, ..Default::default() }).await;
        match res {
            Ok(_) => panic!("{what}: connection was accepted"),
            Err(e) => assert!(e.contains("unauthorized"), "{what}: connect_error should say unauthorized: {e}"),
        }
    }
    // Garbage in the query parameter is refused too.
    let res =
        Sock::try_connect(&node.base, SockOpts { query_token: Some("garbage".into()), ..Default::default() }).await;
    assert!(res.as_ref().err().is_some_and(|e| e.contains("unauthorized")), "query garbage: {:?}", res.err());

    // A token we minted ourselves with the right secret and `sub` works.
    let sub = mt_token(json!({ "sub": "alice", "exp": now + 3600, "role": "contractor" }), SECRET);
    let s = Sock::try_connect(&node.base, SockOpts { auth: Some(json!({ "token": sub })), ..Default::default() })
        .await
        .expect("sub token accepted");
    ok(&s.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    // The refused attempts did not break the node.
    assert_eq!(Api::with_token(&node.base, None).get("/healthz").await.status, 200);
    s.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_token_in_query_auth_payload_and_header() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;

    let via_query = Sock::try_connect(&node.base, SockOpts { query_token: Some(token("alice")), ..Default::default() })
        .await
        .expect("query token accepted");
    let via_auth =
        Sock::try_connect(&node.base, SockOpts { auth: Some(json!({ "token": token("bob") })), ..Default::default() })
            .await
            .expect("auth payload accepted");
    // The identity comes from the token: alice (query) can send into her conversation and bob
    // (auth payload) receives it as the receiver.
    let msg = send(&via_query, &conv, "hello via query token", "q1").await;
    assert_eq!(msg["senderId"], "alice");
    assert_eq!(msg["receiverId"], "bob");
    assert_eq!(via_auth.next("new_message").await["message"]["_id"], msg["_id"]);

    // `Authorization: Bearer` header on the handshake.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let (tx1, tx2) = (tx.clone(), tx);
    let client = ClientBuilder::new(node.base.clone())
        .reconnect(false)
        .transport_type(TransportType::Websocket)
        .opening_header("Authorization", format!("Bearer {}", token("bob")))
        .on(Event::Connect, move |_p: Payload, _c| {
            let _ = tx1.send("connect");
            async {}.boxed()
        })
        .on(Event::Error, move |_p: Payload, _c| {
            let _ = tx2.send("error");
            async {}.boxed()
        })
        .connect()
        .await
        .expect("transport");
    let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("connect or error").expect("channel");
    assert_eq!(first, "connect", "Authorization header should be accepted");
    let _ = client.disconnect().await;
    via_query.disconnect().await;
    via_auth.disconnect().await;
    node.stop().await.unwrap();
}
