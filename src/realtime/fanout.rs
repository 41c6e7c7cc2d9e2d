//! The fan-out seam: socketioxide's adapter, local (one node) or Redis (cluster). Both are the
//! same `SocketIo` API over different concrete adapter types, so this enum dispatches by hand.
//!
//! Emits name rooms: `u:{user}` (every socket of a user) and `c:{conversation}:{user}`; a socket
//! in several target rooms receives an emit once.

use std::time::Duration;

use serde::Serialize;
use socketioxide::{SocketIo, adapter::Emitter};
use socketioxide_redis::FredAdapter;

pub type RedisIo = SocketIo<FredAdapter<Emitter>>;

#[derive(Clone)]
pub enum Fanout {
    Local(SocketIo),
    Redis(RedisIo),
}

#[derive(Debug, thiserror::Error)]
#[error("fan-out failed: {0}")]
pub struct FanoutError(String);

impl Fanout {
    /// Emits `event` to every socket in any of `rooms`, on every node.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        event: &str,
        data: &T,
    ) -> Result<(), FanoutError> {
        let res = match self {
            Self::Local(io) => io.to(rooms).emit(event, data).await,
            Self::Redis(io) => io.to(rooms).emit(event, data).await,
        };
        res.map_err(|e| FanoutError(e.to_string()))
    }

    /// Sockets connected to this node.
    pub fn local_socket_count(&self) -> usize {
        match self {
            Self::Local(io) => io.sockets().len(),
            Self::Redis(io) => io.local().sockets().len(),
        }
    }

    /// Closes every transport on this node without a namespace disconnect, so clients see
    /// `transport close` and reconnect (elsewhere) by themselves. Bounded: it can block while
    /// Redis is down.
    pub async fn close(&self, within: Duration) {
        let fut = async {
            match self {
                Self::Local(io) => io.close().await,
                Self::Redis(io) => io.close().await,
            }
        };
        if tokio::time::timeout(within, fut).await.is_err() {
            tracing::warn!("closing sockets timed out");
        }
    }
}
