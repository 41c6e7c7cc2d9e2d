//! `fanout_scaling`: what a message costs as the cluster grows. For each node count of
//! `BENCH_FANOUT_NODES` (2,4,6) and each `CHAT_FANOUT` of `BENCH_FANOUT_MODES`
//! (targeted,adapter), a fresh cluster, `BENCH_PAIRS` pairs spread over all its nodes (sender on
//! node i, receiver on node i+1), `BENCH_WARMUP_SECS` of warm-up, then `BENCH_SECS` open loop
//! at `BENCH_FANOUT_RATE` msg/s in total (well below saturation, so the figures are cost, not
//! queueing). Per delivered message: Redis CPU, Redis commands, Redis pub/sub deliveries and
//! the nodes' CPU summed ([`crate::cost`]). Node counts run in turn, both modes back to back
//! at each, so background load on a shared box hits both alike.
//!
//! The targeted fan-out reaches only the nodes holding a recipient: its figures should not
//! depend on the node count (`growth` ≤ 1.2 from the fewest to the most nodes). The adapter
//! delivers every event to every node.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};

use crate::{
    cluster::Cluster,
    cost::CostMeter,
    infra::{Res, round2},
    opts::Opts,
    paced::paced,
    pairs::setup_pairs,
    stats::Recorder,
};

/// The per-message figures compared across node counts.
const FIGURES: &[&str] = &["redis_cpu_us", "redis_commands", "redis_pubsub_deliveries", "node_cpu_ms"];
const MAX_GROWTH: f64 = 1.2;

async fn one(o: &Opts, nodes: usize, mode: &str) -> Res<Value> {
    let cluster = Cluster::start_with(nodes, &[("CHAT_FANOUT", mode)]).await?;
    let rec = Arc::new(Recorder::new());
    let pairs =
        setup_pairs(&cluster, &format!("fanout-{mode}-{nodes}"), o.pairs, 1, &rec, o.connect_concurrency).await?;
    if o.warmup_secs > 0 {
        let w = paced(&pairs, &rec, 1, o.fanout_rate, o.warmup_secs).await;
        rec.drain(1, w.sent - w.errors.count.load(Ordering::Relaxed), Duration::from_secs(5)).await;
    }
    let cost = CostMeter::start(&cluster).await;
    let cpu = cluster.cpu_meter();
    let p = paced(&pairs, &rec, 2, o.fanout_rate, o.secs).await;
    let cpu = cpu.finish();
    rec.drain(2, p.sent - p.errors.count.load(Ordering::Relaxed), Duration::from_secs(10)).await;
    let s = rec.summary(2, o.secs as f64);
    let per_message = cost.finish(s.received).await;
    pairs.close().await;
    eprintln!("  fanout_scaling: {nodes} nodes, {mode}: {per_message}");
    Ok(json!({
        "nodes": nodes,
        "fanout": mode,
        "offered_per_sec": o.fanout_rate,
        "sent": p.sent,
        "received": s.received,
        "lost": s.lost,
        "duplicates": s.duplicates,
        "errors": p.errors.json(),
        "latency_ms": s.latency.json(),
        "loadgen_send_lag_p99_ms": p.send_lag.p99_ms,
        "cpu_cores": cpu,
        "per_message": per_message,
    }))
}

/// Per mode: each figure at the most nodes over the same figure at the fewest.
fn growth(runs: &[Value], modes: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for mode in modes {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["fanout"] == mode.as_str()).collect();
        let (Some(lo), Some(hi)) = (
            mine.iter().min_by_key(|r| r["nodes"].as_u64().unwrap_or(0)),
            mine.iter().max_by_key(|r| r["nodes"].as_u64().unwrap_or(0)),
        ) else {
            continue;
        };
        let mut g = serde_json::Map::new();
        for f in FIGURES {
            let (a, b) = (lo["per_message"][f].as_f64(), hi["per_message"][f].as_f64());
            if let (Some(a), Some(b)) = (a, b)
                && a > 0.0
            {
                g.insert((*f).to_owned(), json!(round2(b / a)));
            }
        }
        let within = g.values().all(|v| v.as_f64().is_some_and(|x| x <= MAX_GROWTH));
        g.insert("nodes".to_owned(), json!(format!("{} -> {}", lo["nodes"], hi["nodes"])));
        g.insert(format!("all_within_{MAX_GROWTH}x"), json!(within));
        out.insert(mode.clone(), Value::Object(g));
    }
    Value::Object(out)
}

pub async fn run(o: &Opts) -> Res<Value> {
    let mut runs = Vec::new();
    for &nodes in &o.fanout_nodes {
        for mode in &o.fanout_modes {
            runs.push(one(o, nodes, mode).await?);
        }
    }
    let lost: u64 = runs.iter().map(|r| r["lost"].as_u64().unwrap_or(0)).sum();
    Ok(json!({
        "scenario": "fanout_scaling",
        "redis": true,
        "pairs": o.pairs,
        "secs": o.secs,
        "warmup_secs": o.warmup_secs,
        "offered_per_sec": o.fanout_rate,
        "lost": lost,
        "growth": growth(&runs, &o.fanout_modes),
        "runs": runs,
    }))
}
