//! Every filter, update, sort and index document the store sends, built by small pure functions
//! so that each one is checked by an exact-BSON unit test below (no server needed).

use bson::{Bson, DateTime, Document, doc, oid::ObjectId};
use mongodb::{IndexModel, options::IndexOptions};

use super::schema::{CONVERSATIONS, MESSAGES, MessageDoc, USERS};
use crate::{
    chat::model::{MessageStatus, Role},
    store::HistoryQuery,
};

/// A `find`: filter, sort, limit (always > 0, so never "no limit"), skip and projection.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FindSpec {
    pub filter: Document,
    pub sort: Document,
    pub limit: i64,
    pub skip: Option<u64>,
    pub projection: Option<Document>,
}

pub(super) fn by_id(id: ObjectId) -> Document {
    doc! { "_id": id }
}

// ---- users --------------------------------------------------------------------------------

pub(super) fn users_by_ids(ids: &[String]) -> Document {
    doc! { "_id": { "$in": ids } }
}

pub(super) fn user_key(id: &str) -> Document {
    doc! { "_id": id }
}

/// Upsert body of a user record (every field replaced, like the SQLite store).
pub(super) fn user_upsert(
    name: &str,
    email: Option<&str>,
    role: Role,
    avatar: Option<&str>,
    now: DateTime,
) -> Document {
    doc! { "$set": { "name": name, "email": email, "role": role.as_str(), "avatar": avatar, "updatedAt": now } }
}

// ---- conversations --------------------------------------------------------------------------

/// The unique key: sorted pair and job (`null` = no job; the unique index treats it as a value).
pub(super) fn conversation_key(pair: &[String; 2], job_id: Option<&str>) -> Document {
    doc! { "userA": &pair[0], "userB": &pair[1], "jobId": job_id }
}

/// Upsert body of `find_or_create_conversation`: the key fields come from the filter's
/// equalities; `_id` is chosen here so the caller can tell "created" from "found".
pub(super) fn conversation_insert(id: ObjectId, pair: &[String; 2], now: DateTime) -> Document {
    doc! {
        "$setOnInsert": {
            "_id": id,
            "participants": [&pair[0], &pair[1]],
            "lastSeq": 0_i64,
            "lastMessage": Bson::Null,
            "unread": [0_i64, 0_i64],
            "createdAt": now,
            "updatedAt": now,
        }
    }
}

/// A user's conversations, after the keyset cursor (updatedAt, _id) when there is one.
pub(super) fn conversations_of(user: &str, after: Option<(DateTime, ObjectId)>) -> Document {
    match after {
        None => doc! { "participants": user },
        Some((t, id)) => doc! {
            "participants": user,
            "$or": [ { "updatedAt": { "$lt": t } }, { "updatedAt": t, "_id": { "$lt": id } } ],
        },
    }
}

/// Most recent activity first, ties by id (the keyset order of [`ListCursor`](crate::store::ListCursor)).
pub(super) fn conversations_order() -> Document {
    doc! { "updatedAt": -1, "_id": -1 }
}

/// Conversations where `user` has something unread (the user's slot of `unread` is > 0).
pub(super) fn unread_of(user: &str) -> Document {
    doc! {
        "participants": user,
        "$or": [
            { "userA": user, "unread.0": { "$gt": 0 } },
            { "userB": user, "unread.1": { "$gt": 0 } },
        ],
    }
}

pub(super) fn unread_projection() -> Document {
    doc! { "_id": 1, "participants": 1, "unread": 1 }
}

/// Compare-and-set guard of a summary update: only at this watermark.
pub(super) fn conversation_at(id: ObjectId, last_seq: i64) -> Document {
    doc! { "_id": id, "lastSeq": last_seq }
}

/// Applies stored message `m` to its conversation's summary. Used with
/// `conversation_at(m.conversationId, m.seq - 1)`, so each message is applied once, in order.
pub(super) fn apply_message(m: &MessageDoc, receiver_slot: Option<usize>) -> Result<Document, bson::ser::Error> {
    let mut update = doc! {
        "$set": { "lastSeq": m.seq, "lastMessage": bson::to_bson(m)? },
        "$max": { "updatedAt": m.created_at },
    };
    if let Some(i) = receiver_slot {
        update.insert("$inc", doc! { format!("unread.{i}"): 1_i64 });
    }
    Ok(update)
}

/// Lowers the reader's count to a fresh recount (never raises it: a concurrent, older recount
/// may only be larger), and marks the embedded last message read when the recount found none
/// of the reader's messages unread up to it.
pub(super) fn set_unread(slot: usize, count: i64, last_message_read: bool) -> Document {
    let mut update = doc! { "$min": { format!("unread.{slot}"): count } };
    if last_message_read {
        update.insert("$set", doc! { "lastMessage.status": MessageStatus::Read.as_str() });
    }
    update
}

/// The embedded last message, if it is one of `receiver`'s still `sent` messages up to `up_to`.
pub(super) fn last_message_deliverable(id: ObjectId, receiver: &str, up_to: i64) -> Document {
    doc! {
        "_id": id,
        "lastMessage.receiverId": receiver,
        "lastMessage.seq": { "$lte": up_to },
        "lastMessage.status": MessageStatus::Sent.as_str(),
    }
}

pub(super) fn last_message_delivered() -> Document {
    doc! { "$set": { "lastMessage.status": MessageStatus::Delivered.as_str() } }
}

// ---- messages --------------------------------------------------------------------------------

/// The dedup look-up. It states the partial filter of `messages_sender_client_id` as well:
/// the planner uses a partial index only for a query that contains its filter, and it does not
/// infer `$type: "string"` from an equality on a string, so without it the look-up would scan
/// every message of the sender through `messages_sender`.
pub(super) fn by_client_id(sender: &str, client_message_id: &str) -> Document {
    doc! { "senderId": sender, "clientMessageId": { "$eq": client_message_id, "$type": "string" } }
}

/// Messages with `seq > after`, oldest first; `limit` + 1 rows are asked for by callers that
/// need `hasMore`.
pub(super) fn messages_after(conversation: ObjectId, after: i64, limit: i64) -> FindSpec {
    FindSpec {
        filter: doc! { "conversationId": conversation, "seq": { "$gt": after } },
        sort: doc! { "seq": 1 },
        limit,
        skip: None,
        projection: None,
    }
}

/// The newest stored message's seq, as `{seq}` only.
pub(super) fn newest_seq(conversation: ObjectId) -> FindSpec {
    FindSpec {
        filter: doc! { "conversationId": conversation },
        sort: doc! { "seq": -1 },
        limit: 1,
        skip: None,
        projection: Some(doc! { "_id": 0, "seq": 1 }),
    }
}

/// A history page, newest first (one extra row tells whether older ones exist).
pub(super) fn history(conversation: ObjectId, q: &HistoryQuery) -> FindSpec {
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
pub(super) fn unread_messages(conversation: ObjectId, reader: &str, up_to: i64) -> Document {
    doc! {
        "conversationId": conversation,
        "receiverId": reader,
        "status": { "$ne": MessageStatus::Read.as_str() },
        "seq": { "$lte": up_to },
    }
}

/// One multi-document `update` command on `collection`, with the store's write concern and a
/// server-side time limit (the driver's `update_many` cannot carry `maxTimeMS`).
pub(super) fn update_many_command(collection: &str, filter: Document, update: Document, max_time_ms: i64) -> Document {
    doc! {
        "update": collection,
        "updates": [ { "q": filter, "u": update, "multi": true } ],
        "ordered": true,
        "writeConcern": { "w": "majority", "j": true, "wtimeout": max_time_ms },
        "maxTimeMS": max_time_ms,
    }
}

pub(super) fn set_status(status: MessageStatus) -> Document {
    doc! { "$set": { "status": status.as_str() } }
}

/// `receiver`'s messages still `sent`, up to `up_to` (never downgrades `read`).
pub(super) fn undelivered_messages(conversation: ObjectId, receiver: &str, up_to: i64) -> Document {
    doc! {
        "conversationId": conversation,
        "receiverId": receiver,
        "status": MessageStatus::Sent.as_str(),
        "seq": { "$lte": up_to },
    }
}

// ---- existing databases ----------------------------------------------------------------------

/// Documents of `collection` (logical name) that this store could not read: written by another
/// service into a collection of the same name. `migrate` refuses to run on top of them.
pub(super) fn foreign_documents(collection: &str) -> Document {
    match collection {
        USERS => doc! { "$or": [
            { "_id": { "$not": { "$type": "string" } } },
            { "name": { "$not": { "$type": "string" } } },
            { "role": { "$nin": [Role::Customer.as_str(), Role::Contractor.as_str(), Role::Admin.as_str()] } },
        ] },
        CONVERSATIONS => doc! { "$or": [
            { "_id": { "$not": { "$type": "objectId" } } },
            { "userA": { "$not": { "$type": "string" } } },
            { "userB": { "$not": { "$type": "string" } } },
            { "participants": { "$exists": false } },
            { "lastSeq": { "$exists": false } },
            { "unread": { "$exists": false } },
        ] },
        _ => doc! { "$or": [
            { "_id": { "$not": { "$type": "objectId" } } },
            { "conversationId": { "$not": { "$type": "objectId" } } },
            { "seq": { "$exists": false } },
            { "senderId": { "$not": { "$type": "string" } } },
            { "status": { "$exists": false } },
        ] },
    }
}

// ---- indexes ---------------------------------------------------------------------------------

/// One index: collection, name, keys, uniqueness and partial filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexSpec {
    pub collection: &'static str,
    pub name: &'static str,
    pub keys: Document,
    pub unique: bool,
    pub partial: Option<Document>,
}

impl IndexSpec {
    pub fn model(&self) -> IndexModel {
        let options = IndexOptions::builder()
            .name(self.name.to_owned())
            .unique(self.unique.then_some(true))
            .partial_filter_expression(self.partial.clone())
            .build();
        IndexModel::builder().keys(self.keys.clone()).options(options).build()
    }
}

/// Every index, by collection. Named, so `createIndexes` is a no-op when they exist.
pub(super) fn indexes() -> Vec<IndexSpec> {
    let spec = |collection, name, keys, unique, partial| IndexSpec { collection, name, keys, unique, partial };
    vec![
        // One conversation per (sorted pair, job): what makes concurrent creation converge.
        spec(CONVERSATIONS, "conversations_pair_job", doc! { "userA": 1, "userB": 1, "jobId": 1 }, true, None),
        // A user's conversations by last activity (list, partners, unread): serves both
        // "by participants" and "by last activity"; the keyset cursor needs `_id` as tiebreak.
        spec(
            CONVERSATIONS,
            "conversations_participants_activity",
            doc! { "participants": 1, "updatedAt": -1, "_id": -1 },
            false,
            None,
        ),
        // The seq allocator: a seq is taken by inserting the message that has it.
        spec(MESSAGES, "messages_conversation_seq", doc! { "conversationId": 1, "seq": 1 }, true, None),
        // Retry dedup; partial so that messages without a clientMessageId never collide.
        spec(
            MESSAGES,
            "messages_sender_client_id",
            doc! { "senderId": 1, "clientMessageId": 1 },
            true,
            Some(doc! { "clientMessageId": { "$type": "string" } }),
        ),
        spec(MESSAGES, "messages_sender", doc! { "senderId": 1 }, false, None),
        spec(MESSAGES, "messages_receiver_status", doc! { "receiverId": 1, "status": 1 }, false, None),
        // mark_read / mark_delivered / unread recount within one conversation.
        spec(
            MESSAGES,
            "messages_conversation_receiver_status_seq",
            doc! { "conversationId": 1, "receiverId": 1, "status": 1, "seq": 1 },
            false,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::MessageType;

    fn oid(n: u8) -> ObjectId {
        let mut b = [0u8; 12];
        b[11] = n;
        ObjectId::from_bytes(b)
    }

    fn pair() -> [String; 2] {
        ["alice".to_owned(), "bob.smith".to_owned()]
    }

    fn message(seq: i64) -> MessageDoc {
        MessageDoc {
            id: oid(9),
            conversation_id: oid(1),
            seq,
            sender_id: "alice".into(),
            receiver_id: "bob.smith".into(),
            message_type: MessageType::Text,
            content: "hi".into(),
            status: MessageStatus::Sent,
            client_message_id: None,
            created_at: DateTime::from_millis(1_000),
        }
    }

    #[test]
    fn id_filter() {
        assert_eq!(by_id(oid(1)), doc! { "_id": oid(1) });
    }

    #[test]
    fn user_documents() {
        assert_eq!(users_by_ids(&["a".into(), "b.c".into()]), doc! { "_id": { "$in": ["a", "b.c"] } });
        assert_eq!(users_by_ids(&[]), doc! { "_id": { "$in": [] } });
        assert_eq!(user_key("u.1"), doc! { "_id": "u.1" });
        let t = DateTime::from_millis(5);
        assert_eq!(
            user_upsert("Ann", Some("a@x"), Role::Contractor, None, t),
            doc! { "$set": {
                "name": "Ann", "email": "a@x", "role": "contractor", "avatar": Bson::Null, "updatedAt": t,
            } }
        );
    }

    #[test]
    fn conversation_key_with_and_without_job() {
        assert_eq!(
            conversation_key(&pair(), Some("j1")),
            doc! { "userA": "alice", "userB": "bob.smith", "jobId": "j1" }
        );
        assert_eq!(
            conversation_key(&pair(), None),
            doc! { "userA": "alice", "userB": "bob.smith", "jobId": Bson::Null }
        );
    }

    #[test]
    fn conversation_insert_sets_everything_but_the_key() {
        let t = DateTime::from_millis(7);
        assert_eq!(
            conversation_insert(oid(3), &pair(), t),
            doc! { "$setOnInsert": {
                "_id": oid(3),
                "participants": ["alice", "bob.smith"],
                "lastSeq": 0_i64,
                "lastMessage": Bson::Null,
                "unread": [0_i64, 0_i64],
                "createdAt": t,
                "updatedAt": t,
            } }
        );
    }

    #[test]
    fn conversation_list_filters_and_order() {
        assert_eq!(conversations_of("u", None), doc! { "participants": "u" });
        let t = DateTime::from_millis(42);
        assert_eq!(
            conversations_of("u", Some((t, oid(4)))),
            doc! {
                "participants": "u",
                "$or": [ { "updatedAt": { "$lt": t } }, { "updatedAt": t, "_id": { "$lt": oid(4) } } ],
            }
        );
        assert_eq!(conversations_order(), doc! { "updatedAt": -1, "_id": -1 });
    }

    #[test]
    fn unread_filter_and_projection() {
        assert_eq!(
            unread_of("u"),
            doc! {
                "participants": "u",
                "$or": [
                    { "userA": "u", "unread.0": { "$gt": 0 } },
                    { "userB": "u", "unread.1": { "$gt": 0 } },
                ],
            }
        );
        assert_eq!(unread_projection(), doc! { "_id": 1, "participants": 1, "unread": 1 });
    }

    #[test]
    fn apply_is_guarded_by_the_previous_seq_and_bumps_the_receiver() {
        assert_eq!(conversation_at(oid(1), 4), doc! { "_id": oid(1), "lastSeq": 4_i64 });
        let m = message(5);
        assert_eq!(
            apply_message(&m, Some(1)).unwrap(),
            doc! {
                "$set": { "lastSeq": 5_i64, "lastMessage": bson::to_bson(&m).unwrap() },
                "$max": { "updatedAt": DateTime::from_millis(1_000) },
                "$inc": { "unread.1": 1_i64 },
            }
        );
        assert_eq!(
            apply_message(&m, None).unwrap(),
            doc! {
                "$set": { "lastSeq": 5_i64, "lastMessage": bson::to_bson(&m).unwrap() },
                "$max": { "updatedAt": DateTime::from_millis(1_000) },
            }
        );
    }

    #[test]
    fn unread_updates() {
        assert_eq!(set_unread(0, 3, false), doc! { "$min": { "unread.0": 3_i64 } });
        assert_eq!(
            set_unread(1, 0, true),
            doc! { "$min": { "unread.1": 0_i64 }, "$set": { "lastMessage.status": "read" } }
        );
    }

    #[test]
    fn last_message_delivery() {
        assert_eq!(
            last_message_deliverable(oid(1), "b", 9),
            doc! {
                "_id": oid(1),
                "lastMessage.receiverId": "b",
                "lastMessage.seq": { "$lte": 9_i64 },
                "lastMessage.status": "sent",
            }
        );
        assert_eq!(last_message_delivered(), doc! { "$set": { "lastMessage.status": "delivered" } });
    }

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
    fn index_documents() {
        let got: Vec<_> = indexes().iter().map(|i| (i.collection, bson::to_document(&i.model()).unwrap())).collect();
        let want = vec![
            (
                "conversations",
                doc! {
                    "key": { "userA": 1, "userB": 1, "jobId": 1 }, "name": "conversations_pair_job", "unique": true,
                },
            ),
            (
                "conversations",
                doc! {
                    "key": { "participants": 1, "updatedAt": -1, "_id": -1 },
                    "name": "conversations_participants_activity",
                },
            ),
            (
                "messages",
                doc! { "key": { "conversationId": 1, "seq": 1 }, "name": "messages_conversation_seq", "unique": true },
            ),
            (
                "messages",
                doc! {
                    "key": { "senderId": 1, "clientMessageId": 1 },
                    "name": "messages_sender_client_id",
                    "unique": true,
                    "partialFilterExpression": { "clientMessageId": { "$type": "string" } },
                },
            ),
            ("messages", doc! { "key": { "senderId": 1 }, "name": "messages_sender" }),
            ("messages", doc! { "key": { "receiverId": 1, "status": 1 }, "name": "messages_receiver_status" }),
            (
                "messages",
                doc! {
                    "key": { "conversationId": 1, "receiverId": 1, "status": 1, "seq": 1 },
                    "name": "messages_conversation_receiver_status_seq",
                },
            ),
        ];
        assert_eq!(got, want);
    }

    // ---- the partial-index rule ---------------------------------------------------------------

    /// The field predicates of a filter: `{f: {$op: v, …}}` as is, `{f: v}` as `{$eq: v}`;
    /// `$and` flattened. Other top-level operators (`$or`) are kept whole under their name.
    fn predicates(filter: &Document) -> Vec<(String, Document)> {
        let mut out = Vec::new();
        for (k, v) in filter {
            match (k.as_str(), v) {
                ("$and", Bson::Array(parts)) => {
                    out.extend(parts.iter().filter_map(Bson::as_document).flat_map(predicates));
                }
                (_, Bson::Document(d)) if d.keys().next().is_some_and(|op| op.starts_with('$')) => {
                    out.push((k.clone(), d.clone()))
                }
                _ => out.push((k.clone(), doc! { "$eq": v.clone() })),
            }
        }
        out
    }

    fn number(b: &Bson) -> Option<f64> {
        match b {
            Bson::Int32(v) => Some(f64::from(*v)),
            Bson::Int64(v) => Some(*v as f64),
            Bson::Double(v) => Some(*v),
            _ => None,
        }
    }

    /// Whether the query's conditions on one field (`q`) imply `op: v`.
    fn implies_one(q: &Document, op: &str, v: &Bson) -> bool {
        if q.get(op) == Some(v) {
            return true;
        }
        let eq = q.get("$eq");
        let at_least = |strict: bool| {
            let Some(bound) = number(v) else { return false };
            let ok = |x: f64, incl: bool| if strict { x > bound || (x == bound && !incl) } else { x >= bound };
            eq.and_then(number).is_some_and(|x| ok(x, true))
                || q.get("$gt").and_then(number).is_some_and(|x| ok(x, false) || x == bound)
                || q.get("$gte").and_then(number).is_some_and(|x| ok(x, true))
        };
        let at_most = |strict: bool| {
            let Some(bound) = number(v) else { return false };
            let ok = |x: f64, incl: bool| if strict { x < bound || (x == bound && !incl) } else { x <= bound };
            eq.and_then(number).is_some_and(|x| ok(x, true))
                || q.get("$lt").and_then(number).is_some_and(|x| ok(x, false) || x == bound)
                || q.get("$lte").and_then(number).is_some_and(|x| ok(x, true))
        };
        match op {
            // An equality on a non-null value, or a `$type`, implies the field exists.
            "$exists" if v == &Bson::Boolean(true) => {
                eq.is_some_and(|e| e != &Bson::Null) || q.contains_key("$type") || q.contains_key("$gt")
            }
            "$gt" => at_least(true),
            "$gte" => at_least(false),
            "$lt" => at_most(true),
            "$lte" => at_most(false),
            // Deliberately no rule for `$type`: the planner has none (an equality on a string
            // does not let it use an index partial on `$type: "string"`).
            _ => false,
        }
    }

    /// The manual's rule for partial indexes: a query can use one only if its conditions
    /// contain the index's filter expression, or a narrower form of it (a tighter range, an
    /// equality inside it). This checker is the conservative part of the planner's logic:
    /// what it accepts, the planner accepts.
    fn implies(query: &Document, filter: &Document) -> bool {
        let q = predicates(query);
        predicates(filter)
            .iter()
            .all(|(field, ops)| ops.iter().all(|(op, v)| q.iter().any(|(f, qo)| f == field && implies_one(qo, op, v))))
    }

    /// Every query, with the index it is written for.
    fn queries_and_their_indexes() -> Vec<(&'static str, &'static str, Document)> {
        let c = oid(1);
        let q = |s: FindSpec| s.filter;
        vec![
            (MESSAGES, "messages_sender_client_id", by_client_id("alice", "m-1")),
            (MESSAGES, "messages_conversation_seq", q(messages_after(c, 3, 10))),
            (MESSAGES, "messages_conversation_seq", q(newest_seq(c))),
            (
                MESSAGES,
                "messages_conversation_seq",
                q(history(c, &HistoryQuery { before_seq: Some(9), skip: 0, limit: 5 })),
            ),
            (
                MESSAGES,
                "messages_conversation_seq",
                q(history(c, &HistoryQuery { before_seq: None, skip: 5, limit: 5 })),
            ),
            (MESSAGES, "messages_conversation_receiver_status_seq", unread_messages(c, "bob", 9)),
            (MESSAGES, "messages_conversation_receiver_status_seq", undelivered_messages(c, "bob", 9)),
            (CONVERSATIONS, "conversations_pair_job", conversation_key(&pair(), Some("j"))),
            (CONVERSATIONS, "conversations_pair_job", conversation_key(&pair(), None)),
            (CONVERSATIONS, "conversations_participants_activity", conversations_of("u", None)),
            (
                CONVERSATIONS,
                "conversations_participants_activity",
                conversations_of("u", Some((DateTime::from_millis(1), c))),
            ),
            (CONVERSATIONS, "conversations_participants_activity", unread_of("u")),
        ]
    }

    #[test]
    fn every_query_can_use_the_index_it_is_written_for() {
        let all = indexes();
        for (collection, name, query) in queries_and_their_indexes() {
            let index = all.iter().find(|i| i.collection == collection && i.name == name).expect(name);
            let first = index.keys.keys().next().unwrap();
            assert!(
                predicates(&query).iter().any(|(f, ops)| f == first && ops.contains_key("$eq")),
                "{name}: the query {query} has no equality on the leading key {first}"
            );
            if let Some(partial) = &index.partial {
                assert!(
                    implies(&query, partial),
                    "{name} is partial on {partial}; the query {query} does not imply it"
                );
            }
        }
    }

    #[test]
    fn every_partial_index_has_its_queries_checked() {
        let checked: Vec<_> = queries_and_their_indexes().into_iter().map(|(_, n, _)| n).collect();
        for i in indexes().iter().filter(|i| i.partial.is_some()) {
            assert!(checked.contains(&i.name), "partial index {} has no query in the table above", i.name);
        }
    }

    /// The rule itself, on the cases that matter, including the one the dedup look-up hit.
    #[test]
    fn the_partial_index_rule() {
        let on_type = doc! { "clientMessageId": { "$type": "string" } };
        assert!(!implies(&doc! { "senderId": "a", "clientMessageId": "m1" }, &on_type), "no $type rule for equality");
        assert!(implies(&doc! { "senderId": "a", "clientMessageId": { "$eq": "m1", "$type": "string" } }, &on_type));
        assert!(implies(&doc! { "$and": [ { "clientMessageId": { "$type": "string" } } ] }, &on_type));
        assert!(!implies(&doc! { "clientMessageId": { "$type": "int" } }, &on_type));
        let rating = doc! { "rating": { "$gt": 5 } };
        assert!(implies(&doc! { "rating": { "$gte": 8 } }, &rating), "the manual's example");
        assert!(implies(&doc! { "rating": 6 }, &rating));
        assert!(!implies(&doc! { "rating": { "$lt": 8 } }, &rating), "the manual's counter-example");
        assert!(!implies(&doc! { "rating": { "$gte": 5 } }, &rating));
        assert!(implies(&doc! { "rating": { "$gt": 5 } }, &rating));
        let exists = doc! { "email": { "$exists": true } };
        assert!(implies(&doc! { "email": "x@y" }, &exists));
        assert!(!implies(&doc! { "email": Bson::Null }, &exists));
        assert!(!implies(&doc! { "name": "x" }, &exists));
    }

    #[test]
    fn foreign_document_filters() {
        assert_eq!(
            foreign_documents(USERS),
            doc! { "$or": [
                { "_id": { "$not": { "$type": "string" } } },
                { "name": { "$not": { "$type": "string" } } },
                { "role": { "$nin": ["customer", "contractor", "admin"] } },
            ] }
        );
        assert!(
            foreign_documents(CONVERSATIONS)
                .get_array("$or")
                .unwrap()
                .contains(&Bson::from(doc! { "lastSeq": { "$exists": false } }))
        );
        assert!(
            foreign_documents(MESSAGES)
                .get_array("$or")
                .unwrap()
                .contains(&Bson::from(doc! { "seq": { "$exists": false } }))
        );
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
