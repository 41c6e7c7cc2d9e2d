//! Gauges sampled every few seconds rather than kept up to date on every event: Tokio runtime
//! health (stable metrics, no `tokio_unstable` needed), sockets by current transport (a socket
//! that upgrades from polling to websocket changes transport without any event we see), and the
//! users with a socket on this node.

use std::time::{Duration, Instant};

use socketioxide::TransportType;

use super::metrics as m;
use crate::realtime::fanout::Io;

/// Keeps the previous busy/park totals so the busy ratio covers the last interval only.
pub struct RuntimeSampler {
    last: Option<(Instant, Duration)>,
    parks_seen: u64,
}

impl Default for RuntimeSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeSampler {
    pub fn new() -> Self {
        Self { last: None, parks_seen: 0 }
    }

    /// Reads the current runtime's metrics into the `chat_tokio_*` series.
    pub fn sample(&mut self) {
        let rt = tokio::runtime::Handle::current().metrics();
        let workers = rt.num_workers();
        metrics::gauge!(m::TOKIO_WORKERS).set(workers as f64);
        metrics::gauge!(m::TOKIO_ALIVE_TASKS).set(rt.num_alive_tasks() as f64);
        metrics::gauge!(m::TOKIO_GLOBAL_QUEUE_DEPTH).set(rt.global_queue_depth() as f64);
        let busy: Duration = (0..workers).map(|w| rt.worker_total_busy_duration(w)).sum();
        let parks: u64 = (0..workers).map(|w| rt.worker_park_count(w)).sum();
        let now = Instant::now();
        if let Some((at, before)) = self.last {
            let wall = now.duration_since(at).as_secs_f64() * workers.max(1) as f64;
            if wall > 0.0 {
                let ratio = busy.saturating_sub(before).as_secs_f64() / wall;
                metrics::gauge!(m::TOKIO_BUSY_RATIO).set(ratio.clamp(0.0, 1.0));
            }
        }
        self.last = Some((now, busy));
        metrics::counter!(m::TOKIO_PARKS_TOTAL).increment(parks.saturating_sub(self.parks_seen));
        self.parks_seen = parks;
    }
}

/// Counts this node's sockets by their transport right now.
pub fn sample_transports(io: &Io) {
    let transports: Vec<TransportType> = match io {
        Io::Local(io) => io.sockets().iter().map(|s| s.transport_type()).collect(),
        Io::Redis(io) => io.local().sockets().iter().map(|s| s.transport_type()).collect(),
    };
    let ws = transports.iter().filter(|t| matches!(t, TransportType::Websocket)).count();
    metrics::gauge!(m::SOCKET_TRANSPORT_CONNECTIONS, "transport" => "websocket").set(ws as f64);
    metrics::gauge!(m::SOCKET_TRANSPORT_CONNECTIONS, "transport" => "polling").set((transports.len() - ws) as f64);
}

/// Distinct users with at least one socket on this node. Summed over nodes it counts a user
/// with devices on two nodes twice; `max` or presence lookups give exact per-user answers.
pub fn sample_users(local_users: usize) {
    metrics::gauge!(m::USERS_ONLINE).set(local_users as f64);
}
