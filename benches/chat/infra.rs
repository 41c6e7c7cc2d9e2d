//! Processes under test: the release `jobsphere-chat` binary and a `redis-server`, each on free
//! loopback ports, plus /proc readings (RSS, CPU time) of them and of the load generator itself.

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use jobsphere_chat::{
    auth::Jwt,
    chat::model::{Role, User},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SECRET: &str = "bench-secret-0123456789abcdef-0123456789abcdef";
/// Rate limits far above anything the load generator can offer.
pub const NO_LIMIT: &str = "100000000";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The node binary: `BENCH_BIN`, else the release binary cargo built for this bench
/// (`cargo bench` builds every bin target of the package with the bench profile, i.e. release).
pub fn bin_path() -> PathBuf {
    std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_jobsphere-chat")))
}

pub fn token(user: &str) -> String {
    let u =
        User { id: user.to_owned(), name: format!("Bench {user}"), email: None, role: Role::Customer, avatar: None };
    Jwt::from_secret(SECRET.as_bytes()).sign(&u, Duration::from_secs(12 * 3600)).expect("sign token")
}

/// A `redis-server` on a free port (no persistence), killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxclients", "20000"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server must be installed: {e}"))?;
        let r = Self { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if redis_ping(port).await {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("redis-server did not answer on port {port}").into())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis_ping(port: u16) -> bool {
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

/// A real node process. Killed (SIGKILL) on drop.
pub struct NodeProc {
    pub id: String,
    pub base: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    pub log: PathBuf,
    child: Option<Child>,
    pid: u32,
}

/// `CHAT_RATE_LIMITS` that lifts every cost class besides messages and connects.
fn no_cost_limits() -> String {
    ["typing", "receipt", "presence", "sync", "join", "create", "read"]
        .iter()
        .map(|k| format!("{k}={NO_LIMIT}/1s"))
        .collect::<Vec<_>>()
        .join(",")
}

impl NodeProc {
    /// Starts a node sharing `data_dir` (one SQLite file) and, when given, Redis; `env` is the
    /// scenario's own node environment (`BENCH_NODE_ENV` still comes last and wins).
    pub async fn spawn(
        id: &str,
        data_dir: &Path,
        redis_url: Option<&str>,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> Res<Self> {
        let (port, metrics_port) = (free_port(), free_port());
        let log = data_dir.join(format!("{id}.log"));
        let mut cmd = Command::new(bin_path());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("CHAT_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("CHAT_DATA_DIR", data_dir)
            .env("CHAT_REDIS_PREFIX", prefix)
            .env("JWT_SECRET", SECRET)
            .env("NODE_ID", id)
            .env("RATE_LIMIT_MESSAGES", NO_LIMIT)
            .env("RATE_LIMIT_CONNECTS", NO_LIMIT)
            // Every other cost class too: a bench measures the server, not its budgets.
            .env("CHAT_RATE_LIMITS", no_cost_limits())
            .env("CHAT_DRAIN_DELAY_SECS", "0")
            .env("CHAT_SHUTDOWN_GRACE_SECS", "5")
            .env("RUST_LOG", std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if let Some(r) = redis_url {
            cmd.env("REDIS_URL", r);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Experiments: extra node environment, `BENCH_NODE_ENV="K=V,K2=V2"`.
        for kv in std::env::var("BENCH_NODE_ENV").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("BENCH_NODE_ENV: {kv:?} is not K=V"))?;
            cmd.env(k.trim(), v.trim());
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin_path().display()))?;
        let pid = child.id();
        let node = Self {
            id: id.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            log,
            child: Some(child),
            pid,
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&self) -> Res<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("node {} never became ready; log:\n{log}", self.id).into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL, no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn rss(&self) -> u64 {
        rss_of(self.pid)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmRSS of a process in bytes (0 if unreadable).
pub fn rss_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// utime + stime of a process in clock ticks (USER_HZ = 100 on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: fields start after the last ')'.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else { return 0 };
    let f: Vec<&str> = rest.split(' ').collect();
    // After the ')' field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

const TICKS_PER_SEC: f64 = 100.0;

/// Busy ticks of the whole machine (all CPUs), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
}

/// CPU used by groups of processes over an interval, in cores (1.0 = one core busy), plus
/// `other`: what the rest of the machine used meanwhile (other builds and tests on a shared box).
pub struct CpuMeter {
    groups: Vec<(&'static str, Vec<u32>, u64)>,
    machine: u64,
    start: Instant,
}

impl CpuMeter {
    pub fn start(groups: Vec<(&'static str, Vec<u32>)>) -> Self {
        let groups = groups
            .into_iter()
            .map(|(name, pids)| {
                let t = pids.iter().map(|p| cpu_ticks(*p)).sum();
                (name, pids, t)
            })
            .collect();
        Self { groups, machine: machine_busy_ticks(), start: Instant::now() }
    }

    /// `{ "loadgen": 0.9, "nodes": 1.0, "redis": 0.1 }` in cores over the interval.
    pub fn finish(&self) -> Value {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut o = serde_json::Map::new();
        let mut ours = 0.0;
        for (name, pids, t0) in &self.groups {
            let t: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
            let cores = t.saturating_sub(*t0) as f64 / TICKS_PER_SEC / secs;
            ours += cores;
            o.insert((*name).to_owned(), json!(round2(cores)));
        }
        let machine = machine_busy_ticks().saturating_sub(self.machine) as f64 / TICKS_PER_SEC / secs;
        o.insert("other".to_owned(), json!(round2((machine - ours).max(0.0))));
        Value::Object(o)
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Creates (or finds) the conversation between `me` and `other` over REST; returns its id.
pub async fn conversation(http: &reqwest::Client, base: &str, me: &str, other: &str) -> Res<String> {
    let mut last = String::new();
    for _ in 0..5 {
        match http
            .post(format!("{base}/api/chat/conversations"))
            .bearer_auth(token(me))
            .json(&json!({ "participantId": other }))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = body["data"]["_id"].as_str() {
                    return Ok(id.to_owned());
                }
                last = format!("{status} {body}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("create conversation {me}->{other}: {last}").into())
}

/// Sends a message over REST; `Ok(())` on 201.
pub async fn rest_send(http: &reqwest::Client, base: &str, me: &str, conv: &str, content: &str) -> Res<()> {
    let r = http
        .post(format!("{base}/api/chat/conversations/{conv}/messages"))
        .bearer_auth(token(me))
        .json(&json!({ "content": content }))
        .send()
        .await?;
    if r.status().as_u16() == 201 { Ok(()) } else { Err(format!("send: {} {}", r.status(), r.text().await?).into()) }
}

/// A Prometheus histogram summed over nodes: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

fn sample_value(line: &str) -> Option<f64> {
    line.rsplit_once(' ').and_then(|(_, v)| v.trim().parse().ok())
}

impl Hist {
    /// Sums `metric` (with every `filters` label pair, e.g. `op="insert_message"`) over `metrics_urls`.
    pub async fn scrape(metrics_urls: &[String], metric: &str, filters: &[&str]) -> Self {
        let mut h = Hist::default();
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for url in metrics_urls {
            let Ok(r) = reqwest::get(format!("{url}/metrics")).await else { continue };
            let Ok(text) = r.text().await else { continue };
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                if !filters.iter().all(|f| line.contains(f)) {
                    continue;
                }
                if let Some(rest) = line.strip_prefix(&format!("{metric}_bucket{{")) {
                    let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
                    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                    let v = sample_value(line).unwrap_or(0.0);
                    match buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some(e) => e.1 += v,
                        None => buckets.push((le, v)),
                    }
                } else if line.starts_with(&format!("{metric}_sum")) {
                    h.sum += sample_value(line).unwrap_or(0.0);
                } else if line.starts_with(&format!("{metric}_count")) {
                    h.count += sample_value(line).unwrap_or(0.0);
                }
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h.buckets = buckets;
        h
    }

    /// `self - earlier` (both from the same nodes).
    pub fn minus(&self, earlier: &Hist) -> Hist {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| (*le, c - earlier.buckets.iter().find(|(l, _)| l == le).map(|e| e.1).unwrap_or(0.0)))
            .collect();
        Hist { buckets, sum: self.sum - earlier.sum, count: self.count - earlier.count }
    }

    /// Upper bound (ms) of the bucket holding quantile `q`.
    fn quantile_le_ms(&self, q: f64) -> Option<f64> {
        let target = self.count * q;
        self.buckets.iter().find(|(_, c)| *c >= target && *c > 0.0).map(|(le, _)| le * 1000.0)
    }

    pub fn json(&self) -> Value {
        if self.count <= 0.0 {
            return json!({ "count": 0 });
        }
        let le = |q| self.quantile_le_ms(q).map(|v| if v.is_finite() { json!(round2(v)) } else { json!("+Inf") });
        json!({
            "count": self.count,
            "mean_ms": round2(self.sum / self.count * 1000.0),
            "p50_le_ms": le(0.5),
            "p99_le_ms": le(0.99),
        })
    }
}

/// The node-side histograms the scenarios report (summed over nodes).
pub struct ServerView {
    urls: Vec<String>,
    snaps: Vec<Hist>,
}

const SERVER_HISTS: &[(&str, &str, &[&str])] = &[
    ("send_message_handler", "chat_event_duration_seconds", &["event=\"send_message\""]),
    ("db_insert_message", "chat_db_query_duration_seconds", &["op=\"insert_message\""]),
    ("receive_to_fanout", "chat_message_latency_seconds", &[]),
];

impl ServerView {
    pub async fn start(nodes: &[NodeProc]) -> Self {
        let urls: Vec<String> = nodes.iter().filter(|n| n.child.is_some()).map(|n| n.metrics.clone()).collect();
        let mut snaps = Vec::new();
        for (_, m, f) in SERVER_HISTS {
            snaps.push(Hist::scrape(&urls, m, f).await);
        }
        Self { urls, snaps }
    }

    /// `{ "db_insert_message": {count, mean_ms, p50_le_ms, p99_le_ms}, ... }` since `start`.
    pub async fn finish(&self) -> Value {
        let mut o = serde_json::Map::new();
        for ((name, m, f), before) in SERVER_HISTS.iter().zip(&self.snaps) {
            o.insert((*name).to_owned(), Hist::scrape(&self.urls, m, f).await.minus(before).json());
        }
        Value::Object(o)
    }
}

/// CPU ticks per thread name (summed over the threads of `pids` that share a name).
fn thread_ticks(pids: &[u32]) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in dir.flatten() {
            let s = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else { continue };
            let name = s[open + 1..close].to_owned();
            let f: Vec<&str> = s[close + 2..].split(' ').collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            *out.entry(name).or_insert(0) += get(11) + get(12);
        }
    }
    out
}

/// Where the nodes' CPU goes, by thread name (`sqlite-writer`, `tokio-runtime-w`, …), in cores.
pub struct ThreadMeter {
    pids: Vec<u32>,
    start_ticks: std::collections::HashMap<String, u64>,
    start: Instant,
}

impl ThreadMeter {
    pub fn start(pids: Vec<u32>) -> Self {
        let start_ticks = thread_ticks(&pids);
        Self { pids, start_ticks, start: Instant::now() }
    }

    pub fn finish(&self) -> Value {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let now = thread_ticks(&self.pids);
        let mut v: Vec<(String, f64)> = now
            .into_iter()
            .map(|(k, t)| {
                let d = t.saturating_sub(*self.start_ticks.get(&k).unwrap_or(&0));
                (k, d as f64 / TICKS_PER_SEC / secs)
            })
            .filter(|(_, c)| *c >= 0.01)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Value::Object(v.into_iter().map(|(k, c)| (k, json!(round2(c)))).collect())
    }
}
