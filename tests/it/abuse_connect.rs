//! The connection throttle refuses at the Engine.IO handshake with HTTP 429 + `Retry-After`
//! (never a namespace `connect_error`), keyed by user when the handshake carries a valid token,
//! else by address; `X-Forwarded-For` counts only from `CHAT_TRUSTED_PROXIES`.

use serde_json::json;

use crate::{
    abuse_kit::Bystanders,
    harness::{Env, Sock, SockOpts, WAIT, token, unique},
};

const BUDGET: [&str; 4] = ["--rate-limit-connects", "3", "--rate-limit-connect-window-secs", "30"];

/// A polling handshake as a client opens it; returns the status and `Retry-After`.
async fn handshake(base: &str, query: &str, xff: Option<&str>) -> (u16, Option<u64>) {
    let mut r = reqwest::Client::new().get(format!("{base}/socket.io/?EIO=4&transport=polling{query}"));
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    let resp = r.send().await.expect("handshake request");
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (resp.status().as_u16(), retry)
}

#[tokio::test]
async fn over_budget_handshakes_get_429_with_retry_after_and_forged_headers_do_not_help() {
    let env = Env::embedded();
    let node = env.node_with("n1", &BUDGET).await;
    // The bystanders connect with their token in the query: keyed by user, not by address.
    let by = Bystanders::new(&node.base).await;
    for _ in 0..3 {
        assert_eq!(handshake(&node.base, "", None).await.0, 200);
    }
    let (status, retry) = handshake(&node.base, "", None).await;
    assert_eq!(status, 429);
    let retry = retry.expect("Retry-After");
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    // A forged X-Forwarded-For from an untrusted peer is ignored.
    for i in 0..4 {
        assert_eq!(handshake(&node.base, "", Some(&format!("10.9.9.{i}"))).await.0, 429, "forged header {i}");
    }
    // A user with a valid token has a budget of their own, whatever the address did.
    let t = token(&unique("nat-user"));
    for _ in 0..3 {
        assert_eq!(handshake(&node.base, &format!("&token={t}"), None).await.0, 200);
    }
    assert_eq!(handshake(&node.base, &format!("&token={t}"), None).await.0, 429);
    // A bad token is keyed by address (still exhausted).
    assert_eq!(handshake(&node.base, "&token=garbage", None).await.0, 429);
    // Requests of an existing session (`sid`) are never throttled: engineioxide answers them.
    let (status, _) = handshake(&node.base, "&sid=AAAAAAAAAAAAAAAAAAAAAA", None).await;
    assert_ne!(status, 429);
    by.still_fine("with one address over its connect budget").await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let env = Env::embedded();
    let mut args = BUDGET.to_vec();
    args.extend(["--trusted-proxies", "127.0.0.0/8"]);
    let node = env.node_with("n1", &args).await;
    for _ in 0..3 {
        assert_eq!(handshake(&node.base, "", Some("203.0.113.7")).await.0, 200);
    }
    assert_eq!(handshake(&node.base, "", Some("203.0.113.7")).await.0, 429);
    // Another client behind the same proxy has its own budget; what a client wrote to the left
    // of the address our proxy saw does not change its key.
    assert_eq!(handshake(&node.base, "", Some("203.0.113.8")).await.0, 200);
    assert_eq!(handshake(&node.base, "", Some("1.1.1.1, 203.0.113.7")).await.0, 429);
}

/// A throttled client gets in by itself: the handshake refusal is a transport error, which the
/// client's reconnection retries, unlike a namespace `connect_error`.
#[tokio::test]
async fn a_throttled_client_reconnects_by_itself() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limit-connects", "2", "--rate-limit-connect-window-secs", "2"]).await;
    let u = unique("phone");
    let t = token(&u);
    // Keyed by user (token in the query), as a mobile client behind a carrier NAT would be.
    let opts = || SockOpts { query_token: Some(t.clone()), reconnect: true, ..Default::default() };
    let first = Sock::try_connect(&node.base, opts()).await.expect("within budget");
    let _second = Sock::try_connect(&node.base, opts()).await.expect("within budget");
    let refused = Sock::try_connect(&node.base, opts()).await;
    assert!(refused.is_err(), "the third handshake within the window is refused");
    // The refusal is not a namespace refusal: no connect_error reached the app.
    if let Err(e) = &refused {
        assert!(e.starts_with("transport"), "refused at the transport, not the namespace: {e}");
    }
    // The connected client loses its transport (a binary event closes it) and its
    // reconnection gets back in once the budget refills.
    first.client.emit("x", tf_rust_socketio::Payload::Binary(vec![1u8].into(), None)).await.expect("emit");
    first.next("close").await;
    let (name, _) = first.next_of(&["connect"]).await;
    assert_eq!(name, "connect");
    let ack = tokio::time::timeout(WAIT, first.ack("get_online_status", json!({ "userIds": [u] }))).await;
    assert!(ack.is_ok(), "usable after the reconnect");
}
