//! Builds a node from its configuration: the store, then every coordination backend, chosen
//! once (in-process, or Redis when `REDIS_URL` is set), then the chat service, the state and the
//! router with Socket.IO attached.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use futures::future::BoxFuture;
use socketioxide_redis::FredAdapter;
use tokio::task::JoinHandle;

use crate::{
    auth::Jwt,
    chat::{
        ChatService,
        service::{Backends, Settings},
    },
    config::{Config, FanoutMode},
    coord::{
        Cache, PresenceBackend, RateLimiter, SharedBackend,
        cache::local::LocalCache,
        fanout::{Fanout, socketio::SocketIoFanout},
        presence::local::LocalPresence,
        ratelimit::local::LocalRateLimiter,
        redis::Cluster,
    },
    http, realtime,
    state::AppState,
    store::{Store, sqlite::SqliteStore},
    telemetry::metered_store::MeteredStore,
};

/// Opens the configured store (SQLite in `CHAT_DATA_DIR`, or MongoDB) and migrates it.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = connect_store(config).await?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

/// As [`open_store`], for a serving node: a MongoDB that does not answer yet is not fatal. The
/// node starts not-ready and the store migrates itself once MongoDB answers (as with Redis).
/// Anything else (conflicting indexes, foreign documents) still stops the start.
async fn open_store_serving(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = connect_store(config).await?;
    match store.migrate().await {
        Err(crate::store::StoreError::Unavailable(e)) if config.mongodb_uri.is_some() => {
            tracing::warn!(error = %e, "MongoDB does not answer: starting not-ready until it does");
        }
        other => other.context("migrating the store")?,
    }
    Ok(store)
}

/// Connects the configured store without migrating it.
pub async fn connect_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match crate::store::mongo::MongoSettings::from_config(config) {
        Some(settings) => crate::store::mongo::connect(&settings).await?,
        None => Arc::new(
            SqliteStore::open_dir(&config.data_dir, config.sqlite_synchronous).context("opening the SQLite store")?,
        ),
    };
    Ok(Arc::new(MeteredStore(store)))
}

/// Attaches the Socket.IO layer to the router.
type Attach = Box<dyn FnOnce(Router) -> Router + Send>;
/// Registers the namespace (its handlers need the state) and returns the layer to attach.
type Mount = Box<dyn FnOnce(AppState) -> BoxFuture<'static, anyhow::Result<Attach>> + Send>;

/// The coordination backends of one mode, and Socket.IO over the matching adapter.
struct Coordination {
    presence: Arc<dyn PresenceBackend>,
    cache: Arc<dyn Cache>,
    limiter: Arc<dyn RateLimiter>,
    fanout: Arc<dyn Fanout>,
    socket_io: Mount,
    /// The Redis connection, for readiness and shutdown (none in-process).
    shared: Option<Arc<dyn SharedBackend>>,
    /// In-process upkeep that lives as long as the node (the local limiter's sweep).
    upkeep: Option<JoinHandle<()>>,
}

/// The one place that chooses in-process or Redis, for every capability at once.
async fn coordination(config: &Config, node_id: &str) -> anyhow::Result<Coordination> {
    let quotas = config.budgets();
    let builder = realtime::builder();
    match &config.redis_url {
        None => {
            let limiter = Arc::new(LocalRateLimiter::new(&quotas));
            let sweeper = limiter.clone();
            let upkeep = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    sweeper.sweep();
                }
            });
            let (layer, io) = builder.build_layer();
            let fanout = Arc::new(SocketIoFanout::new(io.clone()));
            let socket_io: Mount = Box::new(move |state| {
                Box::pin(async move {
                    realtime::register(&io, state.clone());
                    realtime::expiry::spawn(io, state.clone());
                    Ok(Box::new(move |r| realtime::attach(r, layer, state)) as Attach)
                })
            });
            Ok(Coordination {
                presence: Arc::new(LocalPresence::default()),
                cache: Arc::new(LocalCache::default()),
                limiter,
                fanout,
                socket_io,
                shared: None,
                upkeep: Some(upkeep),
            })
        }
        Some(url) => {
            let mut cluster =
                Cluster::connect(url, &config.redis_tls(), &config.redis_prefix, node_id, config.presence_ttl())
                    .await
                    .context("connecting to Redis")?;
            let adapter = cluster.adapter().await.context("starting the Redis adapter")?;
            let (layer, io) = builder.with_adapter::<FredAdapter<_>>(adapter).build_layer();
            // Namespace-wide operations (close, local sockets) keep the adapter either way.
            let fanout: Arc<dyn Fanout> = match config.fanout {
                FanoutMode::Adapter => Arc::new(SocketIoFanout::new(io.clone())),
                FanoutMode::Targeted => {
                    Arc::new(cluster.targeted_fanout(io.clone()).await.context("starting the targeted fan-out")?)
                }
            };
            let socket_io: Mount = Box::new(move |state| {
                Box::pin(async move {
                    realtime::register(&io, state.clone()).await.context("registering the namespace")?;
                    realtime::expiry::spawn(io, state.clone());
                    Ok(Box::new(move |r| realtime::attach(r, layer, state)) as Attach)
                })
            });
            Ok(Coordination {
                presence: cluster.presence(),
                cache: cluster.cache(),
                limiter: cluster.rate_limiter(&quotas),
                fanout,
                socket_io,
                upkeep: Some(cluster.spawn_lag_probe()),
                shared: Some(Arc::new(cluster)),
            })
        }
    }
}

/// A built node: its state and its complete router, not yet serving.
pub struct Node {
    pub state: AppState,
    pub app: Router,
    upkeep: Option<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = &self.upkeep {
            t.abort();
        }
    }
}

/// Config → store → coordination → chat service → state → router.
pub async fn build(config: Config) -> anyhow::Result<Node> {
    config.validate()?;
    let node_id = config.node_id();
    let jwt = Jwt::from_config(&config).context("loading JWT key material")?;
    let store = open_store_serving(&config).await?;
    let Coordination { presence, cache, limiter, fanout, socket_io, shared, upkeep } =
        coordination(&config, &node_id).await?;
    let settings = Settings { typing_expiry: config.typing_expiry() };
    let chat =
        Arc::new(ChatService::new(Backends { store: store.clone(), presence, cache, limiter, fanout }, settings));
    let state = AppState::new(config.clone(), jwt, chat, store, shared);
    let attach = socket_io(state.clone()).await?;
    register_zero_series(state.shared().is_some());
    // CORS outermost: browsers on other origins need it on `/socket.io/` (polling) as well.
    let app = attach(http::router(state.clone())).layer(http::layers::cors(&config.cors_origins));
    Ok(Node { state, app, upkeep })
}

/// Every failure counter at 0 for its known labels, so `rate()`/`increase()` see the first burst.
fn register_zero_series(cluster: bool) {
    use crate::realtime::events as ev;
    crate::telemetry::metrics::register_zeros(
        &[
            ev::JOIN_CONVERSATION,
            ev::LEAVE_CONVERSATION,
            ev::SEND_MESSAGE,
            ev::TYPING_START,
            ev::TYPING_STOP,
            ev::MARK_AS_READ,
            ev::MARK_AS_DELIVERED,
            ev::GET_ONLINE_STATUS,
            ev::SYNC,
            "new_message",
            "unknown",
        ],
        cluster,
    );
}
