//! Coordination between the nodes, one folder per capability, each with its trait (`mod.rs`)
//! and its backends side by side: `local.rs` (in this process, the embedded default) and
//! `redis.rs` (shared by the nodes, cluster mode). Which one runs is decided once, in
//! `crate::node::build`.
//!
//! - [`presence`]: who is online anywhere, and this node's sockets per user;
//! - [`cache`]: conversation lists and unread counts with per-user generations;
//! - [`ratelimit`]: per-user and per-address budgets;
//! - [`fanout`]: server events to sockets on every node.
//!
//! [`redis`] holds the Redis connection every Redis backend shares and its key map.

pub mod cache;
pub mod fanout;
pub mod presence;
pub mod ratelimit;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use cache::{Cache, CacheKind};
pub use presence::{PresenceBackend, UserStatus};
pub use ratelimit::{LimitKind, Quota, RateLimiter};

#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordError {
    #[error("coordination backend unavailable: {0}")]
    Unavailable(String),
}

pub type CoordResult<T> = Result<T, CoordError>;

/// The connection to a shared coordination service (Redis): readiness and a clean goodbye.
#[async_trait]
pub trait SharedBackend: Send + Sync + 'static {
    /// Reachable and answering within `within`.
    async fn ping(&self, within: Duration) -> bool;
    /// Closes the connections (bounded).
    async fn quit(&self);
}
