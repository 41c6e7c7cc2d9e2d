//! Periodic upkeep of a running node: presence (refresh well inside the TTL, reap dead nodes,
//! sweep sockets that no longer exist) and the sampled gauges.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{state::AppState, telemetry::metrics as m};

/// Starts the upkeep; aborting the returned task stops all of it.
pub fn spawn(state: &AppState) -> JoinHandle<()> {
    let st = state.clone();
    let gauges = AbortOnDrop(tokio::spawn(sample_gauges(state.clone())));
    tokio::spawn(async move {
        let _gauges = gauges;
        let refresh_every = (st.config.presence_ttl() / 3).max(Duration::from_millis(500));
        let mut tick = tokio::time::interval(refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Reconciling with the sockets that exist is cheap and bounds how long a ghost (a socket
        // that closed in a race with its own connect) can last, so it runs often.
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => st.chat.sweep_presence().await,
                _ = tick.tick() => st.chat.refresh_presence().await,
            }
        }
    })
}

/// Aborts the task when the owner goes away (here: with the background task).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Process CPU/memory, Tokio runtime, sockets by transport, users, store pool and readiness
/// gauges, every two seconds.
async fn sample_gauges(st: AppState) {
    let process = metrics_process::Collector::default();
    process.describe();
    let mut runtime = crate::telemetry::runtime::RuntimeSampler::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        process.collect();
        runtime.sample();
        crate::telemetry::runtime::sample_transports(st.chat.fanout().local_transports());
        crate::telemetry::runtime::sample_users(st.chat.presence().local_users().len());
        if let Some(p) = st.store().pool_stats() {
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "active").set(p.active as f64);
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(p.idle as f64);
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "max").set(p.max as f64);
        }
        let _ = st.readiness(Duration::from_millis(800)).await;
    }
}
