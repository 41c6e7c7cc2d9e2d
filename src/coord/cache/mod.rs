//! Read caches of conversation lists and unread counts: [`local`] in this process, [`redis`]
//! shared by the nodes.
//!
//! Caches use per-user generations: a write bumps the generation of every user it affects
//! before it is acknowledged, and cached values live under the generation that was current
//! *before* the store was read. A reader after the ack therefore never sees a value computed
//! before the write (read-your-writes on every node), with no delete/refill race.

use std::time::Duration;

use async_trait::async_trait;

use crate::coord::CoordResult;

pub mod local;
pub mod redis;

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
