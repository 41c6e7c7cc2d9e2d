//! The SIGTERM sequence, in order, all within the grace period (`CHAT_SHUTDOWN_GRACE_SECS`):
//! 1. readiness off (`/readyz` 503), then wait `CHAT_DRAIN_DELAY_SECS` for the load balancer to
//!    notice;
//! 2. stop accepting connections (plain HTTP connections finish their request and close);
//! 3. close the socket transports one after the other over `CHAT_DRAIN_CLOSE_WINDOW_SECS`
//!    (clients see `transport close` and reconnect elsewhere, spread out so that the
//!    connection throttle lets them all in, NAT'd clients sharing an address included);
//!    the node keeps serving the sockets not closed yet, presence upkeep included;
//! 4. let in-flight socket events, REST requests and REST sends finish while the fan-out is
//!    still open, so a message they commit is still delivered;
//! 5. stop the presence upkeep: from here on this node must look dead to the others;
//! 6. close the fan-out (and any socket left), then leave presence, so a survivor reaps this
//!    node's users (nothing can be emitted after it).

use std::time::Duration;

use tokio::{sync::Notify, task::JoinHandle, time::Instant};

use crate::{http::server::CloseReason, state::AppState};

/// Kept of the grace period for closing the fan-out and leaving presence, after in-flight
/// work was waited for.
const EXIT_RESERVE: Duration = Duration::from_secs(3);
/// Most time given to closing the fan-out (it blocks while Redis is down).
const FANOUT_CLOSE: Duration = Duration::from_secs(5);

pub async fn drain(
    state: &AppState,
    stop_accepting: &Notify,
    mut server: JoinHandle<std::io::Result<()>>,
    background: JoinHandle<()>,
) {
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let started = Instant::now();
    let deadline = started + grace;
    state.start_draining();
    tracing::info!("draining: readiness off");
    tokio::time::sleep(Duration::from_secs(state.config.drain_delay_secs)).await;
    stop_accepting.notify_one();

    let window = state.config.drain_close_window();
    let closed = state.connections.close_realtime_over(window, CloseReason::Drain).await;
    tracing::info!(closed, window_secs = window.as_secs_f64(), "draining: socket transports closed");

    // In-flight work finishes before the fan-out closes (a send that commits now still
    // reaches its recipients), within the grace period less what the exit needs.
    let settle_by = deadline.checked_sub(EXIT_RESERVE).unwrap_or(deadline).max(Instant::now());
    let server_done = tokio::time::timeout_at(settle_by, &mut server).await.is_ok();
    if tokio::time::timeout_at(settle_by, state.in_flight.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight.count(), "in-flight work still running: closing the fan-out anyway");
    }

    background.abort();
    let left = deadline.saturating_duration_since(Instant::now());
    state.chat.fanout().close(FANOUT_CLOSE.min(left.max(Duration::from_secs(1)))).await;
    state.chat.leave_presence().await;
    if !server_done && tokio::time::timeout_at(deadline, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    if tokio::time::timeout_at(deadline, state.in_flight.wait_idle()).await.is_err() {
        tracing::warn!(
            in_flight = state.in_flight.count(),
            "socket events still running at the end of the grace period"
        );
    }
    tracing::info!(secs = started.elapsed().as_secs_f64(), "drained");
}
