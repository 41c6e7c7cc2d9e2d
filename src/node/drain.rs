//! The SIGTERM sequence, in order, all within the grace period:
//! 1. readiness off (`/readyz` 503), then wait for the load balancer to notice;
//! 2. stop accepting connections;
//! 3. stop the presence upkeep: from here on this node must look dead to the others;
//! 4. close every socket's transport (clients see `transport close` and reconnect elsewhere);
//! 5. leave presence, so a survivor reaps this node's users (`on_disconnect` does not run on
//!    close, and nothing can be emitted after it);
//! 6. let in-flight requests and socket events finish.

use std::time::Duration;

use tokio::{sync::Notify, task::JoinHandle};

use crate::state::AppState;

pub async fn drain(
    state: &AppState,
    stop_accepting: &Notify,
    server: JoinHandle<std::io::Result<()>>,
    background: JoinHandle<()>,
) {
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    state.start_draining();
    tracing::info!("draining: readiness off");
    tokio::time::sleep(Duration::from_secs(state.config.drain_delay_secs)).await;
    stop_accepting.notify_one();
    background.abort();
    state.chat.fanout().close(Duration::from_secs(5)).await;
    state.chat.leave_presence().await;
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    if tokio::time::timeout_at(deadline, state.in_flight.wait_idle()).await.is_err() {
        tracing::warn!(
            in_flight = state.in_flight.count(),
            "socket events still running at the end of the grace period"
        );
    }
}
