//! The HTTP server's bounds over raw TCP (a real client never trickles its headers or sits
//! idle on purpose): header-read timeout, idle timeout, connection cap. Then session expiry:
//! a socket whose token runs out is told and its transport closed. And live delivery of a
//! retried send, and of a send in flight when the drain starts; the drain's closes spread over
//! its window.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use serde_json::json;

use crate::harness::{Api, Env, Sock, SockOpts, WAIT, jwt, ok, user};

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n";

/// Reads one HTTP/1.1 response (head + `content-length` body); `None` if the server closed.
async fn read_response(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
        }
        match tokio::time::timeout(WAIT, s.read(&mut chunk)).await.expect("no answer in time") {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server closes `s` (a read returns 0 or fails); returns how long it took.
async fn await_close(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut chunk)).await.expect("the server never closed the connection") {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

/// A connection that got one `200` for `/healthz` (retried while the cap refuses it, which
/// happens while connections of the node's readiness check are still being torn down).
async fn accepted(addr: std::net::SocketAddr) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(GET_HEALTHZ).await.expect("write");
        if let Some(head) = read_response(&mut s).await {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            return s;
        }
        assert!(Instant::now() < deadline, "never accepted under the cap");
        tokio::task::yield_now().await;
    }
}

/// Slowloris: a request head trickled one byte at a time is cut off once the header-read
/// timeout passes, while other clients are served.
#[tokio::test]
async fn trickled_headers_are_cut_off_after_the_header_timeout() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--header-read-timeout-secs", "1"]).await;
    let mut slow = TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\n").await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    // The attack itself: one header byte every 100 ms, never finishing the head.
    let trickle = tokio::spawn(async move {
        let start = Instant::now();
        let mut i = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let byte = if i % 20 == 19 { b"\r\nX-Pad: ".as_slice() } else { b"a".as_slice() };
            if wr.write_all(byte).await.is_err() {
                return start.elapsed();
            }
            i += 1;
        }
    });
    // Others are served meanwhile.
    let mut other = accepted(node.addr).await;
    assert!(!trickle.is_finished(), "the attack was cut off before others were served");
    let start = Instant::now();
    let mut chunk = [0u8; 256];
    let read = tokio::time::timeout(WAIT, rd.read(&mut chunk)).await.expect("the trickled request was never cut off");
    let n = read.unwrap_or(0);
    assert!(!String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"), "a trickled head was answered");
    let took = start.elapsed();
    // hyper answers a timed-out head with nothing or a 408; either way the connection ends.
    if n > 0 {
        assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 408"), "{:?}", &chunk[..n]);
    }
    assert!(took >= Duration::from_millis(700), "closed before the timeout: {took:?}");
    trickle.abort();
    // The node still serves: a connection made during the attack got its answer, a new one too.
    // (`other` itself is now past the same timeout between requests: hyper's header-read timer
    // also bounds a keep-alive connection's wait for its next request head.)
    let _ = await_close(&mut other).await;
    let _fresh = accepted(node.addr).await;
    node.stop().await.unwrap();
}

/// A keep-alive connection with nothing more to say is closed after the idle timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--idle-timeout-secs", "1"]).await;
    let mut s = accepted(node.addr).await;
    let idle = await_close(&mut s).await;
    assert!(idle >= Duration::from_millis(700), "closed before the idle timeout: {idle:?}");
    // A connection that keeps talking is not idle: three requests spread over 1.5 s.
    let mut busy = accepted(node.addr).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        busy.write_all(GET_HEALTHZ).await.unwrap();
        assert!(read_response(&mut busy).await.is_some(), "a talking connection was closed");
    }
    node.stop().await.unwrap();
}

/// With a cap of 2, a third connection is closed at once while the two others keep working.
#[tokio::test]
async fn the_connection_cap_refuses_one_more() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--max-connections", "2"]).await;
    let mut a = accepted(node.addr).await;
    let mut b = accepted(node.addr).await;
    let mut c = TcpStream::connect(node.addr).await.unwrap();
    let _ = c.write_all(GET_HEALTHZ).await;
    let mut chunk = [0u8; 64];
    let read = tokio::time::timeout(WAIT, c.read(&mut chunk)).await.expect("the over-cap connection stayed open");
    assert!(matches!(read, Ok(0) | Err(_)), "the third connection was served: {read:?}");
    for s in [&mut a, &mut b] {
        s.write_all(GET_HEALTHZ).await.unwrap();
        assert!(read_response(s).await.is_some_and(|h| h.starts_with("HTTP/1.1 200")), "a capped-in connection failed");
    }
    // A freed slot is taken again.
    drop(a);
    let _d = accepted(node.addr).await;
    node.stop().await.unwrap();
}

/// A socket authenticated with a token that expires in about `ttl` (no leeway on the node).
async fn short_lived(base: &str, id: &str, ttl: Duration, polling: bool) -> (Sock, u64) {
    let token = jwt().sign(&user(id), ttl).expect("sign");
    let exp = jobsphere_chat::auth::Jwt::from_secret(crate::harness::SECRET.as_bytes())
        .verify(&token)
        .expect("a fresh token")
        .expires_at
        .expect("exp");
    let opts = SockOpts { auth: Some(json!({ "token": token })), polling, ..Default::default() };
    (Sock::try_connect(base, opts).await.expect("connect"), exp)
}

/// Runs out a socket's token on `transport` and checks what it and a bystander see.
async fn expiry_closes_the_transport(polling: bool) {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--jwt-leeway-secs", "0"]).await;
    let base = node.base.clone();
    let bystander = Sock::connect(&base, "bystander").await;
    let (sock, exp) = short_lived(&base, "shortlived", Duration::from_secs(2), polling).await;
    // Told first, with the reason and when the token ran out; then the transport closes.
    let (name, told) = sock.next_of(&["session_expired", "close"]).await;
    assert_eq!(name, "session_expired", "closed before being told: {told}");
    assert_eq!(told["reason"], "token_expired", "{told}");
    let at = chrono::DateTime::parse_from_rfc3339(told["expiredAt"].as_str().expect("expiredAt")).expect("RFC 3339");
    assert_eq!(at.timestamp() as u64, exp, "{told}");
    assert!(jsonwebtoken::get_current_timestamp() > exp, "told before the token ran out");
    let why = sock.next("close").await;
    // A closed transport, which clients retry (a server `disconnect` would not be retried).
    assert_ne!(why.as_str(), Some("io server disconnect"), "{why}");
    if !polling {
        assert_eq!(why.as_str(), Some("transport close"), "{why}");
    }
    // The bystander's session is untouched.
    ok(&bystander.ack("get_online_status", json!({ "userIds": ["shortlived"] })).await);
    assert_eq!(bystander.count("session_expired").await, 0);
    assert_eq!(bystander.count("close").await, 0);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn session_expiry_tells_then_closes_a_websocket() {
    expiry_closes_the_transport(false).await;
}

#[tokio::test]
async fn session_expiry_tells_then_closes_a_polling_session() {
    expiry_closes_the_transport(true).await;
}

/// A retry with the same clientMessageId (the client was told `unavailable`, or its ack was
/// lost) is answered with the stored message and delivered again, so a first attempt that
/// failed after its commit still reaches the recipient; clients dedupe by `_id`.
#[tokio::test]
async fn a_dedup_retry_is_delivered_again() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "retrier").conversation_with("retried").await;
    let alice = Sock::connect(&node.base, "retrier").await;
    let bob = Sock::connect(&node.base, "retried").await;
    let send = json!({ "conversationId": conv, "content": "once", "clientMessageId": "retry-1" });
    let first = ok(&alice.ack("send_message", send.clone()).await)["message"].clone();
    assert_eq!(alice.next("message_delivered").await["message"]["_id"], first["_id"]);
    assert_eq!(bob.next("new_message").await["message"]["_id"], first["_id"]);
    let again = ok(&alice.ack("send_message", send).await)["message"].clone();
    assert_eq!((&again["_id"], &again["seq"]), (&first["_id"], &first["seq"]), "one stored message");
    assert_eq!(alice.next("message_delivered").await["message"]["_id"], first["_id"]);
    let redelivered = bob.next("new_message").await;
    assert_eq!(redelivered["message"]["_id"], first["_id"], "{redelivered}");
    node.stop().await.unwrap();
}

/// A send still running when its node drains (here: waiting for the store's write turn, held
/// by the test) is delivered: the drain closes the sender's transport, then waits for in-flight
/// events before it closes the fan-out, so the recipient on the other node gets `new_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_when_the_drain_starts_is_still_delivered() {
    let env = Env::cluster().await;
    let n1 = env.node("n1").await;
    let n2 = env.node("n2").await;
    let conv = Api::new(&n2.base, "drainer").conversation_with("drained").await;
    let alice = Sock::connect(&n1.base, "drainer").await;
    let bob = Sock::connect(&n2.base, "drained").await;

    // The store's write turn (two flocks beside the SQLite file): a writer holds `queue` while
    // it waits for `write`. Held here, n1's send stops before its commit.
    let lock = |suffix: &str| {
        let mut p = env.data_dir().join("chat.db").into_os_string();
        p.push(suffix);
        std::fs::File::options().write(true).open(p).expect("write-turn lock file")
    };
    let (write, queue) = (lock("-write.lock"), lock("-queue.lock"));
    write.lock().expect("take the write turn");
    let send = json!({ "conversationId": conv, "content": "in flight", "clientMessageId": "drain-1" });
    alice.emit("send_message", send).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match queue.try_lock() {
            Ok(()) => queue.unlock().expect("unlock"),
            Err(std::fs::TryLockError::WouldBlock) => break, // the writer is waiting for its turn
            Err(e) => panic!("queue lock: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the send never reached the store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stopping = tokio::spawn(n1.stop());
    let (name, why) = alice.next_of(&["close", "error"]).await;
    assert_eq!((name.as_str(), why.as_str()), ("close", Some("transport close")), "{why}");
    // The drain is past closing sockets and waits for the send: let it commit.
    write.unlock().expect("release the write turn");
    let got = bob.next("new_message").await;
    assert_eq!(
        (&got["message"]["content"], &got["message"]["clientMessageId"]),
        (&json!("in flight"), &json!("drain-1"))
    );
    stopping.await.expect("drain task").expect("n1 stops cleanly");
    n2.stop().await.unwrap();
}

/// The drain closes its sockets' transports one after the other over
/// `CHAT_DRAIN_CLOSE_WINDOW_SECS`, not all at once: the clients' `transport close` times span at
/// least half the window, and none comes after it (plus slack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_spreads_socket_closes_over_its_window() {
    const WINDOW: Duration = Duration::from_secs(2);
    let env = Env::embedded();
    let node = env.node_with("n1", &["--drain-close-window-secs", "2"]).await;
    let socks = futures::future::join_all((0..20).map(|i| {
        let base = node.base.clone();
        async move { Sock::connect(&base, &format!("spread-{i}")).await }
    }))
    .await;
    let t0 = tokio::time::Instant::now();
    let stopping = tokio::spawn(node.stop());
    let closes = futures::future::join_all(socks.iter().map(|s| async move {
        // (The Rust client may report the cut as an engine `error` first.)
        let why = s.next("close").await;
        assert_eq!(why.as_str(), Some("transport close"), "{why}");
        t0.elapsed()
    }))
    .await;
    let (first, last) = (closes.iter().min().copied().unwrap(), closes.iter().max().copied().unwrap());
    assert!(last - first >= WINDOW / 2, "closes from {first:?} to {last:?}: not spread over {WINDOW:?}");
    assert!(last <= WINDOW + Duration::from_secs(1), "the last close at {last:?}, after the window");
    stopping.await.expect("drain task").expect("stops cleanly");
}
