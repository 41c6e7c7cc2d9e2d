//! Fan-out: server events to sockets, on every node. The domain calls [`Fanout::publish`] with
//! a typed [`ServerEvent`]; transports never emit domain events themselves.
//!
//! Backends: [`socketio`] over socketioxide's adapter, the local adapter in the embedded
//! default and the Redis adapter (one channel every node receives) in cluster mode with
//! `CHAT_FANOUT=adapter`; [`targeted`] (cluster mode's default) over per-user sharded channels
//! that only the nodes holding the user's sockets subscribe to; [`memory`] records what was
//! published, for unit tests of the domain.
//!
//! A backend that routes by user learns of sockets through [`Fanout::attach`] (awaited before
//! the socket is told it is connected) and [`Fanout::detach`].

use std::{collections::HashSet, time::Duration};

use async_trait::async_trait;

pub mod event;
pub mod memory;
pub mod socketio;
pub mod targeted;

pub use event::ServerEvent;

/// Who receives an event. A socket in several target rooms receives an event once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of these users, on every node.
    Users(Vec<String>),
    /// Every socket of these users, on every node, except `socket` of this node: the sender's
    /// own, which the caller serves after its ack, so this publish need not wait for the ack
    /// (and may share a Redis round trip with the cache invalidation before it).
    UsersExcept { users: Vec<String>, socket: String },
    /// The sockets of `user` that joined `conversation` (typing goes only to the other side).
    Joined { conversation: String, user: String },
    /// One socket of this node (the one a command came from).
    Socket(String),
}

impl Audience {
    pub fn user(user: &str) -> Self {
        Self::Users(vec![user.to_owned()])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fan-out failed: {0}")]
pub struct FanoutError(pub String);

#[async_trait]
pub trait Fanout: Send + Sync + 'static {
    /// Serializes `event` once and delivers it to every socket of `to`.
    async fn publish(&self, to: Audience, event: &ServerEvent<'_>) -> Result<(), FanoutError>;
    /// A socket of `user` is connecting on this node. Once this returns, events to `user`
    /// published anywhere reach this node (so it is awaited before the socket is told it is
    /// connected). Failures are logged and counted by the backend, never refuse the socket.
    async fn attach(&self, _user: &str, _socket: &str) {}
    /// That socket left (idempotent).
    async fn detach(&self, _user: &str, _socket: &str) {}
    /// Forgets attached sockets that are not in `live` (sockets that closed without a
    /// disconnect handler; see the presence sweep).
    async fn retain(&self, _live: &HashSet<String>) {}
    /// Ids of the sockets connected to this node (for the presence sweep).
    fn local_socket_ids(&self) -> HashSet<String>;
    /// Sockets connected to this node by transport: (websocket, long-polling), for the gauges.
    fn local_transports(&self) -> (usize, usize) {
        (0, 0)
    }
    /// Closes every transport on this node without a namespace disconnect, so clients see
    /// `transport close` and reconnect (elsewhere) by themselves. Bounded by `within`; nothing
    /// is published afterwards.
    async fn close(&self, within: Duration);
}
