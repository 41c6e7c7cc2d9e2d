//! Processes under test, started with the shared kit: the release `jobsphere-chat` binary and a
//! `redis-server`, each on free loopback ports; plus /proc readings (RSS, CPU time) of them and
//! of the load generator itself, and the node-side histograms.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::kit::{
    auth::{SECRET, token},
    node::{Launch, NodeProcess, lifted_rate_limits},
    redis::RedisServer,
    rest,
};

/// Rate limits far above anything the load generator can offer.
pub const NO_LIMIT: &str = "100000000";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

/// The node binary: `BENCH_BIN`, else the release binary cargo built for this bench
/// (`cargo bench` builds every bin target of the package with the bench profile, i.e. release).
pub fn bin_path() -> PathBuf {
    std::env::var_os("BENCH_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(crate::kit::node::NODE_BIN))
}

/// A `redis-server` on a free port (no persistence, room for every bench socket's node
/// connections), killed on drop.
pub async fn start_redis() -> Res<RedisServer> {
    Ok(RedisServer::try_start(&["--maxclients", "20000"]).await?)
}

/// A real node process, its log in `<data dir>/<id>.log`. Killed (SIGKILL) on drop.
pub struct NodeProc {
    pub id: String,
    pub base: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    /// Kept after a kill, so a meter started before it still names the process.
    pid: u32,
    proc: NodeProcess,
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
        let log = data_dir.join(format!("{id}.log"));
        let mut vars: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("CHAT_DATA_DIR".into(), data_dir.display().to_string()),
            ("CHAT_REDIS_PREFIX".into(), prefix.into()),
            ("JWT_SECRET".into(), SECRET.into()),
            ("NODE_ID".into(), id.into()),
            ("RATE_LIMIT_MESSAGES".into(), NO_LIMIT.into()),
            ("RATE_LIMIT_CONNECTS".into(), NO_LIMIT.into()),
            // Every other cost class too: a bench measures the server, not its budgets.
            ("CHAT_RATE_LIMITS".into(), lifted_rate_limits(&format!("{NO_LIMIT}/1s"))),
            ("CHAT_DRAIN_DELAY_SECS".into(), "0".into()),
            ("CHAT_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            ("RUST_LOG".into(), std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into())),
        ];
        if let Some(r) = redis_url {
            vars.push(("REDIS_URL".into(), r.into()));
        }
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // Experiments: extra node environment, `BENCH_NODE_ENV="K=V,K2=V2"`.
        for kv in std::env::var("BENCH_NODE_ENV").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("BENCH_NODE_ENV: {kv:?} is not K=V"))?;
            vars.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let launch = Launch {
            bin: &bin_path(),
            args: &[],
            env: &vars,
            stderr: Stdio::from(std::fs::File::create(&log)?),
            ready_within: Duration::from_secs(30),
        };
        let proc = NodeProcess::spawn(launch).await.map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("node {id}: {e}; log:\n{log}")
        })?;
        Ok(Self { id: id.to_owned(), base: proc.base.clone(), metrics: proc.metrics.clone(), pid: proc.pid(), proc })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Not killed.
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// SIGKILL, no cleanup of any kind.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn rss(&self) -> u64 {
        rss_of(self.pid)
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
        match rest::create_conversation(http, base, &token(me), other).await {
            Ok(r) => {
                if let Some(id) = r.body["data"]["_id"].as_str() {
                    return Ok(id.to_owned());
                }
                last = format!("{} {}", r.status, r.body);
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("create conversation {me}->{other}: {last}").into())
}

/// Sends a message over REST; `Ok(())` on 201.
pub async fn rest_send(http: &reqwest::Client, base: &str, me: &str, conv: &str, content: &str) -> Res<()> {
    let r = rest::send_message(http, base, &token(me), conv, content).await?;
    if r.status == 201 { Ok(()) } else { Err(format!("send: {} {}", r.status, r.body).into()) }
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
        let urls: Vec<String> = nodes.iter().filter(|n| n.is_running()).map(|n| n.metrics.clone()).collect();
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
