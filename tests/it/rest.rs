//! REST API against a real node over TCP (docs/rest.md: auth, routes and error envelope, data
//! shapes, §7 limits). Every test starts its own embedded node.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// helpers

/// Asserts the error envelope `{status:"error", code, message, data:null}` with this HTTP status.
#[track_caller]
fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}, got {} {}", r.status, r.body);
    assert_eq!(r.body["status"], "error", "envelope status in {}", r.body);
    assert_eq!(r.body["code"], code, "code in {}", r.body);
    let msg = r.body["message"].as_str().unwrap_or_else(|| panic!("message must be a string: {}", r.body));
    assert!(!msg.is_empty(), "empty message in {}", r.body);
    let obj = r.body.as_object().unwrap_or_else(|| panic!("body must be an object: {}", r.body));
    assert!(obj.contains_key("data") && obj["data"].is_null(), "data must be present and null: {}", r.body);
    // Nothing internal leaks.
    let text = r.body.to_string().to_lowercase();
    for leak in ["panicked", "stack backtrace", "rusqlite", "sqlite error", "src/"] {
        assert!(!text.contains(leak), "internal detail {leak:?} leaked: {}", r.body);
    }
}

/// A 400 `validation` error whose message names `field`.
#[track_caller]
fn assert_validation(r: &Resp, field: &str) {
    assert_error(r, 400, "validation");
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(field), "validation message should name {field:?}: {}", r.body);
}

/// Asserts the success envelope with this HTTP status and returns `data`.
#[track_caller]
fn data(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {} {}", r.status, r.body);
    assert_eq!(r.body["status"], "success", "envelope status in {}", r.body);
    assert!(r.body["message"].is_string(), "message must be a string: {}", r.body);
    r.body["data"].clone()
}

/// A request with exactly these headers (no harness defaults).
async fn request(base: &str, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
    let mut r = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let resp = r.send().await.expect("http request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers }
}

/// One HTTP/1.1 exchange on a fresh TCP connection: writes `head` (request line and headers,
/// without the final blank line) and `body`, then reads a `Content-Length`-framed response.
/// Needed where reqwest would stream a whole oversized body the server rightly stops reading.
async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes()).await.expect("write head");
        // The server may answer and close before reading everything: that is fine.
        let _ = s.write_all(body).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                    .map(|(_, v)| v.trim().parse::<usize>().expect("content-length"));
                if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                    return (head, buf[end + 4..end + 4 + len.unwrap_or(0)].to_vec());
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
            panic!("connection closed before a complete response head: {:?}", String::from_utf8_lossy(&buf))
        });
        (String::from_utf8_lossy(&buf[..end]).to_string(), buf[end + 4..].to_vec())
    };
    let (head, body) = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no response in time to {head:?} with {} body bytes", body.len()));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let mut headers = reqwest::header::HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    let text = String::from_utf8_lossy(&body).to_string();
    Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs arbitrary claims with HS256 and `secret`.
fn sign_claims(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("encode")
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn msgs_path(conv: &str) -> String {
    format!("/api/chat/conversations/{conv}/messages")
}

fn read_path(conv: &str) -> String {
    format!("/api/chat/conversations/{conv}/read")
}

fn seqs(messages: &Value) -> Vec<i64> {
    messages.as_array().expect("messages array").iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 3339 UTC with exactly three fractional digits and `Z`.
#[track_caller]
fn assert_millis_utc(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp must be a string: {v}"));
    assert_eq!(s.len(), 24, "expected YYYY-MM-DDTHH:MM:SS.mmmZ, got {s}");
    assert!(s.ends_with('Z') && &s[19..20] == "." && &s[10..11] == "T", "bad timestamp shape {s}");
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).with_timezone(&Utc)
}

fn find_conv<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["conversations"]
        .as_array()
        .expect("conversations array")
        .iter()
        .find(|c| c["_id"] == id)
        .unwrap_or_else(|| panic!("conversation {id} not in {list}"))
}

/// Waits until wall-clock milliseconds pass `ms` (so the next write gets a later timestamp).
async fn after_millis(ms: i64) {
    while Utc::now().timestamp_millis() <= ms {
        tokio::task::yield_now().await;
    }
}

/// Polls `GET /api/chat/users/status` until `pred` holds for `user` (bounded by WAIT).
async fn wait_status(api: &Api, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = api.get(&format!("/api/chat/users/status?ids={user}")).await;
        let d = data(&r, 200);
        let s = d["statuses"].as_array().expect("statuses").iter().find(|s| s["userId"] == user).cloned();
        if let Some(s) = s
            && pred(&s)
        {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "status of {user} never matched; last {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// auth (docs/)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_requires_a_token() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let anon = Api::with_token(&node.base, None);
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/chat/conversations".into(), None),
        (Method::POST, "/api/chat/conversations".into(), Some(json!({ "participantId": "bob" }))),
        (Method::GET, msgs_path(&conv), None),
        (Method::POST, msgs_path(&conv), Some(json!({ "content": "hi" }))),
        (Method::POST, read_path(&conv), None),
        (Method::GET, "/api/chat/unread".into(), None),
        (Method::GET, "/api/chat/users/status?ids=alice".into(), None),
    ];
    for (m, path, body) in routes {
        let r = anon.req(m.clone(), &path, body).await;
        assert_error(&r, 401, "unauthorized");
        assert!(!r.body.to_string().contains("Bearer "), "{m} {path}: no token echo: {}", r.body);
    }
    // Nothing was sent by the anonymous POSTs.
    let h = data(&Api::new(&node.base, "alice").get(&msgs_path(&conv)).await, 200);
    assert_eq!(h["messages"], json!([]));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_with_the_error_envelope() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let path = "/api/chat/conversations";
    let now = now_secs();
    let good = token("alice");

    // Control: the right token works.
    data(&Api::new(&node.base, "alice").get(path).await, 200);

    let expired = sign_claims(&json!({ "userId": "alice", "role": "customer", "exp": now - 3600 }), SECRET.as_bytes());
    let no_exp = sign_claims(&json!({ "userId": "alice", "role": "customer" }), SECRET.as_bytes());
    let wrong_secret = sign_claims(
        &json!({ "userId": "alice", "role": "customer", "exp": now + 3600 }),
        b"some-other-secret-0123456789abcdef",
    );
    let no_user = sign_claims(&json!({ "role": "customer", "exp": now + 3600 }), SECRET.as_bytes());
    let bad_user = sign_claims(&json!({ "userId": "al ice", "exp": now + 3600 }), SECRET.as_bytes());
    let bad_role = sign_claims(&json!({ "userId": "alice", "role": "root", "exp": now + 3600 }), SECRET.as_bytes());
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({ "userId": "alice", "exp": now + 3600 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(json!({ "userId": "alice", "exp": now + 3600 }).to_string().as_bytes())
    );
    // bob's claims with alice's signature.
    let tampered = {
        let a: Vec<&str> = good.split('.').collect();
        let bob = token("bob");
        let b: Vec<&str> = bob.split('.').collect();
        format!("{}.{}.{}", a[0], b[1], a[2])
    };

    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing header", vec![]),
        ("empty header", vec![("authorization", String::new())]),
        ("Bearer with nothing", vec![("authorization", "Bearer ".into())]),
        ("garbage", vec![("authorization", bearer("garbage"))]),
        ("three garbage parts", vec![("authorization", bearer("a.b.c"))]),
        ("expired", vec![("authorization", bearer(&expired))]),
        ("no exp", vec![("authorization", bearer(&no_exp))]),
        ("wrong secret", vec![("authorization", bearer(&wrong_secret))]),
        ("no userId or sub", vec![("authorization", bearer(&no_user))]),
        ("invalid userId", vec![("authorization", bearer(&bad_user))]),
        ("unknown role", vec![("authorization", bearer(&bad_role))]),
        ("HS512", vec![("authorization", bearer(&hs512))]),
        ("alg none", vec![("authorization", bearer(&alg_none))]),
        ("tampered payload", vec![("authorization", bearer(&tampered))]),
        ("no Bearer scheme", vec![("authorization", good.clone())]),
        ("Basic scheme", vec![("authorization", format!("Basic {good}"))]),
        ("token as query only", vec![]),
    ];
    for (name, headers) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = if name == "token as query only" { format!("{path}?token={good}") } else { path.to_owned() };
        let r = request(&node.base, Method::GET, &p, &hs, None).await;
        assert_eq!(r.status, 401, "{name}: {} {}", r.status, r.body);
        assert_error(&r, 401, "unauthorized");
    }

    // `sub` is accepted in place of `userId`.
    let sub = sign_claims(&json!({ "sub": "alice", "exp": now + 3600 }), SECRET.as_bytes());
    data(&Api::with_token(&node.base, Some(sub)).get(path).await, 200);
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// POST /api/chat/conversations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conversation_is_201_then_200_with_participant_objects() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    // bob registers (his token's claims become his user record) and has a live socket.
    data(&bob.get("/api/chat/unread").await, 200);
    let bob_sock = Sock::connect(&node.base, "bob").await;
    wait_status(&alice, "bob", |s| s["online"] == true).await;

    let r = alice.post("/api/chat/conversations", json!({ "participantId": "bob" })).await;
    let c = data(&r, 201);
    let id = c["_id"].as_str().expect("_id").to_owned();
    assert_eq!(id.len(), 24, "ObjectId-shaped id: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c["jobId"], Value::Null);
    assert_eq!(c["lastMessage"], Value::Null);
    assert_eq!(c["unreadCount"], 0);
    assert_millis_utc(&c["createdAt"]);
    assert_millis_utc(&c["updatedAt"]);
    let parts = c["participants"].as_array().expect("participants array");
    assert_eq!(parts.len(), 2, "{c}");
    let ids: HashSet<&str> = parts.iter().map(|p| p["_id"].as_str().expect("participant _id")).collect();
    assert_eq!(ids, HashSet::from(["alice", "bob"]));
    for p in parts {
        for k in ["_id", "name", "avatar", "role", "online"] {
            assert!(p.as_object().unwrap().contains_key(k), "participant lacks {k}: {p}");
        }
        let who = p["_id"].as_str().unwrap();
        assert_eq!(p["name"], format!("User {who}"), "{p}");
        assert_eq!(p["role"], "customer", "{p}");
        assert_eq!(p["online"], who == "bob", "only bob has a socket: {p}");
    }

    // Again, from either side: the same conversation, 200.
    let again = data(&alice.post("/api/chat/conversations", json!({ "participantId": "bob" })).await, 200);
    assert_eq!(again["_id"], id);
    let reverse = data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice" })).await, 200);
    assert_eq!(reverse["_id"], id);
    let explicit_null =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": null })).await, 200);
    assert_eq!(explicit_null["_id"], id);

    // Another job: another conversation; repeats find it.
    let job =
        data(&alice.post("/api/chat/conversations", json!({ "participantId": "bob", "jobId": "job-42" })).await, 201);
    assert_ne!(job["_id"], id);
    assert_eq!(job["jobId"], "job-42");
    let job2 =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": "job-42" })).await, 200);
    assert_eq!(job2["_id"], job["_id"]);
    let other_job =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": "job-43" })).await, 201);
    assert_ne!(other_job["_id"], job["_id"]);
    assert_ne!(other_job["_id"], id);

    // A user the server never saw still gets an object participant.
    let ghost = data(&alice.post("/api/chat/conversations", json!({ "participantId": "ghost-7" })).await, 201);
    let g = ghost["participants"].as_array().unwrap().iter().find(|p| p["_id"] == "ghost-7").cloned().unwrap();
    assert!(g["name"].is_string(), "{g}");
    assert_eq!(g["online"], false);

    bob_sock.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conversation_rejects_bad_input() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let p = "/api/chat/conversations";

    assert_validation(&alice.post(p, json!({ "participantId": "alice" })).await, "participantId");
    for bad in ["a b", "", " ", "bob\n", "{\"$gt\":\"\"}", "ü-user", "a/b", "a#b"] {
        assert_validation(&alice.post(p, json!({ "participantId": bad })).await, "participantId");
    }
    assert_validation(&alice.post(p, json!({ "participantId": "x".repeat(200) })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": "x".repeat(129) })).await, "participantId");
    // The upper bound itself is fine.
    data(&alice.post(p, json!({ "participantId": "y".repeat(128) })).await, 201);

    assert_validation(&alice.post(p, json!({})).await, "participantId");
    assert_validation(&alice.post(p, json!({ "jobId": "j1" })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": 5 })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": null })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": ["bob"] })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": { "$ne": null } })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "jobId": "a b" })).await, "jobId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "jobId": 7 })).await, "jobId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "isAdmin": true })).await, "isAdmin");
    assert_error(&alice.raw(Method::POST, p, b"{\"participantId\":".to_vec()).await, 400, "validation");
    assert_error(&alice.raw(Method::POST, p, Vec::new()).await, 400, "validation");

    // None of that created anything.
    let list = data(&alice.get(p).await, 200);
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "only the 128-char one: {list}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_from_both_sides_yield_one_conversation() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (api, other) = if i % 2 == 0 { (alice.clone(), "bob") } else { (bob.clone(), "alice") };
        tasks.push(tokio::spawn(async move {
            let r = api.post("/api/chat/conversations", json!({ "participantId": other, "jobId": "job-c" })).await;
            (r.status, r.body)
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert!(status == 200 || status == 201, "{status} {body}");
        if status == 201 {
            created += 1;
        }
        ids.insert(body["data"]["_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one conversation, got {ids:?}");
    assert_eq!(created, 1, "exactly one 201");
    for api in [&alice, &bob] {
        let list = data(&api.get("/api/chat/conversations").await, 200);
        let convs = list["conversations"].as_array().unwrap();
        assert_eq!(convs.len(), 1, "{list}");
        assert!(ids.contains(convs[0]["_id"].as_str().unwrap()));
    }
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// GET /api/chat/conversations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_by_activity_with_my_unread_and_last_message() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let carol = Api::new(&node.base, "carol");

    assert_eq!(
        data(&alice.get("/api/chat/conversations").await, 200),
        json!({ "conversations": [], "nextCursor": null })
    );

    let c_bob = alice.conversation_with("bob").await;
    let c_carol = alice.conversation_with("carol").await;
    let c_dave = data(&alice.post("/api/chat/conversations", json!({ "participantId": "dave" })).await, 201)["_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Newest created first while nothing was sent.
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_dave.as_str(), c_carol.as_str(), c_bob.as_str()]);

    // Activity in the oldest conversation moves it to the top.
    let latest = assert_millis_utc(&find_conv(&list, &c_dave)["updatedAt"]);
    after_millis(latest.timestamp_millis()).await;
    bob.send(&c_bob, "one").await;
    let m2 = bob.send(&c_bob, "two").await;
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_bob.as_str(), c_dave.as_str(), c_carol.as_str()]);
    let top = find_conv(&list, &c_bob);
    assert_eq!(top["unreadCount"], 2, "alice's own count: {top}");
    assert_eq!(top["lastMessage"]["_id"], m2["_id"]);
    assert_eq!(top["lastMessage"]["content"], "two");
    assert_eq!(top["lastMessage"]["seq"], 2);
    assert_eq!(top["updatedAt"], m2["createdAt"], "activity time is the last message's: {top}");
    assert_eq!(find_conv(&list, &c_carol)["unreadCount"], 0);
    assert_eq!(find_conv(&list, &c_carol)["lastMessage"], Value::Null);

    // The sender's own count is 0; the same conversation seen by bob.
    let bl = data(&bob.get("/api/chat/conversations").await, 200);
    assert_eq!(bl["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(find_conv(&bl, &c_bob)["unreadCount"], 0);
    assert_eq!(find_conv(&bl, &c_bob)["lastMessage"]["_id"], m2["_id"]);

    // Then carol's conversation becomes the most recent.
    let top_ms = assert_millis_utc(&top["updatedAt"]).timestamp_millis();
    after_millis(top_ms).await;
    let m3 = carol.send(&c_carol, "hey").await;
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_carol.as_str(), c_bob.as_str(), c_dave.as_str()]);
    assert_eq!(find_conv(&list, &c_carol)["lastMessage"]["_id"], m3["_id"]);
    assert_eq!(find_conv(&list, &c_carol)["unreadCount"], 1);
    assert_eq!(find_conv(&list, &c_bob)["unreadCount"], 2);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paging_walks_every_conversation_once() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let mut all = HashSet::new();
    for i in 0..7 {
        let id = alice.conversation_with(&format!("peer{i}")).await;
        if i % 3 == 0 {
            Api::new(&node.base, &format!("peer{i}")).send(&id, "ping").await;
        }
        all.insert(id);
    }
    for limit in [1usize, 2, 3, 7, 100] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut last_key: Option<(DateTime<Utc>, String)> = None;
        for page in 0.. {
            assert!(page <= 8, "paging does not end (limit {limit})");
            let path = match &cursor {
                Some(c) => format!("/api/chat/conversations?limit={limit}&cursor={}", enc(c)),
                None => format!("/api/chat/conversations?limit={limit}"),
            };
            let d = data(&alice.get(&path).await, 200);
            let convs = d["conversations"].as_array().unwrap();
            assert!(convs.len() <= limit, "page longer than limit {limit}: {d}");
            for c in convs {
                let key = (assert_millis_utc(&c["updatedAt"]), c["_id"].as_str().unwrap().to_owned());
                if let Some(prev) = &last_key {
                    assert!(
                        &key < prev,
                        "not strictly descending by (updatedAt, _id) across pages: {key:?} after {prev:?}"
                    );
                }
                last_key = Some(key);
                seen.push(c["_id"].as_str().unwrap().to_owned());
            }
            match d["nextCursor"].as_str() {
                Some(c) => {
                    assert_eq!(convs.len(), limit, "a cursor only after a full page");
                    cursor = Some(c.to_owned());
                }
                None => {
                    assert!(d["nextCursor"].is_null(), "{d}");
                    break;
                }
            }
        }
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}: {seen:?}");
        assert_eq!(unique, all, "limit {limit} missed conversations");
    }
    // Default limit returns everything here and no cursor.
    let d = data(&alice.get("/api/chat/conversations").await, 200);
    assert_eq!(d["conversations"].as_array().unwrap().len(), 7);
    assert_eq!(d["nextCursor"], Value::Null);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rejects_bad_limit_and_cursor() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    alice.conversation_with("bob").await;
    for q in ["limit=0", "limit=1000", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "limit=99999999999999999999"]
    {
        let r = alice.get(&format!("/api/chat/conversations?{q}")).await;
        assert_validation(&r, "limit");
    }
    for c in [
        "garbage",
        "123",
        "_",
        "abc_65a1b2c3d4e5f60718293a4b",
        "1_short",
        "1_{\"$gt\":\"\"}",
        "1_zza1b2c3d4e5f60718293a4b",
    ] {
        let r = alice.get(&format!("/api/chat/conversations?cursor={}", enc(c))).await;
        assert_validation(&r, "cursor");
    }
    // Bounds are accepted; an empty cursor means the first page.
    data(&alice.get("/api/chat/conversations?limit=1").await, 200);
    data(&alice.get("/api/chat/conversations?limit=100").await, 200);
    let d = data(&alice.get("/api/chat/conversations?cursor=").await, 200);
    assert_eq!(d["conversations"].as_array().unwrap().len(), 1);
    node.stop().await.unwrap();
}

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
