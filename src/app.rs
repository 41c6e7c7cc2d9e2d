//! Wiring: builds a node from its configuration (store, coordination backends, Socket.IO with
//! the local or Redis adapter, REST) and runs it until the shutdown signal, then drains.

use std::{
    future::Future,
    net::SocketAddr,
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use serde::Serialize;
use tokio::{net::TcpListener, sync::Notify};

use crate::{
    auth::Jwt,
    chat::service::ChatService,
    cluster::Cluster,
    config::Config,
    coord::{
        Cache, LimitKind, Quota, RateLimiter,
        local::{LocalCache, LocalPresence, LocalRateLimiter},
        presence::PresenceTracker,
    },
    http,
    lifecycle::InFlight,
    realtime::{
        self,
        fanout::{Fanout, Io},
    },
    store::{Store, sqlite::SqliteStore},
    telemetry::{metered_store::MeteredStore, metrics as m},
};

/// Cheap handles shared by axum and socketioxide.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub node_id: String,
    pub jwt: Jwt,
    pub chat: Arc<ChatService>,
    store: Arc<dyn Store>,
    cluster: Option<Cluster>,
    sqlite: Option<Arc<SqliteStore>>,
    draining: AtomicBool,
    pub in_flight: Arc<InFlight>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: serde_json::Value,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Store and Redis reachable (each bounded by `within`) and not draining.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let store = async { matches!(tokio::time::timeout(within, self.store.ping()).await, Ok(Ok(()))) };
        let redis = async {
            match &self.cluster {
                None => None,
                Some(c) => Some(c.ping(within).await),
            }
        };
        let (store_ok, redis_ok) = tokio::join!(store, redis);
        let draining = self.is_draining();
        let ready = store_ok && redis_ok.unwrap_or(true) && !draining;
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
        Readiness { ready, checks: serde_json::json!({ "store": store_ok, "redis": redis_ok, "draining": draining }) }
    }
}

/// Opens the configured store (SQLite in `CHAT_DATA_DIR`, or MongoDB) and migrates it.
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<SqliteStore>>)> {
    let (store, sqlite) = connect_store(config).await?;
    store.migrate().await.context("migrating the store")?;
    Ok((store, sqlite))
}

/// As [`open_store`], for a serving node: a MongoDB that does not answer yet is not fatal. The
/// node starts not-ready and the store migrates itself once MongoDB answers (as with Redis).
/// Anything else (conflicting indexes, foreign documents) still stops the start.
async fn open_store_serving(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<SqliteStore>>)> {
    let (store, sqlite) = connect_store(config).await?;
    match store.migrate().await {
        Err(crate::store::StoreError::Unavailable(e)) if config.mongodb_uri.is_some() => {
            tracing::warn!(error = %e, "MongoDB does not answer: starting not-ready until it does");
        }
        other => other.context("migrating the store")?,
    }
    Ok((store, sqlite))
}

async fn connect_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<SqliteStore>>)> {
    let (store, sqlite): (Arc<dyn Store>, Option<Arc<SqliteStore>>) =
        match crate::store::mongo::MongoSettings::from_config(config) {
            Some(settings) => (crate::store::mongo::connect(&settings).await?, None),
            None => {
                let s = Arc::new(
                    SqliteStore::open_dir(&config.data_dir, config.sqlite_synchronous)
                        .context("opening the SQLite store")?,
                );
                (s.clone(), Some(s))
            }
        };
    Ok((Arc::new(MeteredStore(store)), sqlite))
}

/// Runs a node on `listener` until `shutdown` resolves, then drains (DESIGN §8).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let node_id = config.node_id();
    let jwt = Jwt::from_config(&config).context("loading JWT key material")?;
    let (store, sqlite) = open_store_serving(&config).await?;
    let message_quota = Quota { limit: config.rate_limit_messages, window: config.rate_limit_window() };
    let connect_quota = Quota { limit: config.rate_limit_connects, window: config.connect_window() };

    let cluster = match &config.redis_url {
        Some(url) => Some(
            Cluster::connect(url, &config.redis_prefix, &node_id, config.presence_ttl())
                .await
                .context("connecting to Redis")?,
        ),
        None => None,
    };
    let (presence, cache, limiter): (PresenceTracker, Arc<dyn Cache>, Arc<dyn RateLimiter>) = match &cluster {
        Some(c) => (
            PresenceTracker::new(c.presence()),
            c.cache(),
            c.rate_limiter(&[(LimitKind::Message, message_quota), (LimitKind::Connection, connect_quota)]),
        ),
        None => {
            let limiter = Arc::new(LocalRateLimiter::new(&[
                (LimitKind::Message, message_quota),
                (LimitKind::Connection, connect_quota),
            ]));
            let sweeper = limiter.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    sweeper.sweep();
                }
            });
            (PresenceTracker::new(Arc::new(LocalPresence::default())), Arc::new(LocalCache::default()), limiter)
        }
    };

    // The Socket.IO handle must exist before the service (which emits through it), and the
    // namespace handlers need the state: build io, then state, then register the namespace.
    let builder = realtime::builder();
    let (io_layer_router, fanout): (Box<dyn FnOnce(axum::Router) -> axum::Router + Send>, Fanout) = match &cluster {
        None => {
            let (layer, io) = builder.build_layer();
            (Box::new(move |r| realtime::attach(r, layer)), Fanout::new(Io::Local(io)))
        }
        Some(c) => {
            let adapter = c.adapter().await.context("starting the Redis adapter")?;
            let (layer, io) = builder.with_adapter::<socketioxide_redis::FredAdapter<_>>(adapter).build_layer();
            (Box::new(move |r| realtime::attach(r, layer)), Fanout::new(Io::Redis(io)))
        }
    };
    let chat = Arc::new(ChatService::new(store.clone(), cache, limiter, presence, fanout.clone()));
    let state = AppState(Arc::new(Inner {
        config: config.clone(),
        node_id: node_id.clone(),
        jwt,
        chat: chat.clone(),
        store,
        cluster: cluster.clone(),
        sqlite,
        draining: AtomicBool::new(false),
        in_flight: Arc::new(InFlight::default()),
    }));
    match fanout.io() {
        Io::Local(io) => realtime::register(io, state.clone()),
        Io::Redis(io) => realtime::register(io, state.clone()).await.context("registering the namespace")?,
    }

    m::register_zeros(
        &[
            realtime::events::JOIN_CONVERSATION,
            realtime::events::LEAVE_CONVERSATION,
            realtime::events::SEND_MESSAGE,
            realtime::events::TYPING_START,
            realtime::events::TYPING_STOP,
            realtime::events::MARK_AS_READ,
            realtime::events::MARK_AS_DELIVERED,
            realtime::events::GET_ONLINE_STATUS,
            realtime::events::SYNC,
            realtime::events::NEW_MESSAGE,
            "unknown",
        ],
        cluster.is_some(),
    );
    let background = spawn_background(&state);
    // CORS outermost: browsers on other origins need it on `/socket.io/` (polling) as well.
    let app = io_layer_router(http::router(state.clone())).layer(http::layers::cors(&config.cors_origins));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node = %node_id, store = state.store.kind(), cluster = cluster.is_some(), "chat node listening");

    let stop_accepting = Arc::new(Notify::new());
    let stop = stop_accepting.clone();
    let server = tokio::spawn(async move {
        // Chat frames are small and latency-bound: no Nagle delay on any connection.
        // Counted streams: bytes in/out of the public port (websockets included).
        let listener = crate::telemetry::netio::CountingListener(listener);
        let listener =
            axum::serve::ListenerExt::tap_io(listener, |io: &mut crate::telemetry::netio::CountingStream| {
                if let Err(e) = io.tcp().set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
            });
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.notified().await })
            .await
    });

    shutdown.await;
    drain(&state, &fanout, &stop_accepting, server, background).await;
    if let Some(c) = &cluster {
        c.quit().await;
    }
    tracing::info!("node stopped");
    Ok(())
}

/// SIGTERM sequence: not-ready → wait for the load balancer → stop accepting → close sockets
/// (clients reconnect elsewhere) → leave presence → let in-flight work finish, all within the
/// grace period.
async fn drain(
    state: &AppState,
    fanout: &Fanout,
    stop_accepting: &Notify,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    background: tokio::task::JoinHandle<()>,
) {
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    state.draining.store(true, Ordering::SeqCst);
    metrics::gauge!(m::READY).set(0.0);
    tracing::info!("draining: readiness off");
    tokio::time::sleep(Duration::from_secs(state.config.drain_delay_secs)).await;
    stop_accepting.notify_one();
    // No more presence refreshes: from here on this node must look dead to the others.
    background.abort();
    fanout.close(Duration::from_secs(5)).await;
    // on_disconnect does not run on close, and nothing can be emitted after it: expire this
    // node's heartbeat so a survivor reaps its users and announces those not reconnected
    // elsewhere (in-process mode has no one left to tell).
    if let Err(e) = state.chat.presence().backend().leave().await {
        tracing::warn!(error = %e, "presence leave failed; entries expire with the TTL");
    }
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

/// Presence upkeep (refresh well inside the TTL, reap dead nodes), plus the sampled gauges.
fn spawn_background(state: &AppState) -> tokio::task::JoinHandle<()> {
    let st = state.clone();
    let gauges = AbortOnDrop(tokio::spawn(sample_gauges(state.clone())));
    let probe = state.cluster.as_ref().map(|c| AbortOnDrop(c.spawn_lag_probe()));
    tokio::spawn(async move {
        let _gauges = gauges;
        let _probe = probe;
        let refresh_every = (st.config.presence_ttl() / 3).max(Duration::from_millis(500));
        let mut tick = tokio::time::interval(refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Reconciling with the sockets that exist is cheap and bounds how long a ghost (a socket
        // that closed in a race with its own connect) can last, so it runs often.
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let live = st.chat.fanout().local_socket_ids();
                    for (user, t) in st.chat.presence().sweep(&live).await {
                        if let crate::coord::presence::Transition::Offline(at) = t {
                            st.chat.announce(&user, false, Some(at)).await;
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            if let Err(e) = st.chat.presence().refresh().await {
                tracing::warn!(error = %e, "presence refresh failed");
            }
            match st.chat.presence().backend().reap().await {
                Ok(gone) => {
                    for (user, t) in gone {
                        st.chat.announce(&user, false, Some(t)).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence reaping failed"),
            }
        }
    })
}

/// Aborts the task when the owner goes away (here: with the background task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

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
        crate::telemetry::runtime::sample_transports(st.chat.fanout().io());
        crate::telemetry::runtime::sample_users(st.chat.presence().local_users().len());
        if let Some(s) = &st.sqlite {
            let (active, idle, max) = s.pool_status();
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "active").set(active as f64);
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
            metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "max").set(max as f64);
        }
        let _ = st.readiness(Duration::from_millis(800)).await;
    }
}
