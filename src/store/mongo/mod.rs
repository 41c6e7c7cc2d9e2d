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
//! - `connect`: settings, client options, what the URI may decide and what is enforced, the
//!   call deadline.
//! - `migrate`: the index plan against what the database already has (also `migrate
//!   --dry-run`), conflicts and foreign documents reported before anything is built.
//! - `ops`: the single-document operations of [`flow`] on the driver, each with `maxTimeMS`.
//! - `flow`: the multi-step protocols above (with their model test), `query`: every filter,
//!   update and index document, `schema`: document shapes, `errors`: driver errors →
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
mod migrate;
mod ops;
mod pool;
mod query;
mod schema;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Client, Collection, Database, options::ReturnDocument};

pub use self::{
    connect::{DEFAULT_TIMEOUT, MongoSettings},
    migrate::{IndexState, MigrationPlan, plan},
};
use self::{
    errors::{is_duplicate_key, map_err},
    flow::Stored,
    ops::find,
    pool::PoolMetrics,
    query::FindSpec,
    schema::{ConversationDoc, MessageDoc, UnreadRow, parse_id, to_bson_time},
};
use super::{
    HistoryQuery, Inserted, ListCursor, NewMessage, Page, ReadReceipt, Store, StoreError, StoreResult, sorted_pair,
};
use crate::{
    chat::model::{Conversation, User, now},
    telemetry::metrics::DB_ERRORS_TOTAL,
};

/// Attempts of an upsert that keeps losing a duplicate-key race (the winner's doc is then read).
const MAX_UPSERT_ATTEMPTS: usize = 3;

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

/// Whether the indexes the invariants rest on are known to exist, and whether a background
/// migration is under way.
#[derive(Debug, Default)]
struct SchemaGate {
    ready: AtomicBool,
    running: AtomicBool,
}

pub struct MongoStore {
    db: Database,
    names: Names,
    users: Collection<User>,
    conversations: Collection<ConversationDoc>,
    messages: Collection<MessageDoc>,
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
            db,
            names,
            deadline,
            schema: Arc::default(),
            _pool: pool,
        }
    }

    /// Runs a store call within the deadline, once the indexes exist: before that (MongoDB
    /// unreachable at start) every call is `Unavailable` and starts a background migration.
    async fn call<T>(&self, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.ensure_schema()?;
        bounded(self.deadline, f).await
    }

    fn ensure_schema(&self) -> StoreResult<()> {
        if self.schema.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.schema.running.swap(true, Ordering::AcqRel) {
            let (db, names, gate) = (self.db.clone(), self.names.clone(), self.schema.clone());
            // Its own task: a readiness probe that gives up on its ping must not cancel a build.
            tokio::spawn(async move {
                match migrate::run(&db, &names).await {
                    Ok(()) => {
                        gate.ready.store(true, Ordering::Release);
                        tracing::info!("MongoDB answers and the indexes are in place: store ready");
                    }
                    Err(e) => tracing::warn!(error = %e, "MongoDB store still not ready"),
                }
                gate.running.store(false, Ordering::Release);
            });
        }
        Err(StoreError::Unavailable("MongoDB store not ready: indexes not verified yet".into()))
    }

    async fn conversation_by_key(&self, key: bson::Document) -> StoreResult<Option<ConversationDoc>> {
        self.conversations.find_one(key).max_time(self.deadline).await.map_err(map_err)
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

async fn bounded<T>(limit: Duration, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("MongoDB did not answer within {limit:?}"))))
}

/// Rows (`limit` + 1 asked for) to a page; history comes newest first and is turned around.
fn page_from(rows: Vec<MessageDoc>, limit: u32, newest_first: bool) -> Page {
    let mut messages: Vec<_> = rows.into_iter().map(MessageDoc::into_domain).collect();
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    if newest_first {
        messages.reverse();
    }
    Page { messages, has_more }
}

fn empty_page() -> Page {
    Page { messages: Vec::new(), has_more: false }
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
        self.call(async {
            let update = query::user_upsert(
                &user.name,
                user.email.as_deref(),
                user.role,
                user.avatar.as_deref(),
                to_bson_time(&now()),
            );
            for _ in 0..MAX_UPSERT_ATTEMPTS {
                // Two first logins at once can both try to insert: the loser updates next round.
                match self.users.update_one(query::user_key(&user.id), update.clone()).upsert(true).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_duplicate_key(&e) => continue,
                    Err(e) => return Err(map_err(e)),
                }
            }
            Err(StoreError::Conflict(format!("user {} kept colliding on upsert", user.id)))
        })
        .await
    }

    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.call(async {
            let found: Vec<User> = self
                .users
                .find(query::users_by_ids(ids))
                .max_time(self.deadline)
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            let by_id: HashMap<&str, &User> = found.iter().map(|u| (u.id.as_str(), u)).collect();
            // In the order asked for, like the SQLite store.
            Ok(ids.iter().filter_map(|id| by_id.get(id.as_str()).map(|u| (*u).clone())).collect())
        })
        .await
    }

    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job_id: Option<&str>,
    ) -> StoreResult<(Conversation, bool)> {
        let pair = sorted_pair(a, b);
        let key = query::conversation_key(&pair, job_id);
        self.call(async {
            for _ in 0..MAX_UPSERT_ATTEMPTS {
                let id = ObjectId::new();
                let res = self
                    .conversations
                    .find_one_and_update(key.clone(), query::conversation_insert(id, &pair, to_bson_time(&now())))
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .max_time(self.deadline)
                    .await;
                match res {
                    Ok(Some(conv)) => {
                        let created = conv.id == id;
                        return Ok((conv.into_domain(), created));
                    }
                    Ok(None) => {}
                    // Another node created it first: it is there now.
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(map_err(e)),
                }
                if let Some(conv) = self.conversation_by_key(key.clone()).await? {
                    return Ok((conv.into_domain(), false));
                }
            }
            Err(StoreError::Conflict("conversation creation kept colliding".into()))
        })
        .await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let Some(id) = parse_id(id) else { return Ok(None) };
        self.call(async { Ok(self.conversation_by_key(query::by_id(id)).await?.map(ConversationDoc::into_domain)) })
            .await
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = match cursor {
            None => None,
            Some(c) => Some((DateTime::from_millis(c.updated_at_ms), parse_id(&c.id).ok_or(StoreError::NotFound)?)),
        };
        let spec = FindSpec {
            filter: query::conversations_of(user, after),
            sort: query::conversations_order(),
            limit: i64::from(limit),
            skip: None,
            projection: None,
        };
        self.call(async {
            Ok(find(&self.conversations, spec, self.deadline)
                .await?
                .into_iter()
                .map(ConversationDoc::into_domain)
                .collect())
        })
        .await
    }

    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        self.call(async {
            let all = self
                .conversations
                .distinct("participants", query::conversations_of(user, None))
                .max_time(self.deadline)
                .await
                .map_err(map_err)?;
            Ok(all.into_iter().filter_map(|p| p.as_str().filter(|p| *p != user).map(str::to_owned)).collect())
        })
        .await
    }

    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        let stored = self.call(flow::store_message(self, msg, &now())).await?;
        let (doc, conv, created) = match stored {
            Stored::Created(doc, conv) => (doc, Some(*conv), true),
            Stored::Existing(doc) => (doc, None, false),
        };
        // The message is durable: from here on, a failure only delays the summary (module docs).
        if let Err(e) = self.call(flow::settle(self, conv, &doc)).await {
            tracing::warn!(error = %e, conversation_id = %doc.conversation_id, seq = doc.seq,
                "message stored; conversation summary left for the next writer to catch up");
            metrics::counter!(DB_ERRORS_TOTAL, "op" => "settle_conversation").increment(1);
        }
        Ok(Inserted { message: doc.into_domain(), created })
    }

    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
        let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
        self.call(async {
            Ok(page_from(find(&self.messages, query::history(id, &q), self.deadline).await?, q.limit, true))
        })
        .await
    }

    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
        let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
        let spec = query::messages_after(id, after_seq, i64::from(limit) + 1);
        self.call(async { Ok(page_from(find(&self.messages, spec, self.deadline).await?, limit, false)) }).await
    }

    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
        let id = parse_id(conversation_id).ok_or(StoreError::NotFound)?;
        self.call(flow::mark_read(self, id, reader, up_to_seq, now())).await
    }

    async fn mark_delivered(&self, conversation_id: &str, receiver: &str, up_to_seq: i64) -> StoreResult<u64> {
        let Some(id) = parse_id(conversation_id) else { return Ok(0) };
        self.call(flow::mark_delivered(self, id, receiver, up_to_seq)).await
    }

    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        self.call(async {
            let rows: Vec<UnreadRow> = self
                .conversations
                .clone_with_type::<UnreadRow>()
                .find(query::unread_of(user))
                .projection(query::unread_projection())
                .max_time(self.deadline)
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    let slot = r.participants.iter().position(|p| p == user)?;
                    (r.unread[slot] > 0).then(|| (r.id.to_hex(), r.unread[slot]))
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use mongodb::options::ClientOptions;

    use super::*;
    use crate::chat::model::{MessageStatus, MessageType, from_millis};

    #[tokio::test]
    async fn calls_past_the_deadline_are_unavailable() {
        let r: StoreResult<()> = bounded(Duration::from_millis(10), std::future::pending()).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert_eq!(bounded(Duration::from_secs(1), async { Ok(3) }).await.unwrap(), 3);
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A store on a client that can reach no server: answers come from the id checks alone, or
    /// are `Unavailable` within the deadline — never a panic, never a hang.
    async fn offline_store(schema_ready: bool) -> MongoStore {
        let mut o =
            ClientOptions::parse(format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=100", closed_port()))
                .await
                .unwrap();
        connect::apply_defaults(&mut o);
        let client = Client::with_options(o).unwrap();
        let deadline = Duration::from_secs(3);
        let db = client.database_with_options("chat", connect::enforced(deadline));
        let s = MongoStore::new(db, Names { prefix: "chat_".into() }, deadline, PoolMetrics::new(1));
        s.schema.ready.store(schema_ready, Ordering::Release);
        s
    }

    #[tokio::test]
    async fn collections_carry_the_prefix() {
        let s = offline_store(true).await;
        assert_eq!(
            [s.users.name(), s.conversations.name(), s.messages.name()],
            ["chat_users", "chat_conversations", "chat_messages"]
        );
        assert!(validate_prefix("chat_").is_ok() && validate_prefix("").is_ok());
        for bad in ["a.b", "a b", "$x", "x/y", &"p".repeat(65)] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn connect_needs_no_server_and_migrate_says_unavailable_quickly() {
        let port = closed_port();
        let uri = format!("mongodb://user:secret@127.0.0.1:{port}/?serverSelectionTimeoutMS=300");
        let s = MongoStore::connect(&MongoSettings::new(uri, "chat")).await.expect("no round trip at connect");
        let started = Instant::now();
        let err = s.migrate().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(matches!(&err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "credentials never in errors: {err}");
        assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))), "not ready");
    }

    #[tokio::test]
    async fn invalid_ids_answer_like_unknown_ones_without_a_round_trip() {
        let s = offline_store(true).await;
        for bad in ["", "nope", "65a00000000000000000000", "zz0000000000000000000000", "éééééééééééé"] {
            assert_eq!(s.get_conversation(bad).await.unwrap(), None);
            let q = HistoryQuery { before_seq: None, skip: 0, limit: 10 };
            let p = s.history(bad, q).await.unwrap();
            assert!(p.messages.is_empty() && !p.has_more);
            assert!(s.messages_after(bad, 0, 10).await.unwrap().messages.is_empty());
            assert!(matches!(s.mark_read(bad, "u", None).await, Err(StoreError::NotFound)));
            assert_eq!(s.mark_delivered(bad, "u", 3).await.unwrap(), 0);
            let cursor = ListCursor { updated_at_ms: 1, id: bad.to_owned() };
            assert!(matches!(s.list_conversations("u", 10, Some(&cursor)).await, Err(StoreError::NotFound)));
            let msg = NewMessage {
                conversation_id: bad.to_owned(),
                sender_id: "a".into(),
                receiver_id: "b".into(),
                message_type: MessageType::Text,
                content: "x".into(),
                client_message_id: None,
            };
            assert!(matches!(s.insert_message(msg).await, Err(StoreError::NotFound)));
        }
        assert!(s.get_users(&[]).await.unwrap().is_empty());
        assert!(s.list_conversations("u", 0, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_outage_is_unavailable() {
        for schema_ready in [true, false] {
            let s = offline_store(schema_ready).await;
            assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
            assert!(matches!(s.get_conversation(&ObjectId::new().to_hex()).await, Err(StoreError::Unavailable(_))));
            let msg = NewMessage {
                conversation_id: ObjectId::new().to_hex(),
                sender_id: "a".into(),
                receiver_id: "b".into(),
                message_type: MessageType::Text,
                content: "x".into(),
                client_message_id: Some("m".into()),
            };
            assert!(matches!(s.insert_message(msg).await, Err(StoreError::Unavailable(_))));
            assert!(matches!(s.find_or_create_conversation("a", "b", None).await, Err(StoreError::Unavailable(_))));
        }
    }

    #[test]
    fn pages_are_oldest_first_with_has_more() {
        let m = |seq| MessageDoc {
            id: ObjectId::new(),
            conversation_id: ObjectId::new(),
            seq,
            sender_id: "a".into(),
            receiver_id: "b".into(),
            message_type: MessageType::Text,
            content: "x".into(),
            status: MessageStatus::Sent,
            client_message_id: None,
            created_at: to_bson_time(&from_millis(1)),
        };
        let p = page_from(vec![m(9), m(8), m(7)], 2, true);
        assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9]);
        assert!(p.has_more);
        let p = page_from(vec![m(3), m(4)], 2, false);
        assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(!p.has_more);
    }
}
