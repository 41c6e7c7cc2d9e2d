//! `idle_memory`: idle websockets on one node; RSS per connection and the connect rate.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tf_rust_socketio::asynchronous::Client;

use crate::{
    client,
    cluster::Cluster,
    errors::Errors,
    infra::{self, Res, round2},
    opts::Opts,
};

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name || n.starts_with(&format!("{name}{{"))).then(|| v.parse().ok()).flatten()
    })
}

pub async fn run(o: &Opts) -> Res<Value> {
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
