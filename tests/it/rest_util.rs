//! REST API against a real node over TCP (docs/rest.md: auth, routes and error envelope, data
//! shapes, §7 limits). Every test starts its own embedded node.

use std::{net::SocketAddr, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// helpers

/// Asserts the error envelope `{status:"error", code, message, data:null}` with this HTTP status.
#[track_caller]
pub(crate) fn assert_error(r: &Resp, status: u16, code: &str) {
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
pub(crate) fn assert_validation(r: &Resp, field: &str) {
    assert_error(r, 400, "validation");
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(field), "validation message should name {field:?}: {}", r.body);
}

/// Asserts the success envelope with this HTTP status and returns `data`.
#[track_caller]
pub(crate) fn data(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {} {}", r.status, r.body);
    assert_eq!(r.body["status"], "success", "envelope status in {}", r.body);
    assert!(r.body["message"].is_string(), "message must be a string: {}", r.body);
    r.body["data"].clone()
}

/// A request with exactly these headers (no harness defaults).
pub(crate) async fn request(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
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
pub(crate) async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
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

pub(crate) fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs arbitrary claims with HS256 and `secret`.
pub(crate) fn sign_claims(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("encode")
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
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

pub(crate) fn msgs_path(conv: &str) -> String {
    format!("/api/chat/conversations/{conv}/messages")
}

pub(crate) fn read_path(conv: &str) -> String {
    format!("/api/chat/conversations/{conv}/read")
}

pub(crate) fn seqs(messages: &Value) -> Vec<i64> {
    messages.as_array().expect("messages array").iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 3339 UTC with exactly three fractional digits and `Z`.
#[track_caller]
pub(crate) fn assert_millis_utc(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp must be a string: {v}"));
    assert_eq!(s.len(), 24, "expected YYYY-MM-DDTHH:MM:SS.mmmZ, got {s}");
    assert!(s.ends_with('Z') && &s[19..20] == "." && &s[10..11] == "T", "bad timestamp shape {s}");
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).with_timezone(&Utc)
}

pub(crate) fn find_conv<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["conversations"]
        .as_array()
        .expect("conversations array")
        .iter()
        .find(|c| c["_id"] == id)
        .unwrap_or_else(|| panic!("conversation {id} not in {list}"))
}

/// Waits until wall-clock milliseconds pass `ms` (so the next write gets a later timestamp).
pub(crate) async fn after_millis(ms: i64) {
    while Utc::now().timestamp_millis() <= ms {
        tokio::task::yield_now().await;
    }
}

/// Polls `GET /api/chat/users/status` until `pred` holds for `user` (bounded by WAIT).
pub(crate) async fn wait_status(api: &Api, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
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
