//! Runs a built node on a bound listener until the shutdown signal, then drains.

use std::future::Future;

use tokio::{net::TcpListener, sync::Notify};

use super::{background, build, drain};
use crate::config::Config;

/// Runs a node on `listener` until `shutdown` resolves, then drains.
///
/// 1. build the node from `config` (store, coordination, service, router);
/// 2. start the background upkeep (presence, gauges);
/// 3. serve HTTP and Socket.IO on `listener`;
/// 4. on `shutdown`, run the drain sequence and close the shared connections.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = build::build(config).await?;
    let state = node.state.clone();
    let background = background::spawn(&state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node = %state.node_id, store = state.store().kind(), cluster = state.shared().is_some(),
        "chat node listening");

    let stop_accepting = std::sync::Arc::new(Notify::new());
    let stop = stop_accepting.clone();
    let app = node.app.clone();
    let connections = state.connections.clone();
    let limits = state.config.http_limits();
    let server = tokio::spawn(async move {
        crate::http::server::serve(listener, app, limits, connections, async move { stop.notified().await }).await
    });

    shutdown.await;
    drain::drain(&state, &stop_accepting, server, background).await;
    if let Some(shared) = state.shared() {
        shared.quit().await;
    }
    drop(node);
    tracing::info!("node stopped");
    Ok(())
}
