//! The single-document (or single-command) operations of [`flow`] on the driver, and the
//! helpers every call uses. Each operation carries the store deadline to the server:
//! `maxTimeMS` on finds, counts, `distinct`, `findAndModify` and `update`; `wtimeout` through
//! the enforced write concern on every write. `insert` and single-document `update`s stay the
//! driver's retryable writes (it exposes no `maxTimeMS` for them): they are index-keyed
//! single-document writes whose only open-ended wait is replication, which `wtimeout` bounds.
//! Multi-document updates are not retryable writes anyway, so they go out as one `update`
//! command with `maxTimeMS` ([`MongoStore::update_many`]).

use std::time::Duration;

use async_trait::async_trait;
use bson::{Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{
    Collection,
    action::Find,
    error::{Error, ErrorKind, WriteConcernError, WriteError, WriteFailure},
    options::ReturnDocument,
};
use serde::de::DeserializeOwned;

use super::{
    MongoStore,
    errors::{is_duplicate_key, map_err},
    flow::Ops,
    query::{self, FindSpec},
    schema::{ConversationDoc, MessageDoc, SeqRow},
};
use crate::{
    chat::model::MessageStatus,
    store::{StoreError, StoreResult},
};

/// A duration as the server's milliseconds (at least 1: `maxTimeMS: 0` means no limit).
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

pub(super) async fn find<T>(coll: &Collection<T>, spec: FindSpec, deadline: Duration) -> StoreResult<Vec<T>>
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
    collect(find, deadline).await
}

/// Runs a prepared find with the store deadline as its `maxTimeMS` and reads the whole cursor;
/// a failure of either step is classified once, by [`map_err`].
pub(super) async fn collect<T>(find: Find<'_, T>, deadline: Duration) -> StoreResult<Vec<T>>
where
    T: DeserializeOwned + Send + Sync,
{
    find.max_time(deadline).await.map_err(map_err)?.try_collect().await.map_err(map_err)
}

impl MongoStore {
    /// `updateMany` on `messages` as one `update` command with `maxTimeMS` and the enforced
    /// write concern; the number of documents changed.
    async fn update_many(&self, filter: Document, update: Document) -> StoreResult<u64> {
        let ms = millis(self.deadline);
        let command = query::update_many_command(self.messages.name(), filter, update, ms);
        let reply = self.db.run_command(command).await.map_err(map_err)?;
        update_reply(&reply)
    }
}

/// The outcome of an `update` command reply: `run_command` hands back `ok: 1` replies as they
/// are, with write errors and write concern errors inside, so they are turned into the
/// driver's errors here and classified like any other.
pub(super) fn update_reply(reply: &Document) -> StoreResult<u64> {
    let decode = |e: bson::de::Error| StoreError::Internal(format!("unreadable update reply: {e}"));
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(first) = errors.first()
    {
        let w: WriteError = bson::from_bson(first.clone()).map_err(decode)?;
        return Err(map_err(Error::from(ErrorKind::Write(WriteFailure::WriteError(w)))));
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        let w: WriteConcernError = bson::from_document(wce.clone()).map_err(decode)?;
        return Err(map_err(Error::from(ErrorKind::Write(WriteFailure::WriteConcernError(w)))));
    }
    let n = |k: &str| match reply.get(k) {
        Some(bson::Bson::Int32(v)) => u64::try_from(*v).unwrap_or(0),
        Some(bson::Bson::Int64(v)) => u64::try_from(*v).unwrap_or(0),
        Some(bson::Bson::Double(v)) if *v >= 0.0 => *v as u64,
        _ => 0,
    };
    Ok(n("nModified"))
}

/// The single-document steps of [`flow`], on the driver.
#[async_trait]
impl Ops for MongoStore {
    async fn conversation(&self, id: ObjectId) -> StoreResult<Option<ConversationDoc>> {
        self.conversation_by_key(query::by_id(id)).await
    }

    async fn message_by_client_id(&self, sender: &str, client_message_id: &str) -> StoreResult<Option<MessageDoc>> {
        self.messages
            .find_one(query::by_client_id(sender, client_message_id))
            .max_time(self.deadline)
            .await
            .map_err(map_err)
    }

    async fn try_insert(&self, m: &MessageDoc) -> StoreResult<bool> {
        match self.messages.insert_one(m).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn newest_seq(&self, conversation: ObjectId) -> StoreResult<i64> {
        let rows =
            find(&self.messages.clone_with_type::<SeqRow>(), query::newest_seq(conversation), self.deadline).await?;
        Ok(rows.first().map_or(0, |r| r.seq))
    }

    async fn stored_after(&self, conversation: ObjectId, after: i64, limit: i64) -> StoreResult<Vec<MessageDoc>> {
        find(&self.messages, query::messages_after(conversation, after, limit), self.deadline).await
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
            .max_time(self.deadline)
            .await
            .map_err(map_err)
    }

    async fn mark_messages_read(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<u64> {
        self.update_many(query::unread_messages(conversation, reader, up_to), query::set_status(MessageStatus::Read))
            .await
    }

    async fn count_unread(&self, conversation: ObjectId, reader: &str, up_to: i64) -> StoreResult<i64> {
        self.messages
            .count_documents(query::unread_messages(conversation, reader, up_to))
            .max_time(self.deadline)
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
            .max_time(self.deadline)
            .await
            .map_err(map_err)
    }

    async fn mark_messages_delivered(&self, conversation: ObjectId, receiver: &str, up_to: i64) -> StoreResult<u64> {
        self.update_many(
            query::undelivered_messages(conversation, receiver, up_to),
            query::set_status(MessageStatus::Delivered),
        )
        .await
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
    use super::*;

    #[test]
    fn update_replies_count_modified_documents() {
        assert_eq!(update_reply(&doc! { "n": 3, "nModified": 2, "ok": 1.0 }).unwrap(), 2);
        assert_eq!(update_reply(&doc! { "n": 0_i64, "nModified": 0_i64, "ok": 1 }).unwrap(), 0);
    }

    #[test]
    fn update_replies_with_errors_inside_are_errors() {
        let wce = doc! { "n": 1, "nModified": 1, "ok": 1,
        "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out" } };
        assert!(matches!(update_reply(&wce), Err(StoreError::Unavailable(m)) if m.contains("replication")));
        let we = doc! { "n": 0, "nModified": 0, "ok": 1,
        "writeErrors": [{ "index": 0, "code": 50, "codeName": "MaxTimeMSExpired", "errmsg": "operation exceeded time limit" }] };
        assert!(matches!(update_reply(&we), Err(StoreError::Unavailable(_))));
        let bad = doc! { "ok": 1, "writeErrors": [{ "index": 0, "code": 2, "errmsg": "bad" }] };
        assert!(matches!(update_reply(&bad), Err(StoreError::Internal(_))));
    }

    #[test]
    fn millis_never_means_no_limit() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(2500)), 2500);
    }
}
