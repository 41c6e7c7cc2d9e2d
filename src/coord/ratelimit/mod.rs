//! Rate limits (GCRA budgets per subject): [`local`] in this process, [`redis`] cluster-wide.

use std::time::Duration;

use async_trait::async_trait;

use crate::coord::CoordResult;

pub mod local;
pub mod redis;

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
