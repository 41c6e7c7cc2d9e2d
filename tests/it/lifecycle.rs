//! A node's life outside the chat contract: the configuration it is started with, the secret
//! it makes for itself, CORS, the `migrate` command, readiness while draining and probes while
//! Redis hangs (docs/operations.md).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::*;

/// The test binary itself runs one embedded test with a hostile environment: a `REDIS_URL` and
/// a `MONGODB_URI` on closed ports and invalid `JWT_SECRET` / `CHAT_*` values. Had any of it
/// reached the node, it would never have become ready (or refused its configuration).
#[test]
fn an_embedded_test_ignores_the_callers_environment() {
    let closed = free_port();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "smoke::socket_send_reaches_both_users", "--test-threads", "1"])
        .env("REDIS_URL", format!("redis://127.0.0.1:{closed}"))
        .env("MONGODB_URI", format!("mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=200"))
        .env("JWT_SECRET", "short")
        .env("CHAT_RATE_LIMITS", "typo=1/1s")
        .env("CHAT_DRAIN_DELAY_SECS", "3600")
        .env_remove(TEST_MONGODB_URI)
        .stdin(Stdio::null())
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the embedded test failed under a hostile environment:\n{stdout}\n{stderr}");
    // It ran (a filter that matched nothing would pass too).
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Embedded mode without `JWT_SECRET`: the node makes a secret in its data dir, verifies tokens
/// signed with it (and no others), and keeps it across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_start_without_a_jwt_secret_makes_one_and_keeps_it() {
    let env = Env::embedded();
    let node = env.node_without("n1", &["--jwt-secret"], &[]).await;
    let file = env.data_dir().join("jwt-secret");
    let secret = std::fs::read_to_string(&file).expect("the node wrote data-dir/jwt-secret");
    assert!(secret.trim().len() >= 32, "a real secret: {} bytes", secret.trim().len());
    let own = jobsphere_chat::auth::Jwt::from_secret(secret.trim().as_bytes())
        .sign(&user("alice"), Duration::from_secs(600))
        .expect("sign");
    let api = Api::with_token(&node.base, Some(own.clone()));
    assert_eq!(api.get("/api/chat/conversations").await.status, 200, "a token of the generated secret is accepted");
    let foreign = Api::new(&node.base, "alice"); // signed with the harness secret
    assert_eq!(foreign.get("/api/chat/conversations").await.status, 401, "any other secret is refused");
    node.stop().await.unwrap();

    let again = env.node_without("n1", &["--jwt-secret"], &[]).await;
    assert_eq!(std::fs::read_to_string(&file).expect("secret"), secret, "the secret survives a restart");
    let api = Api::with_token(&again.base, Some(own));
    assert_eq!(api.get("/api/chat/conversations").await.status, 200, "tokens survive a restart");
    again.stop().await.unwrap();
}

async fn preflight(base: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{base}/api/chat/conversations"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .expect("preflight")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A configured origin gets its preflight answered (method and headers allowed) on the REST
/// routes and Socket.IO; any other origin, or a node with none configured, gets no CORS grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_the_configured_origins_only() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--cors-origins", "https://app.example,https://admin.example"]).await;
    let r = preflight(&node.base, "https://app.example").await;
    assert!(r.status().is_success(), "preflight of an allowed origin: {}", r.status());
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example"));
    let methods = header(&r, "access-control-allow-methods").unwrap_or_default().to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("GET"), "allow-methods: {methods}");
    let headers = header(&r, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "allow-headers: {headers}");
    // The second origin of the list, and a simple request with an Origin.
    let r = preflight(&node.base, "https://admin.example").await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://admin.example"));
    let r = reqwest::Client::new()
        .get(format!("{}/socket.io/?EIO=4&transport=polling", node.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("polling handshake");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example"), "Socket.IO too");

    let r = preflight(&node.base, "https://evil.example").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None, "an unlisted origin gets no grant");
    node.stop().await.unwrap();

    let plain = env.node("n2").await;
    let r = preflight(&plain.base, "https://app.example").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None, "same-origin only by default");
    plain.stop().await.unwrap();
}

fn chat_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jobsphere-chat"))
        .env_clear()
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run jobsphere-chat")
}

/// `migrate` creates the SQLite store, twice without harm, and a node then starts on it;
/// `--dry-run` says what it would do; an unreachable MongoDB is an error, not a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_command() {
    let env = Env::embedded();
    let dir = env.data_dir().display().to_string();
    for round in 0..2 {
        let out = chat_command(&["--data-dir", &dir, "migrate"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "migrate (round {round}): {err}");
        assert!(err.contains("store migrated"), "{err}");
    }
    assert!(env.data_dir().join("chat.db").is_file(), "migrate created the SQLite file");
    let out = chat_command(&["--data-dir", &dir, "migrate", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SQLite store"), "{}", String::from_utf8_lossy(&out.stdout));

    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    assert_eq!(Api::new(&node.base, "alice").send(&conv, "on a migrated store").await["seq"], 1);
    node.stop().await.unwrap();

    let closed = free_port();
    let uri = format!("mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=300");
    let out = chat_command(&[
        "--data-dir",
        &dir,
        "--mongodb-uri",
        &uri,
        "--mongodb-timeout-ms",
        "500",
        "--jwt-secret",
        SECRET,
        "migrate",
    ]);
    assert!(!out.status.success(), "migrate against a closed port must fail");
}

async fn get(base: &str, path: &str, within: Duration) -> Result<(StatusCode, Value), String> {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .timeout(within)
        .send()
        .await
        .map_err(|e| format!("{path}: no answer within {within:?}: {e}"))?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// SIGTERM: during the drain delay the process still answers, `/readyz` says 503 (draining)
/// so the load balancer stops routing here, `/healthz` stays 200; then it exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_during_the_sigterm_drain_delay() {
    let env = Env::embedded();
    let mut p = env.process("p1", &["--drain-delay-secs", "5", "--shutdown-grace-secs", "15"]).await;
    let (st, body) = get(&p.base, "/readyz", WAIT).await.unwrap();
    assert_eq!((st, &body["checks"]["draining"]), (StatusCode::OK, &Value::Bool(false)), "{body}");
    p.term();
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (st, body) = get(&p.base, "/readyz", WAIT).await.expect("the node answers during its drain delay");
        if st == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz never went 503 after SIGTERM: {st} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["checks"]["draining"], true, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    let (st, _) = get(&p.base, "/healthz", WAIT).await.expect("healthz during the drain delay");
    assert_eq!(st, StatusCode::OK, "still alive while draining");
    let status = p.wait_exit().await.expect("exit status");
    assert!(status.success(), "exit after the drain: {status:?}");
}

/// Redis HANGS (SIGSTOP: the port stays open, nothing answers): `/healthz` and `/readyz` both
/// answer within a second (readyz 503), and readiness returns once Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_within_a_second_while_redis_hangs() {
    let env = Env::cluster().await;
    let node = env.node("n1").await;
    let redis = env.redis.as_ref().expect("redis");
    redis.pause();
    for _ in 0..3 {
        let (st, _) = get(&node.base, "/healthz", Duration::from_secs(1)).await.unwrap_or_else(|e| {
            redis.resume();
            panic!("{e}")
        });
        assert_eq!(st, StatusCode::OK);
        let (st, body) = get(&node.base, "/readyz", Duration::from_secs(1)).await.unwrap_or_else(|e| {
            redis.resume();
            panic!("{e}")
        });
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "not ready while Redis hangs: {body}");
        assert_eq!(body["checks"]["redis"], false, "{body}");
    }
    redis.resume();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (st, body) = get(&node.base, "/readyz", WAIT).await.unwrap();
        if st == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready again after SIGCONT: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await.unwrap();
}
