//! Fan-out through socketioxide: one implementation over any adapter, so the local adapter
//! (embedded default) and the Redis adapter (cluster mode) share it.
//!
//! Audiences are rooms: `u:{user}` (every socket of a user, joined on connect) and
//! `c:{conversation}:{user}` (one user's sockets that joined a conversation). A socket in
//! several target rooms receives an emit once.

use std::{collections::HashSet, str::FromStr, time::Duration};

use async_trait::async_trait;
use socketioxide::{SocketIo, adapter::Adapter, operators::BroadcastOperators, socket::Sid};
use tokio::sync::RwLock;

use super::{Audience, Fanout, FanoutError, ServerEvent};

/// Room of every socket of a user, on every node.
pub fn user_room(user: &str) -> String {
    format!("u:{user}")
}

/// Room of one user's sockets that joined a conversation.
pub fn conversation_room(conversation: &str, user: &str) -> String {
    format!("c:{conversation}:{user}")
}

/// The io handle plus a "closed" latch: socketioxide panics on an emit after `close()`, so
/// emits hold a read lock and `close` takes the write lock (waiting for in-flight emits).
pub struct SocketIoFanout<A: Adapter> {
    io: SocketIo<A>,
    closed: RwLock<bool>,
}

impl<A: Adapter> SocketIoFanout<A> {
    pub fn new(io: SocketIo<A>) -> Self {
        Self { io, closed: RwLock::new(false) }
    }
}

#[async_trait]
impl<A: Adapter> Fanout for SocketIoFanout<A> {
    async fn publish(&self, to: Audience, event: &ServerEvent<'_>) -> Result<(), FanoutError> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(FanoutError("node is shutting down".into()));
        }
        let (rooms, except) = match to {
            Audience::Users(users) => (users.iter().map(|u| user_room(u)).collect::<Vec<_>>(), None),
            Audience::UsersExcept { users, socket } => (users.iter().map(|u| user_room(u)).collect(), Some(socket)),
            Audience::Joined { conversation, user } => (vec![conversation_room(&conversation, &user)], None),
            Audience::Socket(id) => {
                // The caller's own socket is on this node: no broadcast needed. A socket that
                // went away meanwhile has no one left to tell.
                match self.socket(&id).map(|s| s.emit(event.name(), event)) {
                    Some(Err(e)) => tracing::debug!(error = %e, event = event.name(), "event to a closing socket"),
                    None => tracing::debug!(event = event.name(), "event to a socket that is gone"),
                    Some(Ok(())) => {}
                }
                return Ok(());
            }
        };
        let res = self.operators(except.as_deref()).to(rooms).emit(event.name(), event).await;
        drop(closed);
        res.map_err(|e| FanoutError(e.to_string()))
    }

    fn local_socket_ids(&self) -> HashSet<String> {
        self.io.local().sockets().iter().map(|s| s.id.to_string()).collect()
    }

    fn local_transports(&self) -> (usize, usize) {
        let sockets = self.io.local().sockets();
        let ws =
            sockets.iter().filter(|s| matches!(s.transport_type(), socketioxide::TransportType::Websocket)).count();
        (ws, sockets.len() - ws)
    }

    async fn close(&self, within: Duration) {
        self.close_within(within).await
    }
}

impl<A: Adapter> SocketIoFanout<A> {
    /// A socket of this node by id.
    fn socket(&self, id: &str) -> Option<socketioxide::extract::SocketRef<A>> {
        Sid::from_str(id).ok().and_then(|sid| self.io.get_socket(sid))
    }

    /// Broadcast operators that leave `except` out: operators made from a socket skip it (one
    /// that is not on this node, or gone already, has nothing to leave out).
    fn operators(&self, except: Option<&str>) -> BroadcastOperators<A> {
        match except.and_then(|id| self.socket(id)) {
            Some(socket) => socket.broadcast(),
            None => self.io.broadcast(),
        }
    }

    /// Emits to the sockets of `room` on this node only (no adapter broadcast), but `except` if
    /// it is one of them; nothing after [`Fanout::close`].
    pub async fn emit_local<T: ?Sized + serde::Serialize>(
        &self,
        room: String,
        except: Option<&str>,
        event: &str,
        data: &T,
    ) -> Result<(), FanoutError> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(FanoutError("node is shutting down".into()));
        }
        self.operators(except).local().to(room).emit(event, data).await.map_err(|e| FanoutError(e.to_string()))
    }

    /// Whether [`Fanout::close`] has begun.
    pub async fn is_closed(&self) -> bool {
        *self.closed.read().await
    }

    async fn close_within(&self, within: Duration) {
        let fut = async {
            let mut closed = self.closed.write().await;
            *closed = true;
            self.io.close().await;
        };
        if tokio::time::timeout(within, fut).await.is_err() {
            tracing::warn!("closing sockets timed out");
        }
    }
}
