//! Messages: the dedup look-up, history and sync pages, the newest seq, and the receipt
//! updates (sent to the server as one `update` command with its deadline).

use bson::{Document, doc, oid::ObjectId};

use super::FindSpec;
use crate::{chat::model::MessageStatus, store::HistoryQuery};

/// The dedup look-up. It states the partial filter of `messages_sender_client_id` as well:
/// the planner uses a partial index only for a query that contains its filter, and it does not
/// infer `$type: "string"` from an equality on a string, so without it the look-up would scan
/// every message of the sender through `messages_sender`.
pub(crate) fn by_client_id(sender: &str, client_message_id: &str) -> Document {
    doc! { "senderId": sender, "clientMessageId": { "$eq": client_message_id, "$type": "string" } }
}

/// Messages with `seq > after`, oldest first; `limit` + 1 rows are asked for by callers that
/// need `hasMore`.
pub(crate) fn messages_after(conversation: ObjectId, after: i64, limit: i64) -> FindSpec {
    FindSpec {
        filter: doc! { "conversationId": conversation, "seq": { "$gt": after } },
        sort: doc! { "seq": 1 },
        limit,
        skip: None,
        projection: None,
    }
}

/// The newest stored message's seq, as `{seq}` only.
pub(crate) fn newest_seq(conversation: ObjectId) -> FindSpec {
    FindSpec {
        filter: doc! { "conversationId": conversation },
        sort: doc! { "seq": -1 },
        limit: 1,
        skip: None,
        projection: Some(doc! { "_id": 0, "seq": 1 }),
    }
}

/// A history page, newest first (one extra row tells whether older ones exist).
pub(crate) fn history(conversation: ObjectId, q: &HistoryQuery) -> FindSpec {
    let limit = i64::from(q.limit) + 1;
    match q.before_seq {
        Some(before) => FindSpec {
            filter: doc! { "conversationId": conversation, "seq": { "$lt": before } },
            sort: doc! { "seq": -1 },
            limit,
            skip: None,
            projection: None,
        },
        None => FindSpec {
            filter: doc! { "conversationId": conversation },
            sort: doc! { "seq": -1 },
            limit,
            // The server takes a signed 64-bit skip.
            skip: (q.skip > 0).then_some(q.skip.min(i64::MAX as u64)),
            projection: None,
        },
    }
}

/// `reader`'s messages not yet read, up to `up_to` (mark-read target and unread recount).
pub(crate) fn unread_messages(conversation: ObjectId, reader: &str, up_to: i64) -> Document {
    doc! {
        "conversationId": conversation,
        "receiverId": reader,
        "status": { "$ne": MessageStatus::Read.as_str() },
        "seq": { "$lte": up_to },
    }
}

/// One multi-document `update` command on `collection`, with the store's write concern and a
/// server-side time limit (the driver's `update_many` cannot carry `maxTimeMS`).
pub(crate) fn update_many_command(collection: &str, filter: Document, update: Document, max_time_ms: i64) -> Document {
    doc! {
        "update": collection,
        "updates": [ { "q": filter, "u": update, "multi": true } ],
        "ordered": true,
        "writeConcern": { "w": "majority", "j": true, "wtimeout": max_time_ms },
        "maxTimeMS": max_time_ms,
    }
}

pub(crate) fn set_status(status: MessageStatus) -> Document {
    doc! { "$set": { "status": status.as_str() } }
}

/// `receiver`'s messages still `sent`, up to `up_to` (never downgrades `read`).
pub(crate) fn undelivered_messages(conversation: ObjectId, receiver: &str, up_to: i64) -> Document {
    doc! {
        "conversationId": conversation,
        "receiverId": receiver,
        "status": MessageStatus::Sent.as_str(),
        "seq": { "$lte": up_to },
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures::oid, *};

    #[test]
    fn message_filters_and_updates() {
        assert_eq!(
            by_client_id("a", "m1"),
            doc! { "senderId": "a", "clientMessageId": { "$eq": "m1", "$type": "string" } }
        );
        assert_eq!(
            unread_messages(oid(1), "b", 12),
            doc! { "conversationId": oid(1), "receiverId": "b", "status": { "$ne": "read" }, "seq": { "$lte": 12_i64 } }
        );
        assert_eq!(
            undelivered_messages(oid(1), "b", 12),
            doc! { "conversationId": oid(1), "receiverId": "b", "status": "sent", "seq": { "$lte": 12_i64 } }
        );
        assert_eq!(set_status(MessageStatus::Read), doc! { "$set": { "status": "read" } });
        assert_eq!(set_status(MessageStatus::Delivered), doc! { "$set": { "status": "delivered" } });
    }

    #[test]
    fn messages_after_is_oldest_first() {
        assert_eq!(
            messages_after(oid(1), 10, 501),
            FindSpec {
                filter: doc! { "conversationId": oid(1), "seq": { "$gt": 10_i64 } },
                sort: doc! { "seq": 1 },
                limit: 501,
                skip: None,
                projection: None,
            }
        );
    }

    #[test]
    fn newest_seq_reads_one_projected_row() {
        assert_eq!(
            newest_seq(oid(1)),
            FindSpec {
                filter: doc! { "conversationId": oid(1) },
                sort: doc! { "seq": -1 },
                limit: 1,
                skip: None,
                projection: Some(doc! { "_id": 0, "seq": 1 }),
            }
        );
    }

    #[test]
    fn history_before_seq_or_by_page() {
        let before = HistoryQuery { before_seq: Some(30), skip: 100, limit: 50 };
        assert_eq!(
            history(oid(1), &before),
            FindSpec {
                filter: doc! { "conversationId": oid(1), "seq": { "$lt": 30_i64 } },
                sort: doc! { "seq": -1 },
                limit: 51,
                skip: None,
                projection: None,
            }
        );
        let page2 = HistoryQuery { before_seq: None, skip: 50, limit: 50 };
        assert_eq!(
            history(oid(1), &page2),
            FindSpec {
                filter: doc! { "conversationId": oid(1) },
                sort: doc! { "seq": -1 },
                limit: 51,
                skip: Some(50),
                projection: None,
            }
        );
        let first = HistoryQuery { before_seq: None, skip: 0, limit: 0 };
        assert_eq!(history(oid(1), &first).limit, 1, "never 0, which would mean no limit");
        assert_eq!(history(oid(1), &first).skip, None);
        let far = HistoryQuery { before_seq: None, skip: u64::MAX, limit: 1 };
        assert_eq!(history(oid(1), &far).skip, Some(i64::MAX as u64));
    }

    #[test]
    fn update_many_command_carries_the_deadline_and_write_concern() {
        assert_eq!(
            update_many_command("chat_messages", doc! { "a": 1 }, doc! { "$set": { "b": 2 } }, 5000),
            doc! {
                "update": "chat_messages",
                "updates": [ { "q": { "a": 1 }, "u": { "$set": { "b": 2 } }, "multi": true } ],
                "ordered": true,
                "writeConcern": { "w": "majority", "j": true, "wtimeout": 5000_i64 },
                "maxTimeMS": 5000_i64,
            }
        );
    }
}
