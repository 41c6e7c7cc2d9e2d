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
//! - `fanout_scaling`: `BENCH_FANOUT_NODES` (2,4,6) nodes × `CHAT_FANOUT` of
//!   `BENCH_FANOUT_MODES` (targeted,adapter), open loop at `BENCH_FANOUT_RATE` (1000) msg/s in
//!   total: Redis CPU, Redis commands, pub/sub deliveries and node CPU per message, and how
//!   each grows with the node count.
//! - `idle_memory`: `BENCH_IDLE_CONNS` idle websockets on one node: RSS per connection and the
//!   connect rate of the ramp (`BENCH_CONNECT_CONCURRENCY` connects in flight).
//! - `reconnect_storm`: `BENCH_STORM_SOCKETS` sockets on node A of 3, kill -9 A, clients
//!   reconnect to survivors with jittered exponential backoff; time to full recovery and
//!   delivery to every reconnected user.
//!
//! Layout: `scenarios/` holds one module per scenario (a new one is a file there plus a line in
//! its `mod.rs`); `cluster` starts the nodes, `pairs` the sender/receiver sockets, `paced` the
//! open-loop senders; `infra` the node and Redis processes (launched with the kit the
//! integration tests share, `tests/kit`) and the /proc meters, `cost` the per-message cost
//! (Redis `INFO`, node CPU, deliveries), `client` the Socket.IO client, `stats` the
//! send→receive bookkeeping, `results` the load/RESULTS.md section.

// The kit the integration tests share; not every helper is used here.
#[allow(dead_code)]
#[path = "../../tests/kit/mod.rs"]
mod kit;

mod client;
mod cluster;
mod cost;
mod errors;
mod infra;
mod opts;
mod paced;
mod pairs;
mod results;
mod scenarios;
mod stats;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use infra::round2;
use opts::Opts;
use serde_json::json;

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
        let res = rt.block_on(scenarios::run(&s, &opts));
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
    results::append_results(started, &load_at_start, &lines);
}
