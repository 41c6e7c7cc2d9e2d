//! `max_sustained`: open loop at rising rates until p99 or throughput gives way.

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
        let cost = CostMeter::start(&cluster).await;
        let cpu = cluster.cpu_meter();
        let p = paced(&pairs, &rec, phase, rate, o.step_secs).await;
        let cpu = cpu.finish();
        let threads = threads.finish();
        rec.drain(phase, p.sent - p.errors.count.load(Ordering::Relaxed), Duration::from_secs(5)).await;
        let server = server.finish().await;
        let s = rec.summary(phase, o.step_secs as f64);
        let per_message = cost.finish(s.received).await;
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
            "per_message": per_message,
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
