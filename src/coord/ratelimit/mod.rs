//! Rate limits (GCRA budgets per subject): [`local`] in this process, [`redis`] cluster-wide.

use std::time::Duration;

use async_trait::async_trait;

use crate::coord::CoordResult;

pub mod local;
pub mod redis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
/// A cost class: each has its own budget (see `crate::limits`).
pub enum LimitKind {
    /// `send_message` / POST messages.
    Message,
    /// Engine.IO handshakes (per user when the handshake carries a valid token, else per address).
    Connection,
    /// `typing_start` / `typing_stop`.
    Typing,
    /// `mark_as_read`, `mark_as_delivered`, POST read.
    Receipt,
    /// `get_online_status`, GET users/status.
    Presence,
    /// `sync`.
    Sync,
    /// `join_conversation` / `leave_conversation`.
    Join,
    /// POST conversations.
    Create,
    /// REST reads: GET conversations, history, unread.
    Read,
}

impl LimitKind {
    pub const ALL: &[LimitKind] = &[
        Self::Message,
        Self::Connection,
        Self::Typing,
        Self::Receipt,
        Self::Presence,
        Self::Sync,
        Self::Join,
        Self::Create,
        Self::Read,
    ];

    /// The name in `CHAT_RATE_LIMITS`, Redis keys and `chat_rate_limited_total{kind}`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Connection => "connection",
            Self::Typing => "typing",
            Self::Receipt => "receipt",
            Self::Presence => "presence",
            Self::Sync => "sync",
            Self::Join => "join",
            Self::Create => "create",
            Self::Read => "read",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == s)
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
