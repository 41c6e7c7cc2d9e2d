//! Load benchmark of real `jobsphere-chat` node processes (see load/README.md).
//!
//! ```sh
//! cargo bench --bench chat                                   # every scenario, default sizes
//! BENCH_SCENARIOS=single_node,cross_node BENCH_SECS=10 BENCH_PAIRS=50 cargo bench --bench chat
//! ```
//!
//! `cargo bench` builds the node binary with the bench profile (= release) next to this bench,
//! and the bench runs it (`BENCH_BIN=path` runs another build). Each scenario starts its own
//! nodes (and `redis-server`) on free loopback ports, prints ONE JSON line to stdout, and the
//! run appends a section to load/RESULTS.md (`BENCH_RESULTS=path`, or `none`).
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated, default all):
//! - `single_node`: 1 embedded node, `BENCH_PAIRS` sender/receiver pairs, each sender socket
//!   with one outstanding ack (`BENCH_WINDOW` sender sockets per pair), `BENCH_SECS` long.
//! - `cross_node`: 3 nodes + Redis + one shared SQLite file; senders on node i, receivers on
//!   node (i+1)%3.
//! - `latency_at_rate`: cross-node, open loop at `BENCH_RATE` msg/s.
//! - `max_sustained`: cross-node, open loop at `BENCH_MAX_RATES` msg/s (`BENCH_STEP_SECS` each)
//!   until p99 > `BENCH_MAX_P99_MS` or achieved < 90 % of offered (`BENCH_MAX_NODES=1` runs it
//!   on one embedded node).
//! - `idle_memory`: `BENCH_IDLE_CONNS` idle websockets on one node: RSS per connection and the
//!   connect rate of the ramp (`BENCH_CONNECT_CONCURRENCY` connects in flight).
//! - `reconnect_storm`: `BENCH_STORM_SOCKETS` sockets on node A of 3, kill -9 A, clients
//!   reconnect to survivors with jittered exponential backoff; time to full recovery and
//!   delivery to every reconnected user.

mod client;
mod infra;
mod stats;

use std::{
    collections::HashMap,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use infra::{CpuMeter, NodeProc, Redis, Res, ServerView, ThreadMeter, round2};
use rand::Rng;
use serde_json::{Value, json};
use stats::{Quantiles, Recorder, key};
use tf_rust_socketio::asynchronous::Client;

const ALL: &[&str] =
    &["single_node", "cross_node", "latency_at_rate", "max_sustained", "idle_memory", "reconnect_storm"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value"))
        }
        _ => default,
    }
}

struct Opts {
    scenarios: Vec<String>,
    secs: u64,
    pairs: usize,
    window: usize,
    rate: u64,
    max_rates: Vec<u64>,
    step_secs: u64,
    max_p99_ms: f64,
    max_nodes: usize,
    idle_conns: usize,
    connect_concurrency: usize,
    storm_sockets: usize,
    reconnect_base_ms: u64,
    reconnect_max_ms: u64,
    storm_timeout_secs: u64,
}

impl Opts {
    fn from_env() -> Self {
        let scenarios: Vec<String> = std::env::var("BENCH_SCENARIOS")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
        for s in &scenarios {
            assert!(ALL.contains(&s.as_str()), "unknown scenario {s:?}; known: {ALL:?}");
        }
        let max_rates = std::env::var("BENCH_MAX_RATES")
            .unwrap_or_else(|_| "500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000".into())
            .split(',')
            .map(|r| r.trim().parse().expect("BENCH_MAX_RATES: comma-separated integers"))
            .collect();
        Self {
            scenarios,
            secs: env_or("BENCH_SECS", 10),
            pairs: env_or("BENCH_PAIRS", 50),
            window: env_or("BENCH_WINDOW", 1usize).max(1),
            rate: env_or("BENCH_RATE", 2000),
            max_rates,
            step_secs: env_or("BENCH_STEP_SECS", 10),
            max_p99_ms: env_or("BENCH_MAX_P99_MS", 100.0),
            max_nodes: env_or("BENCH_MAX_NODES", 3usize).max(1),
            idle_conns: env_or("BENCH_IDLE_CONNS", 2000),
            connect_concurrency: env_or("BENCH_CONNECT_CONCURRENCY", 50usize).max(1),
            storm_sockets: env_or("BENCH_STORM_SOCKETS", 1000),
            reconnect_base_ms: env_or("BENCH_RECONNECT_BASE_MS", 1000),
            reconnect_max_ms: env_or("BENCH_RECONNECT_MAX_MS", 5000),
            storm_timeout_secs: env_or("BENCH_STORM_TIMEOUT_SECS", 60),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("chat bench: run it with `cargo bench --bench chat` (skipped in test mode)");
        return;
    }
    let opts = Opts::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut lines = Vec::new();
    let started = chrono::Utc::now();
    let load_at_start =
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ");
    eprintln!("chat bench: node binary {}", infra::bin_path().display());
    for s in opts.scenarios.clone() {
        eprintln!("chat bench: running {s}");
        let t = Instant::now();
        let res = rt.block_on(async {
            match s.as_str() {
                "single_node" => closed_loop_scenario(&opts, "single_node", 1).await,
                "cross_node" => closed_loop_scenario(&opts, "cross_node", 3).await,
                "latency_at_rate" => latency_at_rate(&opts).await,
                "max_sustained" => max_sustained(&opts).await,
                "idle_memory" => idle_memory(&opts).await,
                "reconnect_storm" => reconnect_storm(&opts).await,
                _ => unreachable!(),
            }
        });
        let mut v = res.unwrap_or_else(|e| json!({ "scenario": s, "error": e.to_string() }));
        v["wall_secs"] = json!(round2(t.elapsed().as_secs_f64()));
        // What the nodes ran with beyond the defaults (SQLite durability, worker threads, ...).
        if let Ok(env) = std::env::var("BENCH_NODE_ENV")
            && !env.trim().is_empty()
        {
            v["node_env"] = json!(env);
        }
        let line = v.to_string();
        println!("{line}");
        let _ = std::io::stdout().flush();
        lines.push(line);
    }
    // The clients' background tasks are still parked on closed sockets: don't wait for them.
    rt.shutdown_timeout(Duration::from_millis(200));
    append_results(started, &load_at_start, &lines);
}

// ---------------------------------------------------------------------------------------------
// Cluster and pairs

struct Cluster {
    _dir: tempfile::TempDir,
    redis: Option<Redis>,
    nodes: Vec<NodeProc>,
}

impl Cluster {
    /// `n` nodes on one data dir (one SQLite file); with Redis when `n > 1`.
    async fn start(n: usize) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let redis = if n > 1 { Some(Redis::start().await?) } else { None };
        let prefix = format!("bench{}", std::process::id());
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(
                NodeProc::spawn(
                    &format!("n{}", i + 1),
                    dir.path(),
                    redis.as_ref().map(|r| r.url()).as_deref(),
                    &prefix,
                )
                .await?,
            );
        }
        Ok(Self { _dir: dir, redis, nodes })
    }

    fn cpu_meter(&self) -> CpuMeter {
        let mut groups =
            vec![("loadgen", vec![std::process::id()]), ("nodes", self.nodes.iter().map(|n| n.pid()).collect())];
        if let Some(r) = &self.redis {
            groups.push(("redis", vec![r.pid()]));
        }
        CpuMeter::start(groups)
    }
}

/// Pair `i`: sender user on node `i % n`, receiver user on node `(i + 1) % n`, one conversation.
struct Pairs {
    convs: Vec<String>,
    /// `window` sender sockets per pair (same user).
    senders: Vec<Vec<Client>>,
    receivers: Vec<Client>,
}

async fn setup_pairs(
    c: &Cluster,
    run: &str,
    n: usize,
    window: usize,
    rec: &Arc<Recorder>,
    concurrency: usize,
) -> Res<Pairs> {
    let nodes = c.nodes.len();
    let http = reqwest::Client::new();
    let sender_base = |i: usize| c.nodes[i % nodes].base.clone();
    let receiver_base = |i: usize| c.nodes[(i + 1) % nodes].base.clone();
    let convs: Vec<String> = stream::iter(0..n)
        .map(|i| {
            let (http, base) = (http.clone(), sender_base(i));
            async move { infra::conversation(&http, &base, &format!("{run}-s{i}"), &format!("{run}-r{i}")).await }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    let receivers: Vec<Client> = stream::iter(0..n)
        .map(|i| {
            let rec = rec.clone();
            let base = receiver_base(i);
            async move {
                let h = client::Handlers {
                    new_message: Some(Arc::new(move |v| rec.on_received(&v))),
                    ..Default::default()
                };
                client::connect(&base, &format!("{run}-r{i}"), h).await
            }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    // Senders confirm through `message_delivered` too (used by the open-loop senders).
    let senders: Vec<Client> = stream::iter((0..n).flat_map(|i| (0..window).map(move |w| (i, w))))
        .map(|(i, _w)| {
            let rec = rec.clone();
            let base = sender_base(i);
            async move {
                let h = client::Handlers {
                    message_delivered: Some(Arc::new(move |v| {
                        if let Some((k, _)) = Recorder::key_of(&v) {
                            rec.on_confirmed(k);
                        }
                    })),
                    ..Default::default()
                };
                client::connect(&base, &format!("{run}-s{i}"), h).await
            }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    let mut it = senders.into_iter();
    let senders = (0..n).map(|_| it.by_ref().take(window).collect()).collect();
    Ok(Pairs { convs, senders, receivers })
}

impl Pairs {
    async fn close(self) {
        for c in self.senders.into_iter().flatten().chain(self.receivers) {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
        }
    }
}

fn send_payload(conv: &str, k: u64, sent_us: u64) -> Value {
    json!({ "conversationId": conv, "content": Recorder::content(k, sent_us), "clientMessageId": format!("b{k}") })
}

#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    fn add(&self, e: impl ToString) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first.lock().unwrap();
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }

    fn json(&self) -> Value {
        json!({ "count": self.count.load(Ordering::Relaxed), "first": *self.first.lock().unwrap() })
    }
}

// ---------------------------------------------------------------------------------------------
// single_node / cross_node: closed loop, acks

async fn closed_loop_scenario(o: &Opts, name: &str, nodes: usize) -> Res<Value> {
    let cluster = Cluster::start(nodes).await?;
    let rec = Arc::new(Recorder::new());
    let pairs = setup_pairs(&cluster, name, o.pairs, o.window, &rec, o.connect_concurrency).await?;
    let phase = 1u16;
    let errors = Arc::new(Errors::default());
    let ack_rtts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let server = ServerView::start(&cluster.nodes).await;
    let threads = ThreadMeter::start(cluster.nodes.iter().map(|n| n.pid()).collect());
    let cpu = cluster.cpu_meter();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(o.secs);
    let mut tasks = Vec::new();
    for (i, socks) in pairs.senders.iter().enumerate() {
        for (w, sock) in socks.iter().enumerate() {
            let (sock, conv, rec, errors, rtts) =
                (sock.clone(), pairs.convs[i].clone(), rec.clone(), errors.clone(), ack_rtts.clone());
            let window = o.window;
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = 0u32;
                while Instant::now() < deadline {
                    let k = key(phase, i as u32, w as u32 + n * window as u32);
                    n += 1;
                    let t = rec.now_us();
                    match client::emit_ack(&sock, "send_message", send_payload(&conv, k, t)).await {
                        Ok(ack) if ack["status"] == "success" => {
                            rec.on_confirmed(k);
                            mine.push(rec.now_us() - t);
                        }
                        Ok(ack) => errors.add(ack),
                        Err(e) => errors.add(e),
                    }
                }
                rtts.lock().unwrap().extend(mine);
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    let cpu = cpu.finish();
    let threads = threads.finish();
    let secs = o.secs as f64;
    rec.drain(phase, 0, Duration::from_secs(10)).await;
    let server = server.finish().await;
    let s = rec.summary(phase, secs);
    let mut rtts = std::mem::take(&mut *ack_rtts.lock().unwrap());
    rtts.sort_unstable();
    pairs.close().await;
    Ok(json!({
        "scenario": name,
        "nodes": nodes,
        "redis": nodes > 1,
        "store": "sqlite (one shared file)",
        "pairs": o.pairs,
        "sender_sockets_per_pair": o.window,
        "secs": o.secs,
        "acked": s.confirmed,
        "acked_per_sec": s.confirmed_per_sec(),
        "received": s.received,
        "lost": s.lost,
        "duplicates": s.duplicates,
        "errors": errors.json(),
        "latency_ms": s.latency.json(),
        "worst_100ms_windows": s.worst_json(),
        "ack_rtt_ms": Quantiles::of(&rtts).json(),
        "cpu_cores": cpu,
        "node_threads_cores": threads,
        "server": server,
    }))
}

// ---------------------------------------------------------------------------------------------
// Open loop (paced) senders

struct Paced {
    offered: u64,
    sent: u64,
    /// How late the load generator emitted vs. the schedule (its own saturation).
    send_lag: Quantiles,
    errors: Arc<Errors>,
}

/// Each pair's first sender socket emits at `rate / pairs` msg/s on a fixed schedule (no acks;
/// `message_delivered` confirms); latency is measured from the scheduled instant, so a slow
/// load generator or server cannot hide queueing (no coordinated omission).
async fn paced(pairs: &Pairs, rec: &Arc<Recorder>, phase: u16, rate: u64, secs: u64) -> Paced {
    let n = pairs.convs.len();
    let interval = Duration::from_secs_f64(n as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(secs);
    let errors = Arc::new(Errors::default());
    let lags = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (sock, conv, rec, errors, lags) =
            (pairs.senders[i][0].clone(), pairs.convs[i].clone(), rec.clone(), errors.clone(), lags.clone());
        let offset = interval.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut seq = 0u32;
            loop {
                let at = start + offset + interval * seq;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                mine.push(Instant::now().saturating_duration_since(at).as_micros() as u64);
                let k = key(phase, i as u32, seq);
                seq += 1;
                if let Err(e) = client::emit(&sock, "send_message", send_payload(&conv, k, rec.us_of(at))).await {
                    errors.add(e);
                }
            }
            lags.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut lags = std::mem::take(&mut *lags.lock().unwrap());
    lags.sort_unstable();
    Paced { offered: rate * secs, sent: lags.len() as u64, send_lag: Quantiles::of(&lags), errors }
}

async fn latency_at_rate(o: &Opts) -> Res<Value> {
    let cluster = Cluster::start(3).await?;
    let rec = Arc::new(Recorder::new());
    let pairs = setup_pairs(&cluster, "latency_at_rate", o.pairs, 1, &rec, o.connect_concurrency).await?;
    let server = ServerView::start(&cluster.nodes).await;
    let threads = ThreadMeter::start(cluster.nodes.iter().map(|n| n.pid()).collect());
    let cpu = cluster.cpu_meter();
    let p = paced(&pairs, &rec, 1, o.rate, o.secs).await;
    let cpu = cpu.finish();
    let threads = threads.finish();
    rec.drain(1, p.sent - p.errors.count.load(Ordering::Relaxed), Duration::from_secs(10)).await;
    let server = server.finish().await;
    let s = rec.summary(1, o.secs as f64);
    pairs.close().await;
    Ok(json!({
        "scenario": "latency_at_rate",
        "nodes": 3,
        "redis": true,
        "pairs": o.pairs,
        "secs": o.secs,
        "offered_per_sec": o.rate,
        "offered": p.offered,
        "sent": p.sent,
        "confirmed": s.confirmed,
        "received": s.received,
        "received_per_sec": s.received_per_sec(),
        "lost": s.lost,
        "duplicates": s.duplicates,
        "errors": p.errors.json(),
        "latency_ms": s.latency.json(),
        "worst_100ms_windows": s.worst_json(),
        "loadgen_send_lag_ms": p.send_lag.json(),
        "cpu_cores": cpu,
        "node_threads_cores": threads,
        "server": server,
    }))
}

async fn max_sustained(o: &Opts) -> Res<Value> {
    let cluster = Cluster::start(o.max_nodes).await?;
    let rec = Arc::new(Recorder::new());
    let pairs = setup_pairs(&cluster, "max_sustained", o.pairs, 1, &rec, o.connect_concurrency).await?;
    let mut steps = Vec::new();
    let mut held: Option<u64> = None;
    let mut stop_reason = "all steps held".to_owned();
    for (i, &rate) in o.max_rates.iter().enumerate() {
        let phase = 10 + i as u16;
        let server = ServerView::start(&cluster.nodes).await;
        let threads = ThreadMeter::start(cluster.nodes.iter().map(|n| n.pid()).collect());
        let cpu = cluster.cpu_meter();
        let p = paced(&pairs, &rec, phase, rate, o.step_secs).await;
        let cpu = cpu.finish();
        let threads = threads.finish();
        rec.drain(phase, p.sent - p.errors.count.load(Ordering::Relaxed), Duration::from_secs(5)).await;
        let server = server.finish().await;
        let s = rec.summary(phase, o.step_secs as f64);
        let achieved = s.received_per_sec();
        let ok = s.latency.p99_ms <= o.max_p99_ms && achieved >= 0.9 * rate as f64 && s.lost == 0;
        eprintln!("  max_sustained: {rate}/s -> achieved {achieved}/s, p99 {} ms, held={ok}", s.latency.p99_ms);
        steps.push(json!({
            "offered_per_sec": rate,
            "achieved_per_sec": achieved,
            "sent": p.sent,
            "lost": s.lost,
            "latency_ms": s.latency.json(),
            "worst_100ms_windows": s.worst_json(),
            "loadgen_send_lag_p99_ms": p.send_lag.p99_ms,
            "errors": p.errors.count.load(Ordering::Relaxed),
            "cpu_cores": cpu,
            "node_threads_cores": threads,
            "server": server,
            "held": ok,
        }));
        if ok {
            held = Some(rate);
        } else {
            // On a shared box the generator itself can be starved of CPU: say so when it was late.
            let lag = if p.send_lag.p99_ms > 10.0 {
                format!(" (the load generator itself emitted late: send-lag p99 {} ms)", p.send_lag.p99_ms)
            } else {
                String::new()
            };
            stop_reason = if s.latency.p99_ms > o.max_p99_ms {
                format!("p99 {} ms > {} ms at {rate}/s{lag}", s.latency.p99_ms, o.max_p99_ms)
            } else if s.lost > 0 {
                format!("{} messages lost at {rate}/s", s.lost)
            } else {
                format!("achieved {achieved}/s < 90% of {rate}/s")
            };
            break;
        }
        // Let queues empty between steps.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    pairs.close().await;
    Ok(json!({
        "scenario": "max_sustained",
        "nodes": o.max_nodes,
        "redis": o.max_nodes > 1,
        "pairs": o.pairs,
        "step_secs": o.step_secs,
        "criterion": format!("p99 <= {} ms and achieved >= 90% of offered, no loss", o.max_p99_ms),
        "max_sustained_per_sec": held,
        "stopped_because": stop_reason,
        "steps": steps,
    }))
}

// ---------------------------------------------------------------------------------------------
// idle_memory

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name || n.starts_with(&format!("{name}{{"))).then(|| v.parse().ok()).flatten()
    })
}

async fn idle_memory(o: &Opts) -> Res<Value> {
    let cluster = Cluster::start(1).await?;
    let node = &cluster.nodes[0];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = node.rss();
    let gen_before = infra::rss_of(std::process::id());
    let n = o.idle_conns;
    let cpu = cluster.cpu_meter();
    let t = Instant::now();
    let results: Vec<Res<Client>> = stream::iter(0..n)
        .map(|i| {
            let base = node.base.clone();
            async move { client::connect(&base, &format!("idle-{i}"), client::Handlers::default()).await }
        })
        .buffer_unordered(o.connect_concurrency)
        .collect()
        .await;
    let ramp = t.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let errors = Errors::default();
    let mut clients = Vec::new();
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => errors.add(e),
        }
    }
    // Let the allocator and the per-socket tasks settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = node.rss();
    let gen_after = infra::rss_of(std::process::id());
    let gauge = match reqwest::get(format!("{}/metrics", node.metrics)).await {
        Ok(r) => r.text().await.ok().and_then(|t| metric(&t, "chat_socket_connections")),
        Err(_) => None,
    };
    let connected = clients.len();
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / connected.max(1) as f64;
    drop(clients);
    Ok(json!({
        "scenario": "idle_memory",
        "nodes": 1,
        "connections": n,
        "connected": connected,
        "server_gauge_chat_socket_connections": gauge,
        "errors": errors.json(),
        "rss_before_mib": round2(rss_before as f64 / 1048576.0),
        "rss_after_mib": round2(rss_after as f64 / 1048576.0),
        "bytes_per_connection": per_conn.round(),
        "kib_per_connection": round2(per_conn / 1024.0),
        "loadgen_kib_per_connection": round2(gen_after.saturating_sub(gen_before) as f64 / 1024.0 / connected.max(1) as f64),
        "connect_rate_per_sec": round2(connected as f64 / ramp),
        "connect_concurrency": o.connect_concurrency,
        "ramp_secs": round2(ramp),
        "cpu_cores_during_ramp": cpu,
    }))
}

// ---------------------------------------------------------------------------------------------
// reconnect_storm

/// What every storm socket's reconnect wrapper shares.
struct Storm {
    run: String,
    /// The node URLs a load balancer would route to: the bench removes the killed node, as a
    /// load balancer's health check does. The client itself only knows "the service URL".
    live: Mutex<Vec<String>>,
    clients: Mutex<Vec<Option<Client>>>,
    /// µs (recorder clock) of each socket's latest successful (re)connect.
    connected_at: Mutex<Vec<u64>>,
    landed_on: Mutex<HashMap<String, u64>>,
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
    first_failure: Mutex<Option<String>>,
    base_ms: u64,
    max_ms: u64,
    rec: Arc<Recorder>,
}

fn storm_handlers(st: &Arc<Storm>, i: usize) -> client::Handlers {
    let (rec, st2) = (st.rec.clone(), st.clone());
    client::Handlers {
        new_message: Some(Arc::new(move |v| rec.on_received(&v))),
        close: Some(Arc::new(move || {
            tokio::spawn(reconnect(st2.clone(), i));
        })),
        ..Default::default()
    }
}

/// socket.io-client's policy: delay = min(max, base·2^attempt), randomized ±50 %.
fn backoff(st: &Storm, attempt: u32) -> Duration {
    let d = (st.base_ms as f64 * 2f64.powi(attempt.min(16) as i32)).min(st.max_ms as f64);
    Duration::from_secs_f64(d * rand::rng().random_range(0.5..1.5) / 1000.0)
}

async fn reconnect(st: Arc<Storm>, i: usize) {
    if let Some(old) = st.clients.lock().unwrap()[i].take() {
        drop(old);
    }
    let user = format!("{}-u{i}", st.run);
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(backoff(&st, attempt)).await;
        let url = {
            let live = st.live.lock().unwrap();
            live[rand::rng().random_range(0..live.len())].clone()
        };
        st.attempts.fetch_add(1, Ordering::Relaxed);
        match client::connect(&url, &user, storm_handlers(&st, i)).await {
            Ok(c) => {
                st.clients.lock().unwrap()[i] = Some(c);
                st.connected_at.lock().unwrap()[i] = st.rec.now_us();
                *st.landed_on.lock().unwrap().entry(url).or_default() += 1;
                return;
            }
            Err(e) => {
                st.failed_attempts.fetch_add(1, Ordering::Relaxed);
                st.first_failure.lock().unwrap().get_or_insert(e.to_string());
                attempt += 1;
            }
        }
    }
}

async fn reconnect_storm(o: &Opts) -> Res<Value> {
    let mut cluster = Cluster::start(3).await?;
    let rec = Arc::new(Recorder::new());
    let s = o.storm_sockets;
    let run = "storm".to_owned();
    let st = Arc::new(Storm {
        run: run.clone(),
        live: Mutex::new(cluster.nodes[1..].iter().map(|n| n.base.clone()).collect()),
        clients: Mutex::new((0..s).map(|_| None).collect()),
        connected_at: Mutex::new(vec![0; s]),
        landed_on: Mutex::new(HashMap::new()),
        attempts: AtomicU64::new(0),
        failed_attempts: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        base_ms: o.reconnect_base_ms,
        max_ms: o.reconnect_max_ms,
        rec: rec.clone(),
    });
    // One sender user with a conversation with every storm user, created on a survivor.
    let http = reqwest::Client::new();
    let survivor = cluster.nodes[1].base.clone();
    let sender = format!("{run}-sender");
    let convs: Vec<String> = stream::iter(0..s)
        .map(|i| {
            let (http, base, sender) = (http.clone(), survivor.clone(), sender.clone());
            let run = run.clone();
            async move { infra::conversation(&http, &base, &sender, &format!("{run}-u{i}")).await }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    // Every storm socket on node A.
    let a = cluster.nodes[0].base.clone();
    let t = Instant::now();
    let initial: Vec<Res<Client>> = stream::iter(0..s)
        .map(|i| {
            let (a, st) = (a.clone(), st.clone());
            async move { client::connect(&a, &format!("{}-u{i}", st.run), storm_handlers(&st, i)).await }
        })
        .buffered(o.connect_concurrency)
        .collect()
        .await;
    let initial_secs = t.elapsed().as_secs_f64();
    for (i, c) in initial.into_iter().enumerate() {
        st.clients.lock().unwrap()[i] = Some(c?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // kill -9 node A.
    let survivors_cpu = CpuMeter::start(vec![
        ("loadgen", vec![std::process::id()]),
        ("survivors", cluster.nodes[1..].iter().map(|n| n.pid()).collect()),
        ("redis", cluster.redis.as_ref().map(|r| vec![r.pid()]).unwrap_or_default()),
    ]);
    let killed_at = rec.now_us();
    cluster.nodes[0].kill9();
    let deadline = Instant::now() + Duration::from_secs(o.storm_timeout_secs);
    let recovered = loop {
        let n = st.connected_at.lock().unwrap().iter().filter(|&&t| t > killed_at).count();
        if n == s || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu = survivors_cpu.finish();
    let mut times: Vec<u64> =
        st.connected_at.lock().unwrap().iter().filter(|&&t| t > killed_at).map(|t| t - killed_at).collect();
    times.sort_unstable();
    let recovery_ms = times.last().map(|t| round2(*t as f64 / 1000.0));

    // One message to every storm user, over REST on the survivors.
    let phase = 1u16;
    let survivors: Vec<String> = st.live.lock().unwrap().clone();
    let send_errors = Errors::default();
    let results: Vec<(u64, Res<()>)> = stream::iter(0..s)
        .map(|i| {
            let (http, base, sender, conv, rec) =
                (http.clone(), survivors[i % survivors.len()].clone(), sender.clone(), convs[i].clone(), rec.clone());
            async move {
                let k = key(phase, i as u32, 0);
                (k, infra::rest_send(&http, &base, &sender, &conv, &Recorder::content(k, rec.now_us())).await)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (k, r) in results {
        match r {
            Ok(()) => rec.on_confirmed(k),
            Err(e) => send_errors.add(e),
        }
    }
    rec.drain(phase, 0, Duration::from_secs(15)).await;
    let d = rec.summary(phase, 1.0);
    let landed = st.landed_on.lock().unwrap().clone();
    let node_of: HashMap<String, String> = cluster.nodes.iter().map(|n| (n.base.clone(), n.id.clone())).collect();
    let landed: HashMap<String, u64> =
        landed.into_iter().map(|(u, c)| (node_of.get(&u).cloned().unwrap_or(u), c)).collect();
    let out = json!({
        "scenario": "reconnect_storm",
        "nodes": 3,
        "sockets": s,
        "initial_connect_secs": round2(initial_secs),
        "killed": cluster.nodes[0].id,
        "reconnect_policy": {
            "base_ms": o.reconnect_base_ms, "max_ms": o.reconnect_max_ms, "randomization": 0.5,
            "target": "random live node (what the load balancer does)"
        },
        "recovered": recovered,
        "recovery_ms": recovery_ms,
        "reconnect_ms": Quantiles::of(&times).json(),
        "attempts": st.attempts.load(Ordering::Relaxed),
        "failed_attempts": st.failed_attempts.load(Ordering::Relaxed),
        "first_failure": *st.first_failure.lock().unwrap(),
        "landed_on": landed,
        "cpu_cores_during_recovery": cpu,
        "delivery_after_recovery": {
            "sent": d.confirmed,
            "received": d.received,
            "share": if d.confirmed == 0 { 0.0 } else { round2(d.received as f64 / s as f64) },
            "send_errors": send_errors.json(),
            "latency_ms": d.latency.json(),
        },
    });
    let clients: Vec<Client> = st.clients.lock().unwrap().iter_mut().filter_map(Option::take).collect();
    drop(clients);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// load/RESULTS.md

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim())
        .unwrap_or("?");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{nproc} CPUs ({model}), {:.1} GiB RAM, {}", mem_kib / 1048576.0, sh("uname", &["-sr"]))
}

fn append_results(started: chrono::DateTime<chrono::Utc>, load_at_start: &str, lines: &[String]) {
    let path =
        std::env::var("BENCH_RESULTS").unwrap_or_else(|_| format!("{}/load/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    if path.is_empty() || path == "none" {
        return;
    }
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let mut env: Vec<String> =
        std::env::vars().filter(|(k, _)| k.starts_with("BENCH_")).map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env.push("cargo bench --bench chat".into());
    let mut md = String::new();
    md.push_str(&format!("\n## {}\n\n", started.format("%Y-%m-%d %H:%M UTC")));
    md.push_str(&format!("- machine: {}\n", machine()));
    md.push_str(&format!("- commit: `{commit}`{}\n", if dirty { " (dirty work tree)" } else { "" }));
    md.push_str(&format!("- command: `{}`\n", env.join(" ")));
    md.push_str(&format!(
        "- load average at start / end: {} / {} (`cpu_cores.other` = CPU used by other processes during a scenario)\n",
        load_at_start,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    ));
    md.push_str(&format!("- node binary: `{}`\n\n```json\n", infra::bin_path().display()));
    for l in lines {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    let existing = std::path::Path::new(&path).exists();
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(mut f) => {
            if !existing {
                let _ = f.write_all(
                    b"# Benchmark results\n\nAppended by `cargo bench --bench chat` (see load/README.md).\n",
                );
            }
            let _ = f.write_all(md.as_bytes());
            eprintln!("chat bench: appended to {path}");
        }
        Err(e) => eprintln!("chat bench: cannot write {path}: {e}"),
    }
}
