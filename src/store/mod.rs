//! The source of truth (users, conversations, messages) behind one trait, so that nothing above
//! it (domain, transports, the node's state) knows which database it talks to; even the pool
//! gauges come through the trait ([`Store::pool_stats`]). Backends: [`sqlite`] (embedded default, also shared by
//! several local nodes) and [`mongo`] (production).
//!
//! Invariants every backend keeps, whatever the number of nodes writing at once:
//! - one conversation per (sorted participant pair, jobId);
//! - `seq` per conversation is 1, 2, 3 … with no gap and no duplicate;
//! - one message per (senderId, clientMessageId): a retried insert returns the original;
//! - a write is durable before the call returns `Ok`;
//! - a write changes the [view version](Store::view_version) of every user whose conversation
//!   list or unread counts it changes, atomically with the change where the backend can (SQLite)
//!   and otherwise after it, before the call returns.

use async_trait::async_trait;

use crate::chat::model::{Conversation, Message, MessageType, Timestamp, User};

pub mod mongo;
pub mod sqlite;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken in a way the backend could not resolve by itself.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database is down, busy or slow: retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Version of a user's views (conversation list, unread counts): caches keep a view under the
/// version read *before* the data it was built from, and serve it only while that version is
/// still the current one. A fresh random value on every change (so a reset database never
/// revives an old cache entry); 0 until the user's first change.
pub type ViewVersion = u64;

/// A new view version: positive as a signed integer (both backends store i64) and never 0.
pub fn fresh_view_version() -> i64 {
    (rand::random::<u64>() >> 1).max(1) as i64
}

/// A message to persist; the store assigns `_id`, `seq` and `createdAt`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub message_type: MessageType,
    pub content: String,
    pub client_message_id: Option<String>,
}

/// Result of an insert: the stored message and whether this call created it (false = retry).
#[derive(Debug, Clone)]
pub struct Inserted {
    pub message: Message,
    pub created: bool,
}

/// Keyset cursor of the conversation list: (updatedAt, id) of the last item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub updated_at_ms: i64,
    pub id: String,
}

impl ListCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.updated_at_ms, self.id)
    }
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        let updated_at_ms = ms.parse().ok()?;
        (id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self { updated_at_ms, id: id.to_owned() })
    }
}

/// Which page of history: the newest page before `before_seq` (exclusive), or by page offset.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub before_seq: Option<i64>,
    /// Messages to skip from the newest end (page N = (N-1)·limit); ignored with `before_seq`.
    pub skip: u64,
    pub limit: u32,
}

/// Messages of one page, oldest first, and whether older ones exist.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// What `mark_read` did.
#[derive(Debug, Clone)]
pub struct ReadReceipt {
    pub up_to_seq: i64,
    pub read_at: Timestamp,
    /// The reader's unread count afterwards.
    pub unread_count: i64,
    pub updated: u64,
}

/// What `mark_delivered` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The requested seq clamped to the conversation's last seq (like `mark_read`), so a
    /// receipt never covers a message that does not exist yet.
    pub up_to_seq: i64,
    /// Messages that became `delivered`; 0 means nothing changed and nobody is told.
    pub updated: u64,
}

impl DeliveryReceipt {
    pub fn changed(&self) -> bool {
        self.updated > 0
    }
}

/// Connection pool occupancy, for the `chat_db_pool_connections{state}` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub active: usize,
    pub idle: usize,
    pub max: usize,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates tables/collections and indexes; idempotent.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Backend name for logs and metrics labels.
    fn kind(&self) -> &'static str;
    /// Pool occupancy, for backends whose pool is ours to watch (none by default).
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    async fn upsert_user(&self, user: &User) -> StoreResult<()>;
    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>>;

    /// The conversation of these two users about `job_id`, created if missing; `true` = created.
    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job_id: Option<&str>,
    ) -> StoreResult<(Conversation, bool)>;
    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>>;
    /// A user's conversations, most recent activity first, after `cursor`.
    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>>;
    /// Everyone who shares a conversation with `user` (for presence notifications).
    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>>;

    /// Persists a message: assigns the next `seq`, updates the conversation's last message and
    /// activity time and the receiver's unread count, all atomically. Dedups on clientMessageId.
    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted>;
    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page>;
    /// Messages with `seq > after_seq`, oldest first, at most `limit`.
    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page>;
    /// Messages to `reader` up to `up_to_seq` (default: all) become `read`; recomputes the
    /// reader's unread count.
    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt>;
    /// Messages to `receiver` up to `up_to_seq` (clamped to the last seq) that are `sent` become
    /// `delivered`.
    async fn mark_delivered(
        &self,
        conversation_id: &str,
        receiver: &str,
        up_to_seq: i64,
    ) -> StoreResult<DeliveryReceipt>;
    /// Non-zero unread counts of a user: (conversationId, count).
    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>>;

    /// The user's current view version (see [`ViewVersion`]).
    async fn view_version(&self, user: &str) -> StoreResult<ViewVersion>;
    /// New view versions for changes the store cannot see as such (a profile shown in the
    /// partners' lists); the writes above change versions by themselves.
    async fn bump_view_versions(&self, users: &[String]) -> StoreResult<()>;
}

/// Sorted pair, so (a, b) and (b, a) name the same conversation.
pub fn sorted_pair(a: &str, b: &str) -> [String; 2] {
    if a <= b { [a.to_owned(), b.to_owned()] } else { [b.to_owned(), a.to_owned()] }
}
