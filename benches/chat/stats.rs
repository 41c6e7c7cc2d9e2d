//! Send→receive bookkeeping. Every message carries its key (phase, pair, seq) and its send
//! instant (µs since the recorder's base, one clock: senders and receivers live in this process)
//! in its content; receivers record arrival, senders record the server's confirmation (ack or
//! `message_delivered`). Loss = confirmed but never received.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Filler that makes a benchmark message the size of an ordinary chat line.
const FILLER: &str = "Can you come on Tuesday morning to look at the leaking kitchen tap?";

#[derive(Default)]
struct Phase {
    confirmed: Vec<u64>,
    /// (key, latency µs, send instant µs)
    received: Vec<(u64, u64, u64)>,
}

pub struct Recorder {
    base: Instant,
    phases: Mutex<HashMap<u16, Phase>>,
}

pub fn key(phase: u16, pair: u32, seq: u32) -> u64 {
    ((phase as u64) << 52) | (((pair as u64) & 0xFF_FFFF) << 28) | ((seq as u64) & 0x0FFF_FFFF)
}

fn phase_of(key: u64) -> u16 {
    (key >> 52) as u16
}

impl Recorder {
    pub fn new() -> Self {
        Self { base: Instant::now(), phases: Mutex::new(HashMap::new()) }
    }

    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// µs since the base of an instant (for scheduled send times).
    pub fn us_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_micros() as u64
    }

    pub fn content(key: u64, sent_us: u64) -> String {
        format!("bench {key} {sent_us} {FILLER}")
    }

    fn parse(content: &str) -> Option<(u64, u64)> {
        let mut it = content.split(' ');
        if it.next()? != "bench" {
            return None;
        }
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// `new_message` / `message_delivered` payload → (key, sent_us).
    pub fn key_of(event: &Value) -> Option<(u64, u64)> {
        Self::parse(event["message"]["content"].as_str()?)
    }

    /// A receiver got `new_message`.
    pub fn on_received(&self, event: &Value) {
        let now = self.now_us();
        if let Some((k, sent)) = Self::key_of(event) {
            let mut p = self.phases.lock().unwrap();
            p.entry(phase_of(k)).or_default().received.push((k, now.saturating_sub(sent), sent));
        }
    }

    /// The server confirmed (acked) the message with this key.
    pub fn on_confirmed(&self, key: u64) {
        self.phases.lock().unwrap().entry(phase_of(key)).or_default().confirmed.push(key);
    }

    /// Waits until at least `expect_confirmed` messages of `phase` were confirmed and every
    /// confirmed one was received, at most `max`.
    pub async fn drain(&self, phase: u16, expect_confirmed: u64, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            let done = {
                let p = self.phases.lock().unwrap();
                p.get(&phase).is_none_or(|ph| {
                    let got: HashSet<u64> = ph.received.iter().map(|r| r.0).collect();
                    ph.confirmed.len() as u64 >= expect_confirmed && ph.confirmed.iter().all(|k| got.contains(k))
                })
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Figures of one phase that ran for `secs`.
    pub fn summary(&self, phase: u16, secs: f64) -> Summary {
        let p = self.phases.lock().unwrap();
        let empty = Phase::default();
        let ph = p.get(&phase).unwrap_or(&empty);
        let mut first: HashMap<u64, u64> = HashMap::with_capacity(ph.received.len());
        let mut duplicates = 0u64;
        // Worst latency per 100 ms window of send time: shows whether slow messages cluster.
        let t0 = ph.received.iter().map(|r| r.2).min().unwrap_or(0);
        let mut windows: HashMap<u64, u64> = HashMap::new();
        for (k, lat, sent) in &ph.received {
            if first.insert(*k, *lat).is_some() {
                duplicates += 1;
            }
            let w = windows.entry((sent - t0) / 100_000).or_insert(0);
            *w = (*w).max(*lat);
        }
        let mut worst: Vec<(u64, u64)> = windows.into_iter().collect();
        worst.sort_by_key(|w| std::cmp::Reverse(w.1));
        worst.truncate(5);
        let confirmed: HashSet<u64> = ph.confirmed.iter().copied().collect();
        let lost = confirmed.iter().filter(|k| !first.contains_key(k)).count() as u64;
        let mut lats: Vec<u64> = first.values().copied().collect();
        lats.sort_unstable();
        Summary {
            secs,
            confirmed: confirmed.len() as u64,
            received: first.len() as u64,
            lost,
            duplicates,
            latency: Quantiles::of(&lats),
            worst_windows: worst.into_iter().map(|(w, lat)| (w * 100, ms(lat))).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    /// From sorted µs samples.
    pub fn of(sorted_us: &[u64]) -> Self {
        if sorted_us.is_empty() {
            return Self::default();
        }
        let q = |f: f64| {
            let i = ((sorted_us.len() as f64 * f).ceil() as usize).clamp(1, sorted_us.len()) - 1;
            ms(sorted_us[i])
        };
        Self {
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(sorted_us[sorted_us.len() - 1]),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "p999": self.p999_ms, "max": self.max_ms })
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

pub struct Summary {
    pub secs: f64,
    pub confirmed: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub latency: Quantiles,
    /// The five 100 ms windows (offset in ms from the first send) with the slowest message.
    pub worst_windows: Vec<(u64, f64)>,
}

impl Summary {
    pub fn confirmed_per_sec(&self) -> f64 {
        (self.confirmed as f64 / self.secs * 10.0).round() / 10.0
    }

    /// `[[offset_ms, max_latency_ms], ...]`
    pub fn worst_json(&self) -> Value {
        json!(self.worst_windows)
    }

    pub fn received_per_sec(&self) -> f64 {
        (self.received as f64 / self.secs * 10.0).round() / 10.0
    }
}
