//! MongoDB store (production source of truth), selected by `MONGODB_URI` / `MONGODB_DB`.
//! Same behaviour as the SQLite store, for any number of nodes writing at once, on a standalone
//! server or a replica set: no multi-document transaction is needed.
//!
//! # Collections (`schema`)
//! - `users` `{ _id: <user id string>, name, email, role, avatar, updatedAt }`.
//! - `conversations` `{ _id: ObjectId, participants: [a, b] (sorted), userA, userB, jobId|null,
//!   lastSeq, lastMessage|null (a copy of the newest message), unread: [nA, nB], createdAt,
//!   updatedAt }`. `unread[i]` belongs to `participants[i]`: user ids may contain `.` and `$`,
//!   so they are never used as field names. `userA`/`userB` repeat the pair as scalars for the
//!   unique index (a unique index over an array is enforced per element).
//! - `messages` `{ _id: ObjectId, conversationId: ObjectId, seq, senderId, receiverId,
//!   messageType, content, status, clientMessageId|null, createdAt }`.
//! - `view_versions` `{ _id: <user id string>, v }`: the user's view version, set to a fresh
//!   value after every write that changes the user's conversation list or unread counts and
//!   before the write returns (no transaction: after the change, so a cache that reads the new
//!   version then the data always sees the change).
//!
//! Domain ids are the 24-hex strings of these ObjectIds; an id that does not parse finds nothing
//! (`get_conversation` → `None`, `history`/`messages_after` → empty page, `insert_message`/
//! `mark_read` → `NotFound`, `mark_delivered` → 0), exactly what the SQLite store answers for
//! an unknown id. Times are BSON datetimes (milliseconds, as the domain truncates them).
//!
//! # Indexes (`query::indexes`, created by [`Store::migrate`], idempotent, run at start)
//! - `conversations_pair_job` unique `{userA, userB, jobId}`: one conversation per pair and job.
//! - `conversations_participants_activity` `{participants, updatedAt: -1, _id: -1}`: a user's
//!   conversations by last activity (list with keyset cursor, partners, unread counts).
//! - `messages_conversation_seq` unique `{conversationId, seq}`: history, sync, and the seq
//!   allocator (below).
//! - `messages_sender_client_id` unique `{senderId, clientMessageId}`, partial on
//!   `clientMessageId: {$type: "string"}`: retry dedup.
//! - `messages_sender` `{senderId}`, `messages_receiver_status` `{receiverId, status}`, and
//!   `messages_conversation_receiver_status_seq` for mark read / delivered and unread recounts.
//!
//! # How each invariant holds (`flow`)
//! **Gap-free `seq`.** The seq is not taken from a counter: it is taken by inserting the
//! message that carries it. A sender reads the conversation's `lastSeq` (L) and inserts its
//! message with `seq = L + 1`; the unique `{conversationId, seq}` index lets exactly one message
//! have each seq. A sender that loses (duplicate key) reads the newest stored seq and tries
//! right after it. A failed or lost insert consumes nothing, so no failure, timeout or crashed
//! node can leave a hole, and the seqs stored are always exactly `1..=max`: a sender only ever
//! tries one past a stored message (L is 0 or an applied, hence stored, message; the newest is
//! stored), and a seq already stored is refused. Concurrent senders to one conversation (in
//! practice two people) retry once per message that beat them; a lost race costs two small
//! round trips.
//!
//! A counter (`findOneAndUpdate {$inc: {lastSeq: 1}}`, then insert) was the other design and
//! was rejected: without a transaction, any failure between the `$inc` and the insert — a node
//! crash, a timeout, a primary step-down, or two concurrent retries of one clientMessageId
//! where the loser's insert is refused by the dedup index — burns a seq for good.
//!
//! **The conversation summary** (`lastSeq`, `lastMessage`, `updatedAt`, the receiver's
//! `unread` `$inc`) is derived from the messages and updated after the insert by a
//! compare-and-set: `findOneAndUpdate({_id, lastSeq: seq - 1}, …)`. So each message is applied
//! exactly once and in seq order, and `lastSeq` is a watermark: every message up to it is
//! counted in the summary. A sender whose compare-and-set fails because predecessors are not
//! applied yet applies them itself, from the stored messages, then its own ("catch-up"). If a
//! sender dies between its insert and this update, its message is stored (and visible to
//! `history`/`sync`) but not yet in the summary; whoever comes next applies it first: the next
//! sender's catch-up, a retry of the same send, or a `mark_read`/`mark_delivered` asked about
//! seqs past the watermark. The summary lags until then, by the orphaned messages only; the
//! seqs never have a gap. When the summary update alone fails (the message is stored),
//! `insert_message` still succeeds: the message is acknowledged, and the failure is logged and
//! counted (`chat_db_errors_total{op="settle_conversation"}`).
//!
//! **One message per (senderId, clientMessageId).** The unique partial index admits one
//! message per pair. A retry, or several copies of one send racing on different nodes, try to
//! insert like any send; the index refuses all but one, and each refused copy reads the stored
//! original and returns it with `created = false` (first making sure it is in the summary, in
//! case the original's sender died before doing so). A refused insert took nothing, so there is
//! nothing to undo and no seq to lose.
//!
//! **One conversation per (pair, job).** `findOneAndUpdate` upsert on the unique key with
//! `$setOnInsert` of an `_id` chosen by the caller (so it knows "created" from "found"); a
//! concurrent creator's duplicate-key error (the server retries most of these itself) is
//! answered by reading the winner.
//!
//! **Unread counts.** `+1` for the receiver inside the summary compare-and-set. `mark_read`
//! marks messages read up to `min(upToSeq, lastSeq)` (`updateMany`), recounts the reader's
//! unread messages up to the watermark, and stores the count with `$min` guarded by the same
//! watermark (a message applied meanwhile makes it recount). Counts only fall between two
//! watermarks and `$min` keeps the lowest, so concurrent readers converge on the exact count; a
//! `mark_read` interrupted before its last step leaves the count too high (never too low) until
//! the reader's next one. `lastMessage.status` follows `read`/`delivered` through updates guarded
//! on that message, never downgrading, and only after the messages themselves were updated, so
//! it can lag behind, never run ahead. A message is marked only once it is applied (both mark
//! up to the watermark, catching up first), so the apply step always copies a `sent` message
//! that no receipt has touched yet. `mark_read` sets `read` on `lastMessage` (the message at the
//! watermark) when its recount finds nothing unread up to the watermark, rather than from the
//! range it marked: so the reader's next `mark_read`, whatever its `upToSeq`, also repairs the
//! copy left `sent` by an interrupted one, as it does the count. An interrupted `mark_delivered`
//! leaves the copy `sent` until the receiver's next receipt reaching it, or a `mark_read` that
//! leaves nothing unread.
//!
//! **Durability and freshness.** Every collection is opened with write concern
//! `w: "majority", j: true` (with `wtimeout`), read concern `majority` and read preference
//! `primary`, whatever the URI says (`connect`). So an acknowledged message cannot roll back on
//! failover, a dedup refusal is never reported as a success, and the reads that decide a seq
//! (`lastSeq`, the newest stored seq, the dedup look-up) never come from a secondary or from a
//! deposed primary's unreplicated writes: a read of `lastSeq` at most lags the truth, and a
//! lagging read only costs a refused insert (the seq is taken), never a gap.
//!
//! # With transactions
//! On a replica set, `insert_message` could run its insert and the summary update in one
//! transaction, and `mark_read` its `updateMany`, recount and counter update: the summary would
//! never lag. The protocol above stays correct inside a transaction, so adding one there is a
//! local change; it is not required, so standalone servers work too.
//!
//! # Layout
//! - this file: [`MongoStore`] (collections, client set-up) and its [`Store`] impl, each method
//!   delegating to `reads` or `writes`; `gate`: the schema gate and the call deadline every
//!   call goes through.
//! - `connect`: settings, client options, what the URI may decide and what is enforced, the
//!   call deadline.
//! - `migrate`: the index plan against what the database already has (also `migrate
//!   --dry-run`), conflicts and foreign documents reported before anything is built.
//! - `ops`: the single-document operations of [`flow`] on the driver, each with `maxTimeMS`.
//! - `flow`: the multi-step protocols above (with their model test), `query`: every filter,
//!   update and index document (one file per collection, and `indexes`), `schema`: document shapes, `errors`: driver errors →
//!   [`StoreError`], `pool`: `chat_db_pool_connections{state}` from the driver's CMAP events.
//!
//! # Start-up and outages
//! [`connect`] only configures the client (the driver connects lazily), so a node starts while
//! MongoDB is unreachable: [`Store::migrate`] then answers `Unavailable`, the node starts
//! not-ready, and every call answers `Unavailable` (never touching collections without their
//! unique indexes) while a background migration is retried on each call and readiness probe;
//! once it succeeds the node is ready. Conflicting indexes or foreign documents are not
//! transient: the start fails with the report (`migrate`). Each call has one deadline (`connect`)
//! and answers `Unavailable` within it when MongoDB is down or slow, never hangs. Query timings
//! and errors come from the `MeteredStore` decorator.

mod connect;
mod errors;
mod flow;
mod gate;
mod migrate;
mod ops;
mod pool;
mod query;
mod reads;
mod schema;
#[cfg(test)]
mod tests;
mod writes;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use bson::doc;
use mongodb::{Client, Collection, Database};

pub use self::{
    connect::{DEFAULT_TIMEOUT, MongoSettings},
    migrate::{IndexState, MigrationPlan, plan},
};
use self::{
    errors::map_err,
    gate::SchemaGate,
    pool::PoolMetrics,
    schema::{ConversationDoc, MessageDoc},
};
use super::{
    DeliveryReceipt, HistoryQuery, Inserted, ListCursor, NewMessage, Page, ReadReceipt, Store, StoreResult, ViewVersion,
};
use crate::chat::model::{Conversation, User};

/// Opens the MongoDB store: parses the URI, applies the defaults and the enforced concerns
/// (`connect`), and configures the client. No round trip: the server may be down at start.
/// Indexes are created by [`Store::migrate`] (or, after an outage at start, by the store itself).
pub async fn connect(settings: &MongoSettings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(MongoStore::connect(settings).await?))
}

/// The physical collection names: the logical ones behind `MONGODB_COLLECTION_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Names {
    pub prefix: String,
}

impl Names {
    pub fn of(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }
}

pub struct MongoStore {
    db: Database,
    names: Names,
    users: Collection<User>,
    conversations: Collection<ConversationDoc>,
    messages: Collection<MessageDoc>,
    view_versions: Collection<bson::Document>,
    /// The deadline of a call, also sent as `maxTimeMS` and `wtimeout`.
    deadline: Duration,
    schema: Arc<SchemaGate>,
    _pool: Arc<PoolMetrics>,
}

impl MongoStore {
    pub async fn connect(settings: &MongoSettings) -> anyhow::Result<Self> {
        validate_prefix(&settings.collection_prefix)?;
        let connect::Prepared { mut options, deadline, overridden } = connect::prepare(settings).await?;
        let pool = PoolMetrics::new(options.max_pool_size.unwrap_or(connect::DEFAULT_MAX_POOL_SIZE));
        options.cmap_event_handler = Some(pool.handler());
        // Hosts only: the URI may carry credentials.
        let hosts = options.hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        for o in &overridden {
            tracing::warn!(setting = %o, "MONGODB_URI setting overridden for the chat store's collections");
        }
        let client = Client::with_options(options).context("configuring the MongoDB client")?;
        let db = client.database_with_options(&settings.db, connect::enforced(deadline));
        tracing::info!(%hosts, db = settings.db, prefix = settings.collection_prefix, ?deadline, "MongoDB client configured");
        Ok(Self::new(db, Names { prefix: settings.collection_prefix.clone() }, deadline, pool))
    }

    fn new(db: Database, names: Names, deadline: Duration, pool: Arc<PoolMetrics>) -> Self {
        Self {
            users: db.collection(&names.of(schema::USERS)),
            conversations: db.collection(&names.of(schema::CONVERSATIONS)),
            messages: db.collection(&names.of(schema::MESSAGES)),
            view_versions: db.collection(&names.of(schema::VIEW_VERSIONS)),
            db,
            names,
            deadline,
            schema: Arc::default(),
            _pool: pool,
        }
    }
}

/// Collection names are `<prefix><name>`: letters, digits, `_` and `-` only, so the prefix can
/// neither reach another namespace nor make an invalid name.
fn validate_prefix(prefix: &str) -> anyhow::Result<()> {
    if prefix.len() > 64 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        anyhow::bail!("MONGODB_COLLECTION_PREFIX may hold only letters, digits, '_' and '-' (at most 64)");
    }
    Ok(())
}

#[async_trait]
impl Store for MongoStore {
    async fn migrate(&self) -> StoreResult<()> {
        migrate::run(&self.db, &self.names).await?;
        self.schema.ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(async {
            let ping = doc! { "ping": 1, "maxTimeMS": ops::millis(self.deadline) };
            self.db.run_command(ping).await.map(|_| ()).map_err(map_err)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn upsert_user(&self, user: &User) -> StoreResult<()> {
        writes::upsert_user(self, user).await
    }

    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        reads::get_users(self, ids).await
    }

    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job_id: Option<&str>,
    ) -> StoreResult<(Conversation, bool)> {
        writes::find_or_create_conversation(self, a, b, job_id).await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        reads::get_conversation(self, id).await
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>> {
        reads::list_conversations(self, user, limit, cursor).await
    }

    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        reads::conversation_partners(self, user).await
    }

    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        writes::insert_message(self, msg).await
    }

    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
        reads::history(self, conversation_id, q).await
    }

    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
        reads::messages_after(self, conversation_id, after_seq, limit).await
    }

    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
        writes::mark_read(self, conversation_id, reader, up_to_seq).await
    }

    async fn mark_delivered(
        &self,
        conversation_id: &str,
        receiver: &str,
        up_to_seq: i64,
    ) -> StoreResult<DeliveryReceipt> {
        writes::mark_delivered(self, conversation_id, receiver, up_to_seq).await
    }

    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        reads::unread_counts(self, user).await
    }

    async fn view_version(&self, user: &str) -> StoreResult<ViewVersion> {
        reads::view_version(self, user).await
    }

    async fn bump_view_versions(&self, users: &[String]) -> StoreResult<()> {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        self.call(writes::bump_view_versions(self, &users)).await
    }
}
