//! What one message costs the cluster, measured around an interval: Redis CPU
//! (`INFO cpu` `used_cpu_sys` + `used_cpu_user`), Redis commands (`INFO stats`
//! `total_commands_processed` and `INFO commandstats` by command), Redis pub/sub deliveries
//! (Redis counts none, so the nodes do: `chat_redis_pubsub_received_total` for the targeted
//! fan-out's per-user channels plus `chat_redis_adapter_received_total` for the Socket.IO
//! adapter's channel, summed over nodes) and the nodes' CPU summed (/proc/<pid>/stat).
//!
//! The meter's own `INFO` calls are left out of the command counts.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{
    cluster::Cluster,
    infra::{Res, cpu_ticks, round2},
};

const TICKS_PER_SEC: f64 = 100.0;
const DELIVERY_COUNTERS: &[(&str, &str)] =
    &[("targeted", "chat_redis_pubsub_received_total"), ("adapter", "chat_redis_adapter_received_total")];

/// One `INFO cpu stats commandstats` reading.
#[derive(Debug, Clone, Default)]
struct RedisInfo {
    cpu_secs: f64,
    cpu_sys_secs: f64,
    commands: u64,
    calls: BTreeMap<String, u64>,
}

/// `INFO` over a raw RESP connection (the bench needs nothing else from Redis).
async fn redis_info(port: u16) -> Res<RedisInfo> {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut s = BufReader::new(s);
    s.get_mut().write_all(b"*4\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n").await?;
    let mut header = String::new();
    s.read_line(&mut header).await?;
    let len: usize = header
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("INFO: unexpected reply {header:?}"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let mut info = RedisInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        match k {
            "used_cpu_sys" | "used_cpu_user" => {
                let secs = v.trim().parse::<f64>().unwrap_or(0.0);
                info.cpu_secs += secs;
                if k == "used_cpu_sys" {
                    info.cpu_sys_secs += secs;
                }
            }
            "total_commands_processed" => info.commands = v.trim().parse().unwrap_or(0),
            _ => {
                // cmdstat_evalsha:calls=12,usec=...
                if let Some(cmd) = k.strip_prefix("cmdstat_") {
                    let calls = v.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|c| c.parse().ok());
                    info.calls.insert(cmd.to_owned(), calls.unwrap_or(0));
                }
            }
        }
    }
    Ok(info)
}

/// Sum over nodes of each counter in [`DELIVERY_COUNTERS`] (0 where a node has none).
async fn deliveries(urls: &[String]) -> [f64; 2] {
    let mut out = [0.0; 2];
    for url in urls {
        let Ok(r) = reqwest::get(format!("{url}/metrics")).await else { continue };
        let Ok(text) = r.text().await else { continue };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            for (i, (_, name)) in DELIVERY_COUNTERS.iter().enumerate() {
                let Some(rest) = line.strip_prefix(name) else { continue };
                if rest.starts_with(' ') || rest.starts_with('{') {
                    out[i] += rest.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
                }
            }
        }
    }
    out
}

pub struct CostMeter {
    redis_port: Option<u16>,
    redis: Option<RedisInfo>,
    node_pids: Vec<u32>,
    node_ticks: u64,
    urls: Vec<String>,
    deliveries: [f64; 2],
}

impl CostMeter {
    pub async fn start(c: &Cluster) -> Self {
        let redis_port = c.redis.as_ref().map(|r| r.port);
        let redis = match redis_port {
            Some(p) => redis_info(p).await.ok(),
            None => None,
        };
        let node_pids: Vec<u32> = c.nodes.iter().map(|n| n.pid()).collect();
        let urls: Vec<String> = c.nodes.iter().map(|n| n.metrics.clone()).collect();
        let deliveries = deliveries(&urls).await;
        let node_ticks = node_pids.iter().map(|p| cpu_ticks(*p)).sum();
        Self { redis_port, redis, node_pids, node_ticks, urls, deliveries }
    }

    /// Per-message figures since `start`, over `messages` delivered messages:
    /// `{ messages, node_cpu_ms, redis_cpu_us, redis_cpu_sys_us, redis_commands, redis_pubsub_deliveries,
    ///    redis_pubsub_deliveries_by_channel, redis_commands_by_name }`.
    pub async fn finish(&self, messages: u64) -> Value {
        let node_ticks: u64 = self.node_pids.iter().map(|p| cpu_ticks(*p)).sum();
        let per = |x: f64| x / messages.max(1) as f64;
        let node_cpu_ms = per(node_ticks.saturating_sub(self.node_ticks) as f64 / TICKS_PER_SEC * 1000.0);
        let mut o = json!({
            "messages": messages,
            "node_cpu_ms": round3(node_cpu_ms),
        });
        let (Some(port), Some(before)) = (self.redis_port, &self.redis) else { return o };
        let Ok(after) = redis_info(port).await else { return o };
        let now = deliveries(&self.urls).await;
        let d: Vec<f64> = now.iter().zip(&self.deliveries).map(|(a, b)| a - b).collect();
        // `total_commands_processed` counts the start reading's INFO (not this one).
        let commands = after.commands.saturating_sub(before.commands).saturating_sub(1);
        let mut by_name: Vec<(String, f64)> = after
            .calls
            .iter()
            .filter(|(k, _)| k.as_str() != "info")
            .map(|(k, v)| (k.clone(), per(v.saturating_sub(*before.calls.get(k).unwrap_or(&0)) as f64)))
            .filter(|(_, v)| *v >= 0.005)
            .collect();
        by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
        o["redis_cpu_us"] = json!(round2(per((after.cpu_secs - before.cpu_secs) * 1e6)));
        // The kernel's share (socket reads/writes, waking the receiving processes) against Redis's own.
        o["redis_cpu_sys_us"] = json!(round2(per((after.cpu_sys_secs - before.cpu_sys_secs) * 1e6)));
        o["redis_commands"] = json!(round2(per(commands as f64)));
        o["redis_pubsub_deliveries"] = json!(round2(per(d.iter().sum())));
        o["redis_pubsub_deliveries_by_channel"] = Value::Object(
            DELIVERY_COUNTERS
                .iter()
                .zip(&d)
                .map(|((label, _), v)| ((*label).to_owned(), json!(round2(per(*v)))))
                .collect(),
        );
        o["redis_commands_by_name"] = Value::Object(by_name.into_iter().map(|(k, v)| (k, json!(round2(v)))).collect());
        o
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
