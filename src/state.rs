//! The node's shared state: one `Clone` bundle of cheap handles, given to both axum and
//! socketioxide. Every backend in it is a trait object; which one runs was decided in
//! `crate::node::build`.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;

use crate::{
    auth::Jwt, chat::ChatService, config::Config, coord::SharedBackend, http::server::Connections, in_flight::InFlight,
    store::Store, telemetry::metrics as m,
};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub node_id: String,
    pub jwt: Jwt,
    pub chat: Arc<ChatService>,
    /// Socket event handlers running now (the drain waits for them).
    pub in_flight: Arc<InFlight>,
    /// The HTTP server's live connections (the drain closes them one by one).
    pub connections: Arc<Connections>,
    store: Arc<dyn Store>,
    /// The shared coordination service (Redis), when there is one.
    shared: Option<Arc<dyn SharedBackend>>,
    draining: AtomicBool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What `/readyz` reports.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub store: bool,
    /// `null` without Redis.
    pub redis: Option<bool>,
    pub draining: bool,
}

impl AppState {
    pub fn new(
        config: Config,
        jwt: Jwt,
        chat: Arc<ChatService>,
        store: Arc<dyn Store>,
        shared: Option<Arc<dyn SharedBackend>>,
    ) -> Self {
        Self(Arc::new(Inner {
            node_id: config.node_id(),
            config,
            jwt,
            chat,
            in_flight: Arc::new(InFlight::default()),
            connections: Arc::new(Connections::default()),
            store,
            shared,
            draining: AtomicBool::new(false),
        }))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn shared(&self) -> Option<&Arc<dyn SharedBackend>> {
        self.shared.as_ref()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on `/readyz` says 503 (the first step of the drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::gauge!(m::READY).set(0.0);
    }

    /// Store and Redis reachable (each bounded by `within`) and not draining.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let store = async { matches!(tokio::time::timeout(within, self.store.ping()).await, Ok(Ok(()))) };
        let redis = async {
            match &self.shared {
                None => None,
                Some(c) => Some(c.ping(within).await),
            }
        };
        let (store_ok, redis_ok) = tokio::join!(store, redis);
        let draining = self.is_draining();
        let ready = store_ok && redis_ok.unwrap_or(true) && !draining;
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
        Readiness { ready, checks: Checks { store: store_ok, redis: redis_ok, draining } }
    }
}
