//! The writes, each run by the writer thread inside its own savepoint of a group commit
//! ([`super::writer`]): users, conversations, messages (where `seq` is allocated) and receipts.
//!
//! `seq` comes from `UPDATE conversations SET last_seq = last_seq + 1 … RETURNING` in the same
//! transaction as the message insert: a write that fails rolls back to its savepoint, taking
//! its seq with it, so the seqs stored are gap-free whichever process writes.
//!
//! Each write that changes what a user's conversation list or unread counts show sets that
//! user's view version in the same transaction ([`bump_view_versions`]): a cache can never see
//! the new version with the old data, nor the reverse.

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    errors::map_err,
    rows::{CONVERSATION_COLUMNS, CONVERSATION_FROM, MESSAGE_COLUMNS, conversation_from_row, message_from_row},
};
use crate::{
    chat::model::{Conversation, Message, MessageStatus, User, new_id, now},
    store::{DeliveryReceipt, Inserted, NewMessage, ReadReceipt, StoreError, StoreResult, fresh_view_version},
};

/// A fresh view version for each user (one upsert each, inside the caller's transaction).
pub(super) fn bump_view_versions<S: AsRef<str>>(c: &Connection, users: &[S]) -> StoreResult<()> {
    let mut s = c
        .prepare_cached(
            "INSERT INTO view_versions (user_id, v) VALUES (?1, ?2) ON CONFLICT(user_id) DO UPDATE SET v = excluded.v",
        )
        .map_err(map_err)?;
    for u in users {
        s.execute(params![u.as_ref(), fresh_view_version()]).map_err(map_err)?;
    }
    Ok(())
}

pub(super) fn upsert_user(c: &Connection, u: &User) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO users (id, name, email, role, avatar, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, email = excluded.email,
           role = excluded.role, avatar = excluded.avatar, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![u.id, u.name, u.email, u.role.as_str(), u.avatar, now().timestamp_millis()]))
    .map(|_| ())
    .map_err(map_err)
}

/// `(ua, ub)` sorted; the conversation and whether this call created it.
pub(super) fn find_or_create_conversation(
    c: &Connection,
    ua: &str,
    ub: &str,
    job: Option<&str>,
) -> StoreResult<(Conversation, bool)> {
    let job_key = job.unwrap_or_default();
    let t = now().timestamp_millis();
    // INSERT OR IGNORE + SELECT: the unique index decides, whichever node gets there first.
    let created = c
        .prepare_cached(
            "INSERT INTO conversations (id, user_a, user_b, job_key, job_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(user_a, user_b, job_key) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![new_id(), ua, ub, job_key, job, t]))
        .map_err(map_err)?
        == 1;
    if created {
        bump_view_versions(c, &[ua, ub])?;
    }
    let conv = c
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM}
             WHERE c.user_a = ?1 AND c.user_b = ?2 AND c.job_key = ?3"
        ))
        .and_then(|mut s| s.query_row(params![ua, ub, job_key], conversation_from_row))
        .map_err(map_err)?;
    Ok((conv, created))
}

/// A retry (same sender and clientMessageId) returns the original; otherwise the next seq.
pub(super) fn insert_message(c: &Connection, msg: NewMessage) -> StoreResult<Inserted> {
    if let Some(cmid) = &msg.client_message_id {
        let existing = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_message_id = ?2"
            ))
            .and_then(|mut s| s.query_row(params![msg.sender_id, cmid], |r| message_from_row(r, 0)).optional())
            .map_err(map_err)?;
        if let Some(message) = existing {
            return Ok(Inserted { message, created: false });
        }
    }
    let created_at = now();
    let t = created_at.timestamp_millis();
    let seq: i64 = c
        .prepare_cached(
            "UPDATE conversations SET last_seq = last_seq + 1, updated_at = MAX(updated_at, ?2),
               unread_a = unread_a + (user_a = ?3), unread_b = unread_b + (user_b = ?3)
             WHERE id = ?1 RETURNING last_seq",
        )
        .and_then(|mut s| s.query_row(params![msg.conversation_id, t, msg.receiver_id], |r| r.get(0)).optional())
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    let message = Message {
        id: new_id(),
        conversation_id: msg.conversation_id,
        seq,
        sender_id: msg.sender_id,
        receiver_id: msg.receiver_id,
        message_type: msg.message_type,
        content: msg.content,
        status: MessageStatus::Sent,
        client_message_id: msg.client_message_id,
        created_at,
    };
    c.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, receiver_id, message_type, content,
           status, client_message_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message.id,
            message.conversation_id,
            message.seq,
            message.sender_id,
            message.receiver_id,
            message.message_type.as_str(),
            message.content,
            message.status.as_str(),
            message.client_message_id,
            t
        ])
    })
    .map_err(map_err)?;
    bump_view_versions(c, &[&message.sender_id, &message.receiver_id])?;
    Ok(Inserted { message, created: true })
}

pub(super) fn mark_read(c: &Connection, id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
    let (last_seq, read_seq, users): (i64, i64, [String; 2]) = c
        .prepare_cached(
            "SELECT last_seq, CASE WHEN user_a = ?2 THEN read_seq_a ELSE read_seq_b END, user_a, user_b
             FROM conversations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![id, reader], |r| Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?]))).optional()
        })
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    let up = up_to_seq.map_or(last_seq, |u| u.min(last_seq));
    // Everything to me at or below `read_seq` is already read.
    let updated = c
        .prepare_cached(
            "UPDATE messages SET status = 'read'
             WHERE conversation_id = ?1 AND seq > ?3 AND seq <= ?4 AND receiver_id = ?2 AND status <> 'read'",
        )
        .and_then(|mut s| s.execute(params![id, reader, read_seq, up]))
        .map_err(map_err)?;
    let read_seq = read_seq.max(up);
    let unread: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM messages
             WHERE conversation_id = ?1 AND seq > ?3 AND receiver_id = ?2 AND status <> 'read'",
        )
        .and_then(|mut s| s.query_row(params![id, reader, read_seq], |r| r.get(0)))
        .map_err(map_err)?;
    c.prepare_cached(
        "UPDATE conversations SET
           unread_a = CASE WHEN user_a = ?2 THEN ?3 ELSE unread_a END,
           unread_b = CASE WHEN user_b = ?2 THEN ?3 ELSE unread_b END,
           read_seq_a = CASE WHEN user_a = ?2 THEN ?4 ELSE read_seq_a END,
           read_seq_b = CASE WHEN user_b = ?2 THEN ?4 ELSE read_seq_b END
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, reader, unread, read_seq]))
    .map_err(map_err)?;
    // The reader's counts, and the last message's status in both lists.
    bump_view_versions(c, &users)?;
    Ok(ReadReceipt { up_to_seq: up, read_at: now(), unread_count: unread, updated: updated as u64 })
}

pub(super) fn mark_delivered(c: &Connection, id: &str, receiver: &str, up_to_seq: i64) -> StoreResult<DeliveryReceipt> {
    let Some((last_seq, done_seq, users)): Option<(i64, i64, [String; 2])> = c
        .prepare_cached(
            "SELECT last_seq, CASE WHEN user_a = ?2 THEN MAX(read_seq_a, delivered_seq_a)
                                   ELSE MAX(read_seq_b, delivered_seq_b) END, user_a, user_b
             FROM conversations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![id, receiver], |r| Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?]))).optional()
        })
        .map_err(map_err)?
    else {
        return Ok(DeliveryReceipt { up_to_seq: 0, updated: 0 });
    };
    // Never past the newest message: a later one must not count as delivered already.
    let up = up_to_seq.min(last_seq);
    if up <= done_seq {
        return Ok(DeliveryReceipt { up_to_seq: up, updated: 0 });
    }
    let updated = c
        .prepare_cached(
            "UPDATE messages SET status = 'delivered'
             WHERE conversation_id = ?1 AND seq > ?3 AND seq <= ?4 AND receiver_id = ?2 AND status = 'sent'",
        )
        .and_then(|mut s| s.execute(params![id, receiver, done_seq, up]))
        .map_err(map_err)?;
    c.prepare_cached(
        "UPDATE conversations SET
           delivered_seq_a = CASE WHEN user_a = ?2 THEN MAX(delivered_seq_a, ?3) ELSE delivered_seq_a END,
           delivered_seq_b = CASE WHEN user_b = ?2 THEN MAX(delivered_seq_b, ?3) ELSE delivered_seq_b END
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, receiver, up]))
    .map_err(map_err)?;
    if updated > 0 {
        bump_view_versions(c, &users)?;
    }
    Ok(DeliveryReceipt { up_to_seq: up, updated: updated as u64 })
}
