//! Read caches of conversation lists and unread counts: [`local`] in this process, [`redis`]
//! shared by the nodes.
//!
//! Entries are tagged with the user's view version ([`ViewVersion`]), which the store changes
//! in the same write as the data (or right after it, before the write returns). A reader reads
//! the version *before* the data and stores what it built under that version; an entry is
//! served only to a reader that read the same version. So a reader after an acknowledged write
//! never sees a value built before it (read-your-writes on every node), writes cost the cache
//! nothing, and a lost or late put can only cost a miss, never a stale answer.

use std::time::Duration;

use async_trait::async_trait;

use crate::{coord::CoordResult, store::ViewVersion};

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

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value cached for this view under `version`, if any (an entry under another version
    /// is a miss).
    async fn get(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
    ) -> CoordResult<Option<String>>;
    /// Stores a value built from data read after `version` was read.
    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
        value: String,
    ) -> CoordResult<()>;
}
