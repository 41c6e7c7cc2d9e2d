//! Test harness: real nodes (in-process on port 0, or real processes where a crash is needed),
//! a real `redis-server` on a free port, real Socket.IO clients and an HTTP client. What the
//! benches use too (ports, tokens, Redis, the node process, client calls) is in the shared kit;
//! the names tests use are re-exported here.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

pub use crate::kit::{
    WAIT,
    auth::{SECRET, jwt, token, user},
    free_port,
    node::NodeProcess as Proc,
    redis::RedisServer,
    rest::Resp,
    unique,
};
use crate::kit::{node, rest};
pub use crate::sock::{Sock, SockOpts};

/// Every budget out of the way (see `Env::args`).
pub fn unlimited() -> String {
    node::lifted_rate_limits("100000/10s")
}

/// The variable that puts every harness node on MongoDB, on purpose. A `MONGODB_URI` (or
/// `REDIS_URL`, `JWT_SECRET`, `CHAT_*`) in the caller's shell changes nothing: nodes get exactly
/// the arguments a test spells out.
pub const TEST_MONGODB_URI: &str = "CHAT_TEST_MONGODB_URI";

fn test_mongodb_uri() -> Option<String> {
    std::env::var(TEST_MONGODB_URI).ok().filter(|u| !u.is_empty())
}

/// What nodes of one test share: a data dir (one SQLite file), a Mongo database name (used
/// under [`TEST_MONGODB_URI`]), a Redis and a key prefix.
pub struct Env {
    pub dir: TempDir,
    pub redis: Option<RedisServer>,
    pub prefix: String,
    pub mongo_db: String,
}

/// Under [`TEST_MONGODB_URI`] the nodes of this env wrote to `mongo_db`: drop it, so runs
/// against a shared server leave nothing behind. A thread with its own runtime, since `Drop` is
/// sync and may run inside a runtime.
impl Drop for Env {
    fn drop(&mut self) {
        let Some(uri) = test_mongodb_uri() else { return };
        let db = self.mongo_db.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(drop_mongo_database(&uri, &db))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("dropping test database {}: {e}", self.mongo_db);
        }
    }
}

/// Drops one test database so runs against a shared server leave nothing behind.
pub async fn drop_mongo_database(uri: &str, db: &str) -> Result<(), String> {
    // The driver refuses `socketTimeoutMS`, which the store accepts (and caps).
    let (base, opts) = uri.split_once('?').unwrap_or((uri, ""));
    let kept: Vec<_> = opts.split('&').filter(|o| !o.to_ascii_lowercase().starts_with("sockettimeoutms=")).collect();
    let uri = if opts.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    let client = mongodb::Client::with_uri_str(&uri).await.map_err(|e| e.to_string())?;
    let dropped = client.database(db).drop().await.map_err(|e| e.to_string());
    client.shutdown().await;
    dropped
}

impl Env {
    /// Single-node embedded default (no Redis).
    pub fn embedded() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), redis: None, prefix: unique("t"), mongo_db: unique("it") }
    }

    /// Cluster mode with a fresh `redis-server`.
    pub async fn cluster() -> Self {
        let mut e = Self::embedded();
        e.redis = Some(RedisServer::start().await);
        e
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Arguments every node of this env gets; `extra` may override them.
    pub fn args(&self, node_id: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--jwt-secret".into(),
            SECRET.into(),
            "--node-id".into(),
            node_id.into(),
            "--redis-prefix".into(),
            self.prefix.clone(),
            "--mongodb-db".into(),
            self.mongo_db.clone(),
            "--drain-delay-secs".into(),
            "0".into(),
            "--shutdown-grace-secs".into(),
            "10".into(),
            // Sockets closed at once on stop; the drain tests set a window.
            "--drain-close-window-secs".into(),
            "0".into(),
            "--rate-limit-connects".into(),
            "100000".into(),
            "--rate-limit-messages".into(),
            "100000".into(),
            // Tests are not normal clients: they fire far more events per user than anyone types.
            // The abuse tests set the budget they exercise.
            "--rate-limits".into(),
            unlimited(),
        ];
        if let Some(r) = &self.redis {
            a.push("--redis-url".into());
            a.push(r.url());
        }
        // The one setting taken from the environment, under a name no deployment uses.
        if let Some(uri) = test_mongodb_uri() {
            a.push("--mongodb-uri".into());
            a.push(uri);
        }
        // `extra` overrides: drop a default flag (and its value) that `extra` sets again.
        let mut i = 0;
        while i < a.len() {
            if extra.contains(&a[i].as_str()) {
                a.drain(i..i + 2);
            } else {
                i += 2;
            }
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    pub async fn node(&self, node_id: &str) -> Node {
        self.node_with(node_id, &[]).await
    }

    pub async fn node_with(&self, node_id: &str, extra: &[&str]) -> Node {
        self.node_without(node_id, &[], extra).await
    }

    /// Like [`Self::node_with`], without the default flags in `drop` (and their values).
    pub async fn node_without(&self, node_id: &str, drop: &[&str], extra: &[&str]) -> Node {
        let mut argv = vec!["jobsphere-chat".to_owned()];
        // Every argument is a `--flag value` pair (see `args`).
        for p in self.args(node_id, extra).chunks(2) {
            if !drop.contains(&p[0].as_str()) {
                argv.extend(p.iter().cloned());
            }
        }
        // Nothing else from the environment: the node gets exactly these arguments.
        let config = jobsphere_chat::config::Config::from_args_only(&argv).expect("test config");
        Node::start(config).await
    }

    /// A real `jobsphere-chat` process (for kill -9 and SIGTERM tests).
    pub async fn process(&self, node_id: &str, extra: &[&str]) -> Proc {
        let launch = node::Launch {
            bin: Path::new(node::NODE_BIN),
            args: &self.args(node_id, extra),
            env: &[],
            stderr: Stdio::inherit(),
            ready_within: WAIT,
        };
        Proc::spawn(launch).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// An in-process node.
pub struct Node {
    pub addr: SocketAddr,
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    pub async fn start(config: jobsphere_chat::config::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(jobsphere_chat::run(config, listener, async move {
            let _ = rx.await;
        }));
        let node = Self { addr, base: format!("http://{addr}"), shutdown: Some(tx), handle: Some(handle) };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        node::wait_ready(&self.base, WAIT).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Graceful stop (the SIGTERM path); returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("node task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// REST client bound to one node and one user.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, user: &str) -> Self {
        Self::with_token(base, Some(token(user)))
    }

    pub fn with_token(base: &str, token: Option<String>) -> Self {
        Self { base: base.to_owned(), token, http: reqwest::Client::new() }
    }

    /// `method` on `path` as this client's user.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        rest::send(r).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Resp {
        let r = self.request(method, path).header("content-type", "application/json").body(body);
        rest::send(r).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// POST that returns `None` on a connection error (a node going away) instead of panicking.
    pub async fn try_post(&self, path: &str, body: Value) -> Option<Resp> {
        rest::send(self.request(reqwest::Method::POST, path).json(&body)).await.ok()
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates (or finds) the conversation with `other`; returns its id.
    pub async fn conversation_with(&self, other: &str) -> String {
        let r = self.post("/api/chat/conversations", json!({ "participantId": other })).await;
        assert!(r.status == 200 || r.status == 201, "create conversation: {} {}", r.status, r.body);
        r.body["data"]["_id"].as_str().expect("conversation id").to_owned()
    }

    /// Sends over REST; returns the message.
    pub async fn send(&self, conversation: &str, content: &str) -> Value {
        let r =
            self.post(&format!("/api/chat/conversations/{conversation}/messages"), json!({ "content": content })).await;
        assert_eq!(r.status, 201, "send: {}", r.body);
        r.body["data"]["message"].clone()
    }
}

/// `ack["status"] == "success"`, returning `data`.
pub fn ok(ack: &Value) -> &Value {
    assert_eq!(ack["status"], "success", "expected success, got {ack}");
    &ack["data"]
}

/// `ack["status"] == "error"` with `code`.
pub fn err_code(ack: &Value, code: &str) {
    assert_eq!(ack["status"], "error", "expected error {code}, got {ack}");
    assert_eq!(ack["code"], code, "wrong code in {ack}");
}

/// The data dir of an `Env` (for processes restarted on the same files).
pub fn path_of(dir: &TempDir) -> PathBuf {
    dir.path().to_owned()
}

/// The user every [`settle`] sentinel conversation is with; never connects, so it changes no
/// one's presence.
pub const SENTINEL_PEER: &str = "settle-sentinel-peer";

/// A barrier through the fan-out path itself, for "exactly once" and "nothing received".
///
/// Call it once the event under test has been published (at least one recipient saw it, or a
/// REST answer that follows the fan-out came back), with `origin` the node that published it
/// and every socket to be counted afterwards with its user. Each user sends a sentinel message
/// over REST on `origin` (to [`SENTINEL_PEER`], so no one's unread count moves) and `settle`
/// returns once that sentinel reached every listed socket. The origin published the sentinel
/// after the event, on the same path (locally, and on the same Redis channel in cluster mode),
/// so a socket holds the event, or a late duplicate of it, before its sentinel. The test client
/// hands each packet to its own task, so one ack round trip per socket after the sentinel lets
/// a task spawned before the sentinel's finish. The sentinel itself is consumed; nothing else.
pub async fn settle(origin: &str, socks: &[(&Sock, &str)]) {
    let tag = unique("settle");
    let mut users: Vec<&str> = socks.iter().map(|(_, u)| *u).collect();
    users.sort_unstable();
    users.dedup();
    for u in users {
        let api = Api::new(origin, u);
        let conv = api.conversation_with(SENTINEL_PEER).await;
        api.send(&conv, &tag).await;
    }
    for (s, _) in socks {
        s.next_match("new_message", |v| v["message"]["content"] == tag.as_str()).await;
    }
    for (s, _) in socks {
        ok(&s.ack("get_online_status", json!({ "userIds": [SENTINEL_PEER] })).await);
    }
}
