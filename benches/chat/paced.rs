//! Open-loop (paced) senders, shared by `latency_at_rate` and `max_sustained`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    client,
    errors::Errors,
    pairs::{Pairs, send_payload},
    stats::{Quantiles, Recorder, key},
};

pub struct Paced {
    pub offered: u64,
    pub sent: u64,
    /// How late the load generator emitted vs. the schedule (its own saturation).
    pub send_lag: Quantiles,
    pub errors: Arc<Errors>,
}

/// Each pair's first sender socket emits at `rate / pairs` msg/s on a fixed schedule (no acks;
/// `message_delivered` confirms); latency is measured from the scheduled instant, so a slow
/// load generator or server cannot hide queueing (no coordinated omission).
pub async fn paced(pairs: &Pairs, rec: &Arc<Recorder>, phase: u16, rate: u64, secs: u64) -> Paced {
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
