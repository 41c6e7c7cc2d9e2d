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
//! **Durability.** Unless the URI says otherwise, writes use `w: "majority", j: true`.
//!
//! # With transactions
//! On a replica set, `insert_message` could run its insert and the summary update in one
//! transaction, and `mark_read` its `updateMany`, recount and counter update: the summary would
//! never lag. The protocol above stays correct inside a transaction, so adding one there is a
//! local change; it is not required, so standalone servers work too.
//!
//! # Connection
//! The URI's settings win; unset ones default to `serverSelectionTimeoutMS=2000`,
//! `connectTimeoutMS=2000`, `maxPoolSize=50`, `retryWrites=true`, `retryReads=true`. The Rust
//! driver has no socket timeout (it refuses `socketTimeoutMS`), so every store call has a
//! deadline instead: `socketTimeoutMS` if the URI sets it (taken out before the driver sees
//! it), else 5 s. A MongoDB outage answers `Unavailable` within that, never hangs. [`connect`]
//! fails with a clear error when no server answers a `ping` within the selection timeout.
//! `pool` keeps `chat_db_pool_connections{state}` from the driver's CMAP events; query
//! timings and errors come from the `MeteredStore` decorator.

mod errors;
mod flow;
mod pool;
mod query;
mod schema;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database,
    options::{Acknowledgment, ClientOptions, ReturnDocument, WriteConcern},
};
use serde::de::DeserializeOwned;

use self::{
    errors::{is_duplicate_key, map_err},
    flow::{Ops, Stored},
    pool::PoolMetrics,
    query::FindSpec,
    schema::{CONVERSATIONS, ConversationDoc, MESSAGES, MessageDoc, SeqRow, USERS, UnreadRow, parse_id, to_bson_time},
};
use super::{
    HistoryQuery, Inserted, ListCursor, NewMessage, Page, ReadReceipt, Store, StoreError, StoreResult, sorted_pair,
};
use crate::{
    chat::model::{Conversation, MessageStatus, User, now},
    telemetry::metrics::DB_ERRORS_TOTAL,
};

const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_POOL_SIZE: u32 = 50;
/// Deadline of one store call when the URI sets no `socketTimeoutMS`.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Index builds on a large collection take a while; still bounded so startup cannot hang.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// `mongodb+srv://` URIs need DNS look-ups before anything else.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of an upsert that keeps losing a duplicate-key race (the winner's doc is then read).
const MAX_UPSERT_ATTEMPTS: usize = 3;

/// Opens the MongoDB store: parses `uri`, applies the defaults above, and checks that a server
/// answers within the selection timeout. Indexes are created by [`Store::migrate`].
pub async fn connect(uri: &str, db: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(MongoStore::connect(uri, db).await?))
}

pub struct MongoStore {
    db: Database,
    users: Collection<User>,
    conversations: Collection<ConversationDoc>,
    messages: Collection<MessageDoc>,
    call_timeout: Duration,
    _pool: Arc<PoolMetrics>,
}

/// Fills in what the URI left unset.
fn apply_defaults(o: &mut ClientOptions) {
    o.server_selection_timeout.get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
    o.connect_timeout.get_or_insert(DEFAULT_CONNECT_TIMEOUT);
    o.max_pool_size.get_or_insert(DEFAULT_MAX_POOL_SIZE);
    o.retry_writes.get_or_insert(true);
    o.retry_reads.get_or_insert(true);
    o.app_name.get_or_insert_with(|| "jobsphere-chat".to_owned());
    if o.write_concern.is_none() {
        o.write_concern = Some(WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build());
    }
}

/// Client options from the URI with our defaults, and the per-call deadline.
async fn client_options(uri: &str) -> anyhow::Result<(ClientOptions, Duration)> {
    let (uri, socket_timeout) = take_socket_timeout(uri)?;
    let call_timeout = socket_timeout.filter(|d| !d.is_zero()).unwrap_or(DEFAULT_CALL_TIMEOUT);
    let mut options = tokio::time::timeout(RESOLVE_TIMEOUT, ClientOptions::parse(uri))
        .await
        .map_err(|_| anyhow!("MONGODB_URI: resolving the connection string took over {RESOLVE_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("MONGODB_URI is not a valid connection string: {}", e.kind))?;
    apply_defaults(&mut options);
    Ok((options, call_timeout))
}

/// Removes `socketTimeoutMS` from the URI's options and returns it. The Rust driver has no
/// socket timeout and refuses a URI that sets one; URIs shared with other drivers often do, and
/// we honour it as the deadline of each store call instead.
fn take_socket_timeout(uri: &str) -> anyhow::Result<(String, Option<Duration>)> {
    // Userinfo and hosts cannot hold a raw `?` (it must be percent-encoded), so the first one
    // starts the options.
    let Some((base, opts)) = uri.split_once('?') else { return Ok((uri.to_owned(), None)) };
    let mut timeout = None;
    let mut kept = Vec::new();
    for opt in opts.split(['&', ';']).filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("sockettimeoutms") => {
                let ms: u64 =
                    v.parse().map_err(|_| anyhow!("MONGODB_URI: socketTimeoutMS must be a number of milliseconds"))?;
                timeout = Some(Duration::from_millis(ms));
            }
            _ => kept.push(opt),
        }
    }
    let uri = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((uri, timeout))
}

impl MongoStore {
    pub async fn connect(uri: &str, db: &str) -> anyhow::Result<Self> {
        let (mut options, call_timeout) = client_options(uri).await?;
        let selection = options.server_selection_timeout.unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT);
        let pool = PoolMetrics::new(options.max_pool_size.unwrap_or(DEFAULT_MAX_POOL_SIZE));
        options.cmap_event_handler = Some(pool.handler());
        // Hosts only: the URI may carry credentials.
        let hosts = options.hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let client = Client::with_options(options).context("configuring the MongoDB client")?;
        let database = client.database(db);
        match tokio::time::timeout(selection + call_timeout, database.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("MongoDB at {hosts} is not reachable: {}", e.kind),
            Err(_) => anyhow::bail!("MongoDB at {hosts} did not answer a ping within {:?}", selection + call_timeout),
        }
        tracing::info!(%hosts, db, "connected to MongoDB");
        Ok(Self::new(database, call_timeout, pool))
    }

    fn new(db: Database, call_timeout: Duration, pool: Arc<PoolMetrics>) -> Self {
        Self {
            users: db.collection(USERS),
            conversations: db.collection(CONVERSATIONS),
            messages: db.collection(MESSAGES),
            db,
            call_timeout,
            _pool: pool,
        }
    }

    /// Runs a store call within the call deadline: an unresponsive server is `Unavailable`.
    async fn bounded<T>(&self, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        bounded(self.call_timeout, f).await
    }

    async fn conversation_by_key(&self, key: Document) -> StoreResult<Option<ConversationDoc>> {
        self.conversations.find_one(key).await.map_err(map_err)
    }
}

async fn bounded<T>(limit: Duration, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("MongoDB did not answer within {limit:?}"))))
}

async fn find<T>(coll: &Collection<T>, spec: FindSpec) -> StoreResult<Vec<T>>
where
    T: DeserializeOwned + Send + Sync,
{
    let mut find = coll.find(spec.filter).sort(spec.sort).limit(spec.limit);
    if let Some(skip) = spec.skip {
        find = find.skip(skip);
    }
    if let Some(projection) = spec.projection {
        find = find.projection(projection);
    }
    find.await.map_err(map_err)?.try_collect().await.map_err(map_err)
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
        bounded(MIGRATE_TIMEOUT, async {
            let specs = query::indexes();
            for collection in [CONVERSATIONS, MESSAGES] {
                let models = specs.iter().filter(|s| s.collection == collection).map(|s| s.model());
                self.db.collection::<Document>(collection).create_indexes(models).await.map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.bounded(async { self.db.run_command(doc! { "ping": 1 }).await.map(|_| ()).map_err(map_err) }).await
    }

    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn upsert_user(&self, user: &User) -> StoreResult<()> {
        self.bounded(async {
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
        self.bounded(async {
            let found: Vec<User> = self
                .users
                .find(query::users_by_ids(ids))
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
        self.bounded(async {
            for _ in 0..MAX_UPSERT_ATTEMPTS {
                let id = ObjectId::new();
                let res = self
                    .conversations
                    .find_one_and_update(key.clone(), query::conversation_insert(id, &pair, to_bson_time(&now())))
                    .upsert(true)
                    .return_document(ReturnDocument::After)
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
        self.bounded(async { Ok(self.conversation_by_key(query::by_id(id)).await?.map(ConversationDoc::into_domain)) })
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
        self.bounded(async {
            Ok(find(&self.conversations, spec).await?.into_iter().map(ConversationDoc::into_domain).collect())
        })
        .await
    }

    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        self.bounded(async {
            let all = self
                .conversations
                .distinct("participants", query::conversations_of(user, None))
                .await
                .map_err(map_err)?;
            Ok(all.into_iter().filter_map(|p| p.as_str().filter(|p| *p != user).map(str::to_owned)).collect())
        })
        .await
    }

    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        let stored = self.bounded(flow::store_message(self, msg, &now())).await?;
        let (doc, conv, created) = match stored {
            Stored::Created(doc, conv) => (doc, Some(*conv), true),
            Stored::Existing(doc) => (doc, None, false),
        };
        // The message is durable: from here on, a failure only delays the summary (module docs).
        if let Err(e) = self.bounded(flow::settle(self, conv, &doc)).await {
            tracing::warn!(error = %e, conversation_id = %doc.conversation_id, seq = doc.seq,
                "message stored; conversation summary left for the next writer to catch up");
            metrics::counter!(DB_ERRORS_TOTAL, "op" => "settle_conversation").increment(1);
        }
        Ok(Inserted { message: doc.into_domain(), created })
    }

    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
        let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
        self.bounded(async { Ok(page_from(find(&self.messages, query::history(id, &q)).await?, q.limit, true)) }).await
    }

    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
        let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
        let spec = query::messages_after(id, after_seq, i64::from(limit) + 1);
        self.bounded(async { Ok(page_from(find(&self.messages, spec).await?, limit, false)) }).await
    }

    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
        let id = parse_id(conversation_id).ok_or(StoreError::NotFound)?;
        self.bounded(flow::mark_read(self, id, reader, up_to_seq, now())).await
    }

    async fn mark_delivered(&self, conversation_id: &str, receiver: &str, up_to_seq: i64) -> StoreResult<u64> {
        let Some(id) = parse_id(conversation_id) else { return Ok(0) };
        self.bounded(flow::mark_delivered(self, id, receiver, up_to_seq)).await
    }

    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        self.bounded(async {
            let rows: Vec<UnreadRow> = self
                .conversations
                .clone_with_type::<UnreadRow>()
                .find(query::unread_of(user))
                .projection(query::unread_projection())
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

/// The single-document steps of [`flow`], on the driver.
#[async_trait]
impl Ops for MongoStore {
    async fn conversation(&self, id: ObjectId) -> StoreResult<Option<ConversationDoc>> {
        self.conversation_by_key(query::by_id(id)).await
    }

    async fn message_by_client_id(&self, sender: &str, client_message_id: &str) -> StoreResult<Option<MessageDoc>> {
        self.messages.find_one(query::by_client_id(sender, client_message_id)).await.map_err(map_err)
    }

    async fn try_insert(&self, m: &MessageDoc) -> StoreResult<bool> {
        match self.messages.insert_one(m).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn newest_seq(&self, conversation: ObjectId) -> StoreResult<i64> {
        let rows = find(&self.messages.clone_with_type::<SeqRow>(), query::newest_seq(conversation)).await?;
        Ok(rows.first().map_or(0, |r| r.seq))
    }

    async fn stored_after(&self, conversation: ObjectId, after: i64, limit: i64) -> StoreResult<Vec<MessageDoc>> {
        find(&self.messages, query::messages_after(conversation, after, limit)).await
    }

    async fn apply_message(
        &self,
        m: &MessageDoc,
        receiver_slot: Option<usize>,
    ) -> StoreResult<Option<ConversationDoc>> {
        let update = query::apply_message(m, receiver_slot).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.conversations
            .find_one_and_update(query::conversation_at(m.conversation_id, m.seq - 1), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)
    }

    async fn mark_messages_read(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<u64> {
        self.messages
            .update_many(query::unread_messages(conversation, reader, up_to), query::set_status(MessageStatus::Read))
            .await
            .map(|r| r.modified_count)
            .map_err(map_err)
    }

    async fn count_unread(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<i64> {
        self.messages
            .count_documents(query::unread_messages(conversation, reader, up_to))
            .await
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            .map_err(map_err)
    }

    async fn set_unread(
        &self,
        conversation: ObjectId,
        watermark: i64,
        slot: usize,
        count: i64,
        last_message_read: bool,
    ) -> StoreResult<Option<ConversationDoc>> {
        self.conversations
            .find_one_and_update(
                query::conversation_at(conversation, watermark),
                query::set_unread(slot, count, last_message_read),
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)
    }

    async fn mark_messages_delivered(&self, conversation: ObjectId, receiver: &str, up_to: i64) -> StoreResult<u64> {
        self.messages
            .update_many(
                query::undelivered_messages(conversation, receiver, up_to),
                query::set_status(MessageStatus::Delivered),
            )
            .await
            .map(|r| r.modified_count)
            .map_err(map_err)
    }

    async fn mark_last_message_delivered(&self, conversation: ObjectId, receiver: &str, up_to: i64) -> StoreResult<()> {
        self.conversations
            .update_one(query::last_message_deliverable(conversation, receiver, up_to), query::last_message_delivered())
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::chat::model::{MessageType, from_millis};

    async fn parsed(uri: &str) -> (ClientOptions, Duration) {
        client_options(uri).await.unwrap()
    }

    #[tokio::test]
    async fn defaults_fill_what_the_uri_leaves_unset() {
        let (o, call) = parsed("mongodb://db.internal:27017/").await;
        assert_eq!(o.server_selection_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.max_pool_size, Some(50));
        assert_eq!(o.retry_writes, Some(true));
        assert_eq!(o.retry_reads, Some(true));
        assert_eq!(o.app_name.as_deref(), Some("jobsphere-chat"));
        let wc = o.write_concern.unwrap();
        assert_eq!((wc.w, wc.journal), (Some(Acknowledgment::Majority), Some(true)));
        assert_eq!(call, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_uri_wins() {
        let (o, call) = parsed(
            "mongodb://u:p@a:1,b:2/?replicaSet=rs0&serverSelectionTimeoutMS=500&connectTimeoutMS=700\
             &maxPoolSize=7&retryWrites=false&retryReads=false&socketTimeoutMS=9000&w=1&appName=x",
        )
        .await;
        assert_eq!(o.server_selection_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(700)));
        assert_eq!(o.max_pool_size, Some(7));
        assert_eq!(o.retry_writes, Some(false));
        assert_eq!(o.retry_reads, Some(false));
        assert_eq!(o.app_name.as_deref(), Some("x"));
        assert_eq!(o.write_concern.unwrap().w, Some(Acknowledgment::Nodes(1)));
        assert_eq!(call, Duration::from_secs(9));
    }

    #[test]
    fn socket_timeout_is_taken_out_of_the_uri() {
        let t = |u: &str| take_socket_timeout(u).unwrap();
        assert_eq!(t("mongodb://h/db"), ("mongodb://h/db".to_owned(), None));
        assert_eq!(t("mongodb://h/?w=1"), ("mongodb://h/?w=1".to_owned(), None));
        assert_eq!(
            t("mongodb://u:p%3F@h/db?w=1&socketTimeoutMS=2500;retryWrites=false"),
            ("mongodb://u:p%3F@h/db?w=1&retryWrites=false".to_owned(), Some(Duration::from_millis(2500)))
        );
        assert_eq!(t("mongodb://h/?SOCKETTIMEOUTMS=0"), ("mongodb://h/".to_owned(), Some(Duration::ZERO)));
        assert!(take_socket_timeout("mongodb://h/?socketTimeoutMS=soon").is_err());
    }

    #[tokio::test]
    async fn zero_socket_timeout_means_the_default_deadline() {
        assert_eq!(parsed("mongodb://h/?socketTimeoutMS=0").await.1, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn connect_fails_fast_and_clearly_without_a_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let started = Instant::now();
        let err = connect(&format!("mongodb://user:secret@127.0.0.1:{port}/?serverSelectionTimeoutMS=300"), "chat")
            .await
            .err()
            .expect("no server there");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let text = format!("{err:#}");
        assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("not reachable"), "{text}");
        assert!(!text.contains("secret"), "credentials never in errors: {text}");
    }

    #[tokio::test]
    async fn a_bad_uri_is_a_clear_error() {
        let err = connect("mongodb://", "chat").await.err().expect("invalid");
        assert!(format!("{err:#}").contains("MONGODB_URI"), "{err:#}");
    }

    #[tokio::test]
    async fn calls_past_the_deadline_are_unavailable() {
        let r: StoreResult<()> = bounded(Duration::from_millis(10), std::future::pending()).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert_eq!(bounded(Duration::from_secs(1), async { Ok(3) }).await.unwrap(), 3);
    }

    /// A store on a client that can reach no server: answers come from the id checks alone, or
    /// are `Unavailable` within the deadline — never a panic, never a hang.
    async fn offline_store() -> MongoStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut o =
            ClientOptions::parse(format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=100")).await.unwrap();
        apply_defaults(&mut o);
        let client = Client::with_options(o).unwrap();
        MongoStore::new(client.database("chat"), Duration::from_secs(3), PoolMetrics::new(1))
    }

    #[tokio::test]
    async fn invalid_ids_answer_like_unknown_ones_without_a_round_trip() {
        let s = offline_store().await;
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
        let s = offline_store().await;
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
