//! `reconnect_storm`: sockets on node A of 3, kill -9 A, clients reconnect to the survivors with
//! jittered exponential backoff; time to full recovery and delivery to every reconnected user.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use rand::Rng;
use serde_json::{Value, json};
use tf_rust_socketio::asynchronous::Client;

use crate::{
    client,
    cluster::Cluster,
    errors::Errors,
    infra::{self, CpuMeter, Res, round2},
    opts::Opts,
    stats::{Quantiles, Recorder, key},
};

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

pub async fn run(o: &Opts) -> Res<Value> {
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
