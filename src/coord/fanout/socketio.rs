//! The fan-out seam: socketioxide's adapter, local (one node) or Redis (cluster). Both are the
//! same `SocketIo` API over different concrete adapter types, so [`Io`] dispatches by hand.
//!
//! Emits name rooms: `u:{user}` (every socket of a user) and `c:{conversation}:{user}`; a socket
//! in several target rooms receives an emit once.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use socketioxide::{SocketIo, adapter::Emitter};
use socketioxide_redis::FredAdapter;
use tokio::sync::RwLock;

pub type RedisIo = SocketIo<FredAdapter<Emitter>>;

#[derive(Clone)]
pub enum Io {
    Local(SocketIo),
    Redis(RedisIo),
}

/// The io handle plus a "closed" latch: socketioxide panics on an emit after `close()`, so
/// emits hold a read lock and `close` takes the write lock (waiting for in-flight emits).
#[derive(Clone)]
pub struct Fanout {
    io: Io,
    closed: Arc<RwLock<bool>>,
}

#[derive(Debug, thiserror::Error)]
#[error("fan-out failed: {0}")]
pub struct FanoutError(String);

impl Fanout {
    pub fn new(io: Io) -> Self {
        Self { io, closed: Arc::new(RwLock::new(false)) }
    }

    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Emits `event` to every socket in any of `rooms`, on every node.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        event: &str,
        data: &T,
    ) -> Result<(), FanoutError> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(FanoutError("node is shutting down".into()));
        }
        let res = match &self.io {
            Io::Local(io) => io.to(rooms).emit(event, data).await,
            Io::Redis(io) => io.to(rooms).emit(event, data).await,
        };
        drop(closed);
        res.map_err(|e| FanoutError(e.to_string()))
    }

    /// Ids of the sockets connected to this node.
    pub fn local_socket_ids(&self) -> std::collections::HashSet<String> {
        match &self.io {
            Io::Local(io) => io.sockets().iter().map(|s| s.id.to_string()).collect(),
            Io::Redis(io) => io.local().sockets().iter().map(|s| s.id.to_string()).collect(),
        }
    }

    /// Closes every transport on this node without a namespace disconnect, so clients see
    /// `transport close` and reconnect (elsewhere) by themselves. Bounded: it can block while
    /// Redis is down.
    pub async fn close(&self, within: Duration) {
        let fut = async {
            let mut closed = self.closed.write().await;
            *closed = true;
            match &self.io {
                Io::Local(io) => io.close().await,
                Io::Redis(io) => io.close().await,
            }
        };
        if tokio::time::timeout(within, fut).await.is_err() {
            tracing::warn!("closing sockets timed out");
        }
    }
}
