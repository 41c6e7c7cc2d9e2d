//! Test harness: real nodes (in-process on port 0, or real processes where a crash is needed),
//! a real `redis-server` on a free port, real Socket.IO clients and an HTTP client.

#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::FutureExt;
use jobsphere_chat::{
    auth::Jwt,
    chat::model::{Role, User},
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tf_rust_socketio::{
    Event, Payload, TransportType,
    asynchronous::{Client, ClientBuilder},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{Mutex, mpsc, oneshot},
    task::JoinHandle,
};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Upper bound for anything a test awaits; generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(15);

/// Every budget out of the way (see `Env::args`).
pub const UNLIMITED: &str = "typing=100000/10s,receipt=100000/10s,presence=100000/10s,sync=100000/10s,join=100000/10s,create=100000/10s,read=100000/10s";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique in this process and across processes (pid + counter).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn jwt() -> Jwt {
    Jwt::from_secret(SECRET.as_bytes())
}

pub fn user(id: &str) -> User {
    User { id: id.to_owned(), name: format!("User {id}"), email: None, role: Role::Customer, avatar: None }
}

pub fn token(id: &str) -> String {
    jwt().sign(&user(id), Duration::from_secs(3600)).expect("sign")
}

/// A `redis-server` on a free loopback port, killed on drop. Needs Redis ≥ 7.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Self { port: free_port(), child: None, dir };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if ping(self.port).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not answer PING on port {}", self.port);
    }

    /// Kills Redis (SIGKILL) and waits until the port is closed.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: Redis keeps its port open and answers nothing (a hung server, not a dead one).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id().to_string();
        let st = Command::new("kill").args([sig, &pid]).status().expect("kill");
        assert!(st.success(), "kill {sig} {pid}");
    }

    /// Starts Redis again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn ping(port: u16) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await, Ok(Ok(_)))
        && &buf == b"+PONG\r\n"
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
            UNLIMITED.into(),
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
        Proc::spawn(self.args(node_id, extra)).await
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
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {} never became ready", self.base);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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

/// A real node process on free ports.
pub struct Proc {
    pub port: u16,
    pub base: String,
    pub metrics_port: u16,
    child: Option<Child>,
}

impl Proc {
    pub async fn spawn(args: Vec<String>) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        // A clean environment: only what the node is meant to see.
        let child = Command::new(env!("CARGO_BIN_EXE_jobsphere-chat"))
            .env_clear()
            .args(&args)
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("CHAT_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node binary");
        let p = Self { port, base: format!("http://127.0.0.1:{port}"), metrics_port, child: Some(child) };
        let n = Node { addr: ([127, 0, 0, 1], port).into(), base: p.base.clone(), shutdown: None, handle: None };
        n.wait_ready().await;
        p
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM without waiting (see [`Self::wait_exit`]).
    pub fn term(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
    }

    /// SIGTERM, then waits for exit (bounded); returns the exit status.
    pub async fn sigterm(&mut self) -> Option<std::process::ExitStatus> {
        self.term();
        self.wait_exit().await
    }

    /// Waits for the process to exit (bounded: SIGKILL after 30 s); returns the exit status.
    pub async fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if tokio::time::Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// REST client bound to one node and one user.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    pub fn new(base: &str, user: &str) -> Self {
        Self::with_token(base, Some(token(user)))
    }

    pub fn with_token(base: &str, token: Option<String>) -> Self {
        Self { base: base.to_owned(), token, http: reqwest::Client::new() }
    }

    pub async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("http request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, body, headers }
    }

    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Resp {
        let mut r =
            self.http.request(method, format!("{}{}", self.base, path)).header("content-type", "application/json");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.body(body).send().await.expect("http request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers }
    }

    /// POST that returns `None` on a connection error (a node going away) instead of panicking.
    pub async fn try_post(&self, path: &str, body: Value) -> Option<Resp> {
        let mut r = self.http.post(format!("{}{}", self.base, path)).json(&body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.ok()?;
        Some(Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers })
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

/// A real Socket.IO client (tf-rust-socketio) that records every event it receives.
pub struct Sock {
    pub client: Client,
    rx: Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    backlog: Mutex<Vec<(String, Value)>>,
}

fn first_value(p: &Payload) -> Value {
    match p {
        Payload::Text(v, _) => v.first().cloned().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(s, _) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Payload::Binary(_, _) => Value::Null,
    }
}

#[derive(Default)]
pub struct SockOpts {
    pub auth: Option<Value>,
    pub polling: bool,
    pub reconnect: bool,
    pub query_token: Option<String>,
}

impl Sock {
    /// Connects as `user`; panics unless the connection is accepted.
    pub async fn connect(base: &str, user: &str) -> Sock {
        Self::try_connect(base, SockOpts { auth: Some(json!({ "token": token(user) })), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// Connects; `Err(message)` if the server refused the connection.
    pub async fn try_connect(base: &str, opts: SockOpts) -> Result<Sock, String> {
        let (tx, rx) = mpsc::unbounded_channel::<(String, Value)>();
        let url = match &opts.query_token {
            Some(t) => format!("{base}?token={t}"),
            None => base.to_owned(),
        };
        let push = |name: &'static str, tx: mpsc::UnboundedSender<(String, Value)>| {
            move |p: Payload, _c: Client| {
                let _ = tx.send((name.to_owned(), first_value(&p)));
                async {}.boxed()
            }
        };
        let any_tx = tx.clone();
        let mut b = ClientBuilder::new(url)
            .reconnect(opts.reconnect)
            .reconnect_delay(100, 1000)
            .on(Event::Connect, push("connect", tx.clone()))
            .on(Event::Error, push("error", tx.clone()))
            .on(Event::Close, push("close", tx.clone()))
            .on_any(move |e: Event, p: Payload, _c: Client| {
                let _ = any_tx.send((e.as_str().to_owned(), first_value(&p)));
                async {}.boxed()
            });
        if opts.polling {
            b = b.transport_type(TransportType::Polling);
        } else {
            b = b.transport_type(TransportType::Websocket);
        }
        if let Some(a) = opts.auth {
            b = b.auth(a);
        }
        let client = b.connect().await.map_err(|e| format!("transport: {e}"))?;
        let sock = Sock { client, rx: Mutex::new(rx), backlog: Mutex::new(Vec::new()) };
        // A refused connection still returns Ok from connect(): wait for connect or error.
        let (name, v) = sock.next_of(&["connect", "error"]).await;
        if name == "connect" { Ok(sock) } else { Err(v.to_string()) }
    }

    /// Waits for the next event named any of `names` (others are kept for later).
    pub async fn next_of(&self, names: &[&str]) -> (String, Value) {
        {
            let mut bl = self.backlog.lock().await;
            if let Some(i) = bl.iter().position(|(n, _)| names.contains(&n.as_str())) {
                return bl.remove(i);
            }
        }
        let mut rx = self.rx.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, v))) => {
                    if names.contains(&n.as_str()) {
                        return (n, v);
                    }
                    self.backlog.lock().await.push((n, v));
                }
                Ok(None) => panic!("socket closed while waiting for {names:?}"),
                Err(_) => panic!("timed out waiting for {names:?}; got {:?}", self.backlog.lock().await),
            }
        }
    }

    /// Waits for the next `name` event that satisfies `pred` and removes only that one: every
    /// other event, of any name, stays for later counting.
    pub async fn next_match(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        {
            let mut bl = self.backlog.lock().await;
            if let Some(i) = bl.iter().position(|(n, v)| n == name && pred(v)) {
                return bl.remove(i).1;
            }
        }
        let mut rx = self.rx.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, v))) if n == name && pred(&v) => return v,
                Ok(Some(e)) => self.backlog.lock().await.push(e),
                Ok(None) => panic!("socket closed while waiting for a matching {name}"),
                Err(_) => panic!("timed out waiting for a matching {name}; got {:?}", self.backlog.lock().await),
            }
        }
    }

    /// Waits for the next `name` event and returns its payload.
    pub async fn next(&self, name: &str) -> Value {
        self.next_of(&[name]).await.1
    }

    /// Every event received so far (drains the channel without waiting).
    pub async fn received(&self) -> Vec<(String, Value)> {
        let mut rx = self.rx.lock().await;
        let mut bl = self.backlog.lock().await;
        while let Ok(e) = rx.try_recv() {
            bl.push(e);
        }
        bl.clone()
    }

    /// Removes and returns every `name` event received so far.
    pub async fn take(&self, name: &str) -> Vec<Value> {
        self.received().await;
        let mut bl = self.backlog.lock().await;
        let (hit, rest): (Vec<_>, Vec<_>) = bl.drain(..).partition(|(n, _)| n == name);
        *bl = rest;
        hit.into_iter().map(|(_, v)| v).collect()
    }

    /// Count of `name` events received so far (after draining).
    pub async fn count(&self, name: &str) -> usize {
        self.received().await.iter().filter(|(n, _)| n == name).count()
    }

    /// Emits with an ack and returns the ack payload.
    pub async fn ack(&self, event: &str, payload: Value) -> Value {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, Payload::Text(vec![payload], None), WAIT, move |p: Payload, _c: Client| {
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    // Ack args arrive as one array: `[data]`.
                    let v = match first_value(&p) {
                        Value::Array(mut a) if a.len() == 1 => a.remove(0),
                        v => v,
                    };
                    let _ = tx.send(v);
                }
                async {}.boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(WAIT, rx).await.unwrap_or_else(|_| panic!("no ack for {event}")).expect("ack dropped")
    }

    /// Emits without an ack.
    pub async fn emit(&self, event: &str, payload: Value) {
        self.client.emit(event, Payload::Text(vec![payload], None)).await.expect("emit");
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
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
