//! Users and conversations: keys, upserts, the list with its keyset cursor, unread counts,
//! and the summary updates of the send and receipt protocols (compare-and-set on `lastSeq`).

use bson::{Bson, DateTime, Document, doc, oid::ObjectId};

use crate::{
    chat::model::{MessageStatus, Role},
    store::mongo::schema::MessageDoc,
};

// ---- users --------------------------------------------------------------------------------

pub(crate) fn users_by_ids(ids: &[String]) -> Document {
    doc! { "_id": { "$in": ids } }
}

pub(crate) fn user_key(id: &str) -> Document {
    doc! { "_id": id }
}

/// Upsert body of a user record (every field replaced, like the SQLite store).
pub(crate) fn user_upsert(
    name: &str,
    email: Option<&str>,
    role: Role,
    avatar: Option<&str>,
    now: DateTime,
) -> Document {
    doc! { "$set": { "name": name, "email": email, "role": role.as_str(), "avatar": avatar, "updatedAt": now } }
}

/// Upsert body of a user's view version (`view_versions`, keyed like users by [`user_key`]).
pub(crate) fn view_version_set(v: i64) -> Document {
    doc! { "$set": { "v": v } }
}

// ---- conversations --------------------------------------------------------------------------

/// The unique key: sorted pair and job (`null` = no job; the unique index treats it as a value).
pub(crate) fn conversation_key(pair: &[String; 2], job_id: Option<&str>) -> Document {
    doc! { "userA": &pair[0], "userB": &pair[1], "jobId": job_id }
}

/// Upsert body of `find_or_create_conversation`: the key fields come from the filter's
/// equalities; `_id` is chosen here so the caller can tell "created" from "found".
pub(crate) fn conversation_insert(id: ObjectId, pair: &[String; 2], now: DateTime) -> Document {
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
pub(crate) fn conversations_of(user: &str, after: Option<(DateTime, ObjectId)>) -> Document {
    match after {
        None => doc! { "participants": user },
        Some((t, id)) => doc! {
            "participants": user,
            "$or": [ { "updatedAt": { "$lt": t } }, { "updatedAt": t, "_id": { "$lt": id } } ],
        },
    }
}

/// Most recent activity first, ties by id (the keyset order of [`ListCursor`](crate::store::ListCursor)).
pub(crate) fn conversations_order() -> Document {
    doc! { "updatedAt": -1, "_id": -1 }
}

/// Conversations where `user` has something unread (the user's slot of `unread` is > 0).
pub(crate) fn unread_of(user: &str) -> Document {
    doc! {
        "participants": user,
        "$or": [
            { "userA": user, "unread.0": { "$gt": 0 } },
            { "userB": user, "unread.1": { "$gt": 0 } },
        ],
    }
}

pub(crate) fn unread_projection() -> Document {
    doc! { "_id": 1, "participants": 1, "unread": 1 }
}

/// Compare-and-set guard of a summary update: only at this watermark.
pub(crate) fn conversation_at(id: ObjectId, last_seq: i64) -> Document {
    doc! { "_id": id, "lastSeq": last_seq }
}

/// Applies stored message `m` to its conversation's summary. Used with
/// `conversation_at(m.conversationId, m.seq - 1)`, so each message is applied once, in order.
pub(crate) fn apply_message(m: &MessageDoc, receiver_slot: Option<usize>) -> Result<Document, bson::ser::Error> {
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
pub(crate) fn set_unread(slot: usize, count: i64, last_message_read: bool) -> Document {
    let mut update = doc! { "$min": { format!("unread.{slot}"): count } };
    if last_message_read {
        update.insert("$set", doc! { "lastMessage.status": MessageStatus::Read.as_str() });
    }
    update
}

/// The embedded last message, if it is one of `receiver`'s still `sent` messages up to `up_to`.
pub(crate) fn last_message_deliverable(id: ObjectId, receiver: &str, up_to: i64) -> Document {
    doc! {
        "_id": id,
        "lastMessage.receiverId": receiver,
        "lastMessage.seq": { "$lte": up_to },
        "lastMessage.status": MessageStatus::Sent.as_str(),
    }
}

pub(crate) fn last_message_delivered() -> Document {
    doc! { "$set": { "lastMessage.status": MessageStatus::Delivered.as_str() } }
}

#[cfg(test)]
mod tests {
    use super::{
        super::fixtures::{oid, pair},
        *,
    };
    use crate::chat::model::MessageType;

    #[test]
    fn a_view_version_is_one_field_set_by_upsert() {
        assert_eq!(view_version_set(7), doc! { "$set": { "v": 7_i64 } });
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
}
