//! Coordination shared by the nodes: presence, read caches and rate limits. Each is a trait with
//! an in-process implementation ([`local`], the embedded default) and a Redis one
//! (`crate::cluster`), chosen at start.
//!
//! Caches use per-user generations: a write bumps the generation of every user it affects
//! before it is acknowledged, and cached values live under the generation that was current
//! *before* the store was read. A reader after the ack therefore never sees a value computed
//! before the write (read-your-writes on every node), with no delete/refill race.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::chat::model::Timestamp;

pub mod local;
pub mod presence;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordError {
    #[error("coordination backend unavailable: {0}")]
    Unavailable(String),
}

pub type CoordResult<T> = Result<T, CoordError>;

/// One user's presence as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    pub user_id: String,
    pub online: bool,
    #[serde(with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<Timestamp>,
}

mod opt_ts {
    use super::Timestamp;
    use serde::Serializer;
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::chat::model::rfc3339(t)),
            None => s.serialize_none(),
        }
    }
}

/// Cluster-wide presence, at the granularity of "this node holds ≥ 1 socket of user".
/// Socket counting per node is done by [`presence::PresenceTracker`].
#[async_trait]
pub trait PresenceBackend: Send + Sync + 'static {
    /// This node now holds the user; `true` if the user was offline everywhere before.
    async fn add(&self, user: &str) -> CoordResult<bool>;
    /// This node no longer holds the user; `Some(lastSeen)` if now offline everywhere.
    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>>;
    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>>;
    /// Re-asserts this node's users (called well inside the TTL).
    async fn refresh(&self, users: &[String]) -> CoordResult<()>;
    /// This node is going away: make it look dead so that a survivor reaps its users.
    async fn leave(&self) -> CoordResult<()>;
    /// Removes users held by nodes that stopped refreshing; returns those now offline.
    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>>;
}

/// What a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    Conversations,
    Unread,
}

impl CacheKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Conversations => "conversations",
            Self::Unread => "unread",
        }
    }
    pub fn ttl(self) -> Duration {
        match self {
            Self::Conversations => Duration::from_secs(60),
            Self::Unread => Duration::from_secs(30),
        }
    }
}

/// Generation of a user's cached views at the time of a read.
pub type Generation = u64;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The cached value (if any) and the user's current generation, read together.
    async fn get(&self, kind: CacheKind, user: &str, variant: &str) -> CoordResult<(Option<String>, Generation)>;
    /// Stores a value computed after reading generation `gen`; ignored if it has moved on.
    async fn put(&self, kind: CacheKind, user: &str, variant: &str, gen_: Generation, value: String)
    -> CoordResult<()>;
    /// Bumps the generation of each user: all their cached views are stale from now on.
    async fn invalidate(&self, users: &[&str]) -> CoordResult<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Message,
    Connection,
}

impl LimitKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Connection => "connection",
        }
    }
}

/// A budget: `limit` events per `window`, with bursts up to `limit` (GCRA).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one event; `Ok(Err(wait))` when over budget.
    async fn hit(&self, kind: LimitKind, key: &str) -> CoordResult<Result<(), Duration>>;
}
