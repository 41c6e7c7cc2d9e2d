//! `latency_at_rate`: cross-node, open loop at `BENCH_RATE` msg/s.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};

use crate::{
    cluster::Cluster,
    cost::CostMeter,
    infra::{Res, ServerView, ThreadMeter},
    opts::Opts,
    paced::paced,
    pairs::setup_pairs,
    stats::Recorder,
};

pub async fn run(o: &Opts) -> Res<Value> {
    let cluster = Cluster::start(3).await?;
    let rec = Arc::new(Recorder::new());
    let pairs = setup_pairs(&cluster, "latency_at_rate", o.pairs, 1, &rec, o.connect_concurrency).await?;
    let server = ServerView::start(&cluster.nodes).await;
    let threads = ThreadMeter::start(cluster.nodes.iter().map(|n| n.pid()).collect());
    let cost = CostMeter::start(&cluster).await;
    let cpu = cluster.cpu_meter();
    let p = paced(&pairs, &rec, 1, o.rate, o.secs).await;
    let cpu = cpu.finish();
    let threads = threads.finish();
    rec.drain(1, p.sent - p.errors.count.load(Ordering::Relaxed), Duration::from_secs(10)).await;
    let server = server.finish().await;
    let s = rec.summary(1, o.secs as f64);
    let per_message = cost.finish(s.received).await;
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
        "per_message": per_message,
    }))
}
