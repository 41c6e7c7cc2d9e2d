//! `single_node` / `cross_node`: closed loop, each sender socket with one outstanding ack.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    client,
    cluster::Cluster,
    cost::CostMeter,
    errors::Errors,
    infra::{Res, ServerView, ThreadMeter},
    opts::Opts,
    pairs::{send_payload, setup_pairs},
    stats::{Quantiles, Recorder, key},
};

pub async fn run(o: &Opts, name: &str, nodes: usize) -> Res<Value> {
    let cluster = Cluster::start(nodes).await?;
    let rec = Arc::new(Recorder::new());
    let pairs = setup_pairs(&cluster, name, o.pairs, o.window, &rec, o.connect_concurrency).await?;
    let phase = 1u16;
    let errors = Arc::new(Errors::default());
    let ack_rtts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let server = ServerView::start(&cluster.nodes).await;
    let threads = ThreadMeter::start(cluster.nodes.iter().map(|n| n.pid()).collect());
    let cost = CostMeter::start(&cluster).await;
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
    let per_message = cost.finish(s.received).await;
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
        "per_message": per_message,
    }))
}
