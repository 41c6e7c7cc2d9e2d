//! The Redis connection of cluster mode, shared by every Redis backend: one command client
//! (presence, caches, rate limits, the targeted fan-out's `SPUBLISH`), one subscriber client for
//! socketioxide's Redis adapter, and with `CHAT_FANOUT=targeted` one subscriber client for the
//! per-user channels of [`super::fanout::targeted`] (all sharded pub/sub).
//!
//! fred defaults that lose messages silently are overridden here:
//! RESP3 is forced (the adapter needs `SPUBLISH`), clients reconnect forever with backoff,
//! commands time out instead of hanging while Redis is down, the pub/sub broadcast channel is
//! large, and shard channels are re-subscribed after every reconnect.
//!
//! Topologies (standalone, Sentinel, Redis Cluster) and TLS come from the URL: [`connect`].
//! Every key and channel, with its slot tag and its TTL or owner: [`keys`]. On Redis Cluster
//! each script touches only keys of one slot and declares them in `KEYS[]`; operations that span
//! users or nodes are split into per-slot steps (see `super::presence::redis`).
//!
//! After a Sentinel failover or a Cluster master's replica promotion, fred reconnects to the new
//! master (asking the sentinels, or following `MOVED` and refreshing the slot map); the
//! re-subscriber below then re-issues `SSUBSCRIBE` on the new shard owners.

use std::{sync::Arc, time::Duration};

use fred::{
    clients::SubscriberClient,
    prelude::{Client, ClientLike, EventInterface, PubsubInterface},
};
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr, drivers::fred::FredDriver};

pub mod connect;
pub mod keys;

pub use connect::{Target, TlsFiles, Topology, UrlError};

use crate::coord::{
    Cache, CoordError, LimitKind, PresenceBackend, Quota, RateLimiter, SharedBackend,
    fanout::{socketio::SocketIoFanout, targeted::TargetedFanout},
};

/// The one mapping of Redis failures: every one is an outage to the caller (retryable).
impl From<fred::error::Error> for CoordError {
    fn from(e: fred::error::Error) -> Self {
        CoordError::Unavailable(e.to_string())
    }
}

/// The adapter's per-channel queue; drops when full.
const ADAPTER_STREAM_BUFFER: usize = 16_384;

#[derive(Clone)]
pub struct Cluster {
    client: Client,
    subscriber: SubscriberClient,
    /// Subscriber of the pub/sub lag probe (its own connection, see `telemetry::pubsub_lag`).
    probe: SubscriberClient,
    /// Subscriber of the per-user event channels (targeted fan-out only).
    events: Option<SubscriberClient>,
    builder: Arc<fred::prelude::Builder>,
    prefix: Arc<str>,
    node_id: Arc<str>,
    ttl: Duration,
}

impl Cluster {
    /// Connects every client; fails at once if Redis is unreachable (or refuses the TLS
    /// handshake) at start.
    pub async fn connect(
        url: &str,
        tls: &TlsFiles,
        prefix: &str,
        node_id: &str,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let b = connect::builder(url, tls)?;
        let client = b.build()?;
        client.init().await?;
        let subscriber = b.build_subscriber_client()?;
        let probe = b.build_subscriber_client()?;
        let probe_reconnects = probe.reconnect_rx();
        probe.init().await?;
        spawn_resubscriber(probe.clone(), probe_reconnects);
        Ok(Self {
            client,
            subscriber,
            probe,
            events: None,
            builder: Arc::new(b),
            prefix: prefix.into(),
            node_id: node_id.into(),
            ttl,
        })
    }

    /// The targeted fan-out over `io` (local emits) with its own subscriber connection, which
    /// readiness then watches too.
    pub async fn targeted_fanout<A: socketioxide::adapter::Adapter>(
        &mut self,
        io: socketioxide::SocketIo<A>,
    ) -> anyhow::Result<TargetedFanout<A>> {
        let events = self.builder.build_subscriber_client()?;
        self.events = Some(events.clone());
        TargetedFanout::start(SocketIoFanout::new(io), self.client.clone(), events, &self.prefix).await
    }

    /// The adapter constructor; also starts re-subscription after reconnects.
    pub async fn adapter(&self) -> anyhow::Result<RedisAdapterCtr<FredDriver>> {
        let config = RedisAdapterConfig::new()
            .with_prefix(keys::adapter_prefix(&self.prefix))
            .with_stream_buffer(ADAPTER_STREAM_BUFFER);
        // Listen before `init()` (called by `new_with_fred_config`) so that the first event seen
        // is the initial connection, which the re-subscriber skips.
        let reconnects = self.subscriber.reconnect_rx();
        let received = self.subscriber.message_rx();
        let ctr = RedisAdapterCtr::new_with_fred_config(self.subscriber.clone(), config).await?;
        spawn_resubscriber(self.subscriber.clone(), reconnects);
        spawn_received_counter(received);
        Ok(ctr)
    }

    pub fn presence(&self) -> Arc<dyn PresenceBackend> {
        Arc::new(super::presence::redis::RedisPresence::new(self.client.clone(), &self.prefix, &self.node_id, self.ttl))
    }

    pub fn cache(&self) -> Arc<dyn Cache> {
        Arc::new(super::cache::redis::RedisCache::new(self.client.clone(), &self.prefix))
    }

    pub fn rate_limiter(&self, quotas: &[(LimitKind, Quota)]) -> Arc<dyn RateLimiter> {
        Arc::new(super::ratelimit::redis::RedisRateLimiter::new(self.client.clone(), &self.prefix, quotas))
    }

    /// Starts the pub/sub lag probe on the channel [`keys::probe_channel`].
    pub fn spawn_lag_probe(&self) -> tokio::task::JoinHandle<()> {
        let channel = keys::probe_channel(&self.prefix, &self.node_id);
        crate::telemetry::pubsub_lag::spawn(self.client.clone(), self.probe.clone(), channel)
    }
}

#[async_trait::async_trait]
impl SharedBackend for Cluster {
    /// Every client connected (a fan-out subscriber that is down means this node's sockets miss
    /// events) and Redis answering PING within `within`.
    async fn ping(&self, within: Duration) -> bool {
        let events_up = self.events.as_ref().is_none_or(|e| e.is_connected());
        if !self.client.is_connected() || !self.subscriber.is_connected() || !events_up {
            return false;
        }
        let ping = self.client.ping::<String>(None);
        matches!(tokio::time::timeout(within, ping).await, Ok(Ok(_)))
    }

    async fn quit(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.probe.quit().await;
            if let Some(e) = &self.events {
                let _ = e.quit().await;
            }
            let _ = self.subscriber.quit().await;
            let _ = self.client.quit().await;
        })
        .await;
    }
}

/// Counts what the adapter's subscriber receives (`chat_redis_adapter_received_total`): with
/// `CHAT_FANOUT=adapter` every node receives every event of the cluster, the cost that grows
/// with the node count. A lagging counter still counts what it skipped: the node received it.
fn spawn_received_counter(mut rx: tokio::sync::broadcast::Receiver<fred::types::Message>) {
    use tokio::sync::broadcast::error::RecvError;
    let received = metrics::counter!(crate::telemetry::metrics::REDIS_ADAPTER_RECEIVED_TOTAL);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(_) => received.increment(1),
                Err(RecvError::Lagged(n)) => received.increment(n),
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// After a reconnect the subscriber no longer receives remote broadcasts until its shard
/// channels are subscribed again (fred restores only some). The first event is the initial
/// connection and is skipped.
fn spawn_resubscriber(sub: SubscriberClient, mut rx: tokio::sync::broadcast::Receiver<fred::prelude::Server>) {
    tokio::spawn(async move {
        let mut first = true;
        while let Ok(_server) = rx.recv().await {
            if std::mem::take(&mut first) {
                continue;
            }
            for ch in sub.tracked_shard_channels() {
                if let Err(e) = sub.ssubscribe(ch.to_string()).await {
                    tracing::warn!(error = %e, channel = %ch, "re-subscribing after reconnect failed");
                }
            }
            tracing::info!("Redis reconnected: adapter channels re-subscribed");
        }
    });
}
