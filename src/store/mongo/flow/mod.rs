//! The multi-step protocols (send, catch-up, mark read, mark delivered), written against
//! [`Ops`] — one method per single-document (or single-command) MongoDB operation — so that
//! the same code runs on the driver ([`super::MongoStore`]) and, in the tests below, on an
//! in-memory model with concurrent callers and injected failures between any two steps.
//! The module docs of [`super`] explain why these protocols keep the invariants.

use async_trait::async_trait;
use bson::oid::ObjectId;

use super::schema::{ConversationDoc, MessageDoc, parse_id};
use crate::{
    chat::model::{MessageStatus, Timestamp},
    store::{DeliveryReceipt, NewMessage, ReadReceipt, StoreError, StoreResult},
};

/// Insert attempts before giving up. Each lost race means another message was stored, so only
/// a burst of this many concurrent sends to one conversation gets here; in practice the call
/// deadline comes first.
const MAX_INSERT_ATTEMPTS: usize = 1000;
/// Unapplied messages fetched per catch-up round.
const CATCH_UP_BATCH: i64 = 128;
/// Catch-up rounds in a row in which nobody applied anything.
const MAX_STALLED_ROUNDS: usize = 8;
const MAX_RECOUNT_ROUNDS: usize = 16;

#[async_trait]
pub(super) trait Ops: Send + Sync {
    async fn conversation(&self, id: ObjectId) -> StoreResult<Option<ConversationDoc>>;
    async fn message_by_client_id(&self, sender: &str, client_message_id: &str) -> StoreResult<Option<MessageDoc>>;
    /// `Ok(false)`: a unique index refused it (seq taken, or clientMessageId already used).
    async fn try_insert(&self, m: &MessageDoc) -> StoreResult<bool>;
    /// The highest seq stored in the conversation (0 when empty).
    async fn newest_seq(&self, conversation: ObjectId) -> StoreResult<i64>;
    /// Messages with `seq > after`, oldest first.
    async fn stored_after(&self, conversation: ObjectId, after: i64, limit: i64) -> StoreResult<Vec<MessageDoc>>;
    /// Applies `m` to its conversation iff `lastSeq == m.seq - 1`; the updated doc, or `None`.
    async fn apply_message(&self, m: &MessageDoc, receiver_slot: Option<usize>)
    -> StoreResult<Option<ConversationDoc>>;
    /// `reader`'s unread messages up to `up_to` become read; how many changed.
    async fn mark_messages_read(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<u64>;
    async fn count_unread(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<i64>;
    /// `unread[slot] = min(unread[slot], count)` iff `lastSeq == watermark`; the updated doc.
    async fn set_unread(
        &self,
        conversation: ObjectId,
        watermark: i64,
        slot: usize,
        count: i64,
        last_message_read: bool,
    ) -> StoreResult<Option<ConversationDoc>>;
    async fn mark_messages_delivered(&self, conversation: ObjectId, receiver: &str, up_to: i64) -> StoreResult<u64>;
    async fn mark_last_message_delivered(&self, conversation: ObjectId, receiver: &str, up_to: i64) -> StoreResult<()>;
}

/// What [`store_message`] did.
#[derive(Debug)]
pub(super) enum Stored {
    /// Inserted with the next seq; the conversation as read before the insert.
    Created(MessageDoc, Box<ConversationDoc>),
    /// A message with this (senderId, clientMessageId) already existed.
    Existing(MessageDoc),
}

/// Step 1 of a send: the message is durably stored with the next seq (or found, for a retry).
/// The insert itself takes the seq: the unique (conversationId, seq) index lets exactly one
/// message have it, and a failed insert consumes nothing, so there is nothing to leave a gap.
pub(super) async fn store_message<O: Ops + ?Sized>(
    ops: &O,
    msg: NewMessage,
    created_at: &Timestamp,
) -> StoreResult<Stored> {
    // No look-up of the clientMessageId first: a retry's insert is refused by the unique index
    // (consuming nothing) and the original is read then; the common case saves a round trip.
    let conversation = parse_id(&msg.conversation_id).ok_or(StoreError::NotFound)?;
    let conv = ops.conversation(conversation).await?.ok_or(StoreError::NotFound)?;
    let mut doc = MessageDoc::new(conversation, msg, created_at);
    doc.seq = conv.last_seq + 1;
    for _ in 0..MAX_INSERT_ATTEMPTS {
        if ops.try_insert(&doc).await? {
            return Ok(Stored::Created(doc, Box::new(conv)));
        }
        // Refused: either this is a retry of a stored send…
        if let Some(cmid) = &doc.client_message_id
            && let Some(existing) = ops.message_by_client_id(&doc.sender_id, cmid).await?
        {
            return Ok(Stored::Existing(existing));
        }
        // …or the seq is taken: try right after the newest stored message. Losers do not apply
        // anything to the summary; each winner's `settle` does, helping its predecessors.
        doc.seq = ops.newest_seq(conversation).await? + 1;
    }
    Err(StoreError::Unavailable("too much contention on the conversation's seq".into()))
}

/// Step 2 of a send: the conversation's summary (lastSeq, lastMessage, updatedAt, unread)
/// includes `m`. `conv` is a recent read of the conversation, if the caller has one.
pub(super) async fn settle<O: Ops + ?Sized>(
    ops: &O,
    conv: Option<ConversationDoc>,
    m: &MessageDoc,
) -> StoreResult<ConversationDoc> {
    let mut conv = match conv {
        Some(c) => c,
        None => ops.conversation(m.conversation_id).await?.ok_or(StoreError::NotFound)?,
    };
    if conv.last_seq >= m.seq {
        return Ok(conv);
    }
    if conv.last_seq == m.seq - 1 {
        // The common case: our message is next; one compare-and-set.
        if let Some(c) = ops.apply_message(m, conv.participant_index(&m.receiver_id)).await? {
            return Ok(c);
        }
        conv = ops.conversation(m.conversation_id).await?.ok_or(StoreError::NotFound)?;
    }
    catch_up(ops, conv, Some(m.seq)).await
}

/// Applies stored but not yet applied messages to the summary, in seq order, each exactly once
/// (compare-and-set on `lastSeq`), whoever stored them — also those of a node that died between
/// its insert and its summary update. Up to `target`, or, with `None`, those stored now.
pub(super) async fn catch_up<O: Ops + ?Sized>(
    ops: &O,
    mut conv: ConversationDoc,
    mut target: Option<i64>,
) -> StoreResult<ConversationDoc> {
    // Every round either applies something (ours, or someone else's, seen on reload) or
    // stalls; with a fixed target, progress must end. Only stalls are counted.
    let mut stalls = 0;
    loop {
        if target.is_some_and(|t| conv.last_seq >= t) {
            return Ok(conv);
        }
        let before = conv.last_seq;
        let pending = ops.stored_after(conv.id, conv.last_seq, CATCH_UP_BATCH).await?;
        match pending.first() {
            None if target.is_none() => return Ok(conv),
            // Our copy of the conversation is older than a message we know exists: reload.
            None => {}
            Some(first) if first.seq > conv.last_seq + 1 => {
                // Cannot happen while the unique (conversationId, seq) index exists.
                return Err(StoreError::Internal(format!(
                    "conversation {}: seq {} missing before {}",
                    conv.id,
                    conv.last_seq + 1,
                    first.seq
                )));
            }
            Some(_) => {
                if target.is_none() {
                    target = pending.last().map(|m| m.seq);
                }
                let mut raced = false;
                for m in &pending {
                    if m.seq != conv.last_seq + 1 {
                        raced = true;
                        break;
                    }
                    match ops.apply_message(m, conv.participant_index(&m.receiver_id)).await? {
                        Some(c) => conv = c,
                        None => {
                            raced = true;
                            break;
                        }
                    }
                }
                if !raced {
                    continue;
                }
            }
        }
        // Someone else applied in between: continue from the current state.
        conv = ops.conversation(conv.id).await?.ok_or(StoreError::NotFound)?;
        if conv.last_seq == before {
            stalls += 1;
            if stalls >= MAX_STALLED_ROUNDS {
                return Err(StoreError::Unavailable("conversation catch-up made no progress".into()));
            }
        }
    }
}

/// `mark_read`: marks up to `min(up_to, lastSeq)`, then recounts the reader's unread messages
/// at a watermark and stores the count only if the watermark is still current (a message
/// applied meanwhile adds its +1 after, or we recount).
///
/// The embedded `lastMessage` is the message at the watermark, so it is read exactly when the
/// recount finds nothing unread up to the watermark (statuses never go back, so that still
/// holds when the guarded update lands). Deriving its status from the recount, rather than from
/// what this call marked, also repairs it after an earlier `mark_read` that stopped between
/// marking the messages and this update (a fault, a timeout, a crashed node): whatever
/// `up_to` the reader's next call asks for, like the count.
pub(super) async fn mark_read<O: Ops + ?Sized>(
    ops: &O,
    conversation: ObjectId,
    reader: &str,
    up_to: Option<i64>,
    read_at: Timestamp,
) -> StoreResult<ReadReceipt> {
    let mut conv = ops.conversation(conversation).await?.ok_or(StoreError::NotFound)?;
    if up_to.is_none_or(|u| u > conv.last_seq) {
        conv = catch_up(ops, conv, None).await?;
    }
    let up = up_to.map_or(conv.last_seq, |u| u.min(conv.last_seq));
    let updated = ops.mark_messages_read(conversation, reader, up).await?;
    let slot = conv.participant_index(reader);
    for _ in 0..MAX_RECOUNT_ROUNDS {
        let count = ops.count_unread(conversation, reader, conv.last_seq).await?;
        let Some(slot) = slot else {
            return Ok(ReadReceipt { up_to_seq: up, read_at, unread_count: count, updated });
        };
        // `lastSeq` is the guard, so `lastMessage` is still the message we look at here, the
        // one at the watermark: read iff none of the reader's messages up to it is unread.
        let last_read = count == 0
            && conv.last_message.as_ref().is_some_and(|m| m.receiver_id == reader && m.status != MessageStatus::Read);
        if let Some(c) = ops.set_unread(conversation, conv.last_seq, slot, count, last_read).await? {
            return Ok(ReadReceipt { up_to_seq: up, read_at, unread_count: c.unread[slot], updated });
        }
        conv = ops.conversation(conversation).await?.ok_or(StoreError::NotFound)?;
    }
    Err(StoreError::Unavailable("unread recount did not converge".into()))
}

/// `mark_delivered`: `sent` → `delivered` up to `min(up_to, lastSeq)`, and the embedded last
/// message with them. Unknown conversation: nothing to do (like the SQLite store).
pub(super) async fn mark_delivered<O: Ops + ?Sized>(
    ops: &O,
    conversation: ObjectId,
    receiver: &str,
    up_to: i64,
) -> StoreResult<DeliveryReceipt> {
    let Some(mut conv) = ops.conversation(conversation).await? else {
        return Ok(DeliveryReceipt { up_to_seq: 0, updated: 0 });
    };
    if up_to > conv.last_seq {
        conv = catch_up(ops, conv, None).await?;
    }
    let up = up_to.min(conv.last_seq);
    if up < 1 {
        return Ok(DeliveryReceipt { up_to_seq: up.max(0), updated: 0 });
    }
    let updated = ops.mark_messages_delivered(conversation, receiver, up).await?;
    let last_needs_it = conv
        .last_message
        .as_ref()
        .is_some_and(|m| m.receiver_id == receiver && m.seq <= up && m.status == MessageStatus::Sent);
    if last_needs_it {
        ops.mark_last_message_delivered(conversation, receiver, up).await?;
    }
    Ok(DeliveryReceipt { up_to_seq: up, updated })
}

#[cfg(test)]
mod model;
