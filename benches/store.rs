//! Store write benchmark: `insert_message` throughput and cost through the real `SqliteStore`,
//! in one process or in several processes sharing one file (what nodes on one host do).
//!
//! ```text
//! cargo bench --bench store
//! STORE_PROCS=3 STORE_CONVERSATIONS=50 STORE_CONCURRENCY=50 STORE_SECS=5 cargo bench --bench store
//! ```
//!
//! Each process runs `STORE_CONCURRENCY` tasks, each sending into its own conversation (out of
//! `STORE_CONVERSATIONS`, created up front) with one insert outstanding, for `STORE_SECS`.
//! `STORE_SYNC=full|normal` picks the durability, `STORE_CMID=1` adds a clientMessageId.
//! One JSON line per run: inserts/s, insert latency, CPU µs and bytes written per insert (the
//! WAL volume, from /proc/self/io), summed over processes.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use jobsphere_chat::{
    chat::model::MessageType,
    store::{
        NewMessage, Store,
        sqlite::{Durability, SqliteStore},
    },
};
use serde_json::{Value, json};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// (CPU seconds of this process, bytes it wrote through write syscalls).
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let wchar = io.lines().find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok()).unwrap_or(0);
    (ticks / 100.0, wchar)
}

fn user(i: usize) -> String {
    format!("u{i:06}")
}

/// Creates the conversations (idempotent: every process asks for the same pairs).
async fn conversations(store: &SqliteStore, n: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (user(2 * i), user(2 * i + 1));
        let (c, _) = store.find_or_create_conversation(&a, &b, None).await.expect("create conversation");
        out.push((c.id, a, b));
    }
    out
}

/// One process's share: returns its JSON figures.
async fn run_one(path: &Path, proc_index: usize) -> Value {
    let secs: u64 = env_or("STORE_SECS", 5);
    let concurrency: usize = env_or("STORE_CONCURRENCY", 50);
    let convs_n: usize = env_or("STORE_CONVERSATIONS", 50);
    let cmid = env_or("STORE_CMID", 0u8) == 1;
    let sync = match std::env::var("STORE_SYNC").as_deref() {
        Ok("normal") => Durability::Normal,
        _ => Durability::Full,
    };
    let store = Arc::new(SqliteStore::open_with(path, sync).expect("open store"));
    let convs = Arc::new(conversations(&store, convs_n).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu0, w0) = usage();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, convs, stop) = (store.clone(), convs.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (id, a, b) = &convs[(t + proc_index * concurrency) % convs.len()];
                let t0 = Instant::now();
                store
                    .insert_message(NewMessage {
                        conversation_id: id.clone(),
                        sender_id: a.clone(),
                        receiver_id: b.clone(),
                        message_type: MessageType::Text,
                        content: format!("bench message {n} from task {t} of process {proc_index}"),
                        client_message_id: cmid.then(|| format!("p{proc_index}-t{t}-{n}")),
                    })
                    .await
                    .expect("insert");
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                n += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, w1) = usage();
    json!({ "inserts": lat.len(), "wall": wall, "cpu": cpu1 - cpu0, "written": w1 - w0, "lat": lat })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run it with `cargo bench --bench store` (skipped in test mode)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // A child process: run one share against the parent's file, print its figures.
    if let Ok(path) = std::env::var("STORE_CHILD_PATH") {
        let index = env_or("STORE_CHILD_INDEX", 0);
        println!("{}", rt.block_on(run_one(Path::new(&path), index)));
        return;
    }
    let procs: usize = env_or("STORE_PROCS", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chat.db");
    // Create the schema once so children do not race on it.
    drop(SqliteStore::open(&path).expect("create store"));
    let exe = std::env::current_exe().expect("current exe");
    let children: Vec<_> = (0..procs)
        .map(|i| {
            std::process::Command::new(&exe)
                .arg("--bench")
                .env("STORE_CHILD_PATH", &path)
                .env("STORE_CHILD_INDEX", i.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let parts: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("child output");
            assert!(out.status.success(), "child failed");
            serde_json::from_slice(&out.stdout).expect("child json")
        })
        .collect();
    let inserts: u64 = parts.iter().map(|p| p["inserts"].as_u64().unwrap_or(0)).sum();
    let cpu: f64 = parts.iter().map(|p| p["cpu"].as_f64().unwrap_or(0.0)).sum();
    let written: u64 = parts.iter().map(|p| p["written"].as_u64().unwrap_or(0)).sum();
    let wall = parts.iter().map(|p| p["wall"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    let mut lat: Vec<f64> = parts
        .iter()
        .flat_map(|p| p["lat"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    lat.sort_by(f64::total_cmp);
    let per = |x: f64| if inserts == 0 { 0.0 } else { x / inserts as f64 };
    let out = json!({
        "bench": "store_insert",
        "procs": procs,
        "concurrency_per_proc": env_or("STORE_CONCURRENCY", 50usize),
        "conversations": env_or("STORE_CONVERSATIONS", 50usize),
        "sync": std::env::var("STORE_SYNC").unwrap_or_else(|_| "full".into()),
        "client_message_id": env_or("STORE_CMID", 0u8) == 1,
        "inserts": inserts,
        "inserts_per_sec": round2(inserts as f64 / wall),
        "latency_ms": {
            "p50": round2(quantile(&lat, 0.5)), "p99": round2(quantile(&lat, 0.99)),
            "max": round2(lat.last().copied().unwrap_or(0.0)),
        },
        "cpu_us_per_insert": round2(per(cpu) * 1e6),
        "cpu_cores": round2(cpu / wall),
        "bytes_written_per_insert": per(written as f64).round(),
        "db_bytes": std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
    });
    println!("{out}");
}
