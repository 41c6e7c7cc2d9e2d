//! The stored document shapes (typed `Collection<T>`s) and their mapping to domain records.
//!
//! Ids: conversations and messages have real `ObjectId` `_id`s (the domain's 24-hex strings,
//! from [`crate::chat::model::new_id`] or the server); users keep the string id from the token.
//! Times are BSON datetimes (milliseconds), converted to and from chrono.

use bson::{DateTime, oid::ObjectId};
use serde::{Deserialize, Serialize};

use crate::{
    chat::model::{Conversation, Message, MessageStatus, MessageType, Timestamp},
    store::NewMessage,
};

pub(super) const USERS: &str = "users";
pub(super) const CONVERSATIONS: &str = "conversations";
pub(super) const MESSAGES: &str = "messages";
/// `{ _id: <user id string>, v: <i64> }`: a user's view version (`crate::store::ViewVersion`).
pub(super) const VIEW_VERSIONS: &str = "view_versions";

/// A domain id as an `ObjectId`; `None` for anything that is not 24 hex digits (never panics).
pub(super) fn parse_id(s: &str) -> Option<ObjectId> {
    ObjectId::parse_str(s).ok()
}

pub(super) fn to_bson_time(t: &Timestamp) -> DateTime {
    DateTime::from_chrono(*t)
}

/// A document of `messages`, also embedded as a conversation's `lastMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub conversation_id: ObjectId,
    pub seq: i64,
    pub sender_id: String,
    pub receiver_id: String,
    pub message_type: MessageType,
    pub content: String,
    pub status: MessageStatus,
    /// `null` when the client sent none: the unique index is partial on strings only.
    #[serde(default)]
    pub client_message_id: Option<String>,
    pub created_at: DateTime,
}

impl MessageDoc {
    /// A new message of `conversation`, not yet given its `seq`.
    pub fn new(conversation: ObjectId, msg: NewMessage, created_at: &Timestamp) -> Self {
        Self {
            id: ObjectId::new(),
            conversation_id: conversation,
            seq: 0,
            sender_id: msg.sender_id,
            receiver_id: msg.receiver_id,
            message_type: msg.message_type,
            content: msg.content,
            status: MessageStatus::Sent,
            client_message_id: msg.client_message_id,
            created_at: to_bson_time(created_at),
        }
    }

    pub fn into_domain(self) -> Message {
        Message {
            id: self.id.to_hex(),
            conversation_id: self.conversation_id.to_hex(),
            seq: self.seq,
            sender_id: self.sender_id,
            receiver_id: self.receiver_id,
            message_type: self.message_type,
            content: self.content,
            status: self.status,
            client_message_id: self.client_message_id,
            created_at: self.created_at.to_chrono(),
        }
    }
}

/// A document of `conversations`.
///
/// `participants` is the sorted pair (queried through a multikey index); `userA`/`userB` repeat
/// it as scalars because a unique index over an array is enforced per element, which would
/// allow one conversation per *user* and job instead of one per *pair* and job. `unread` is
/// indexed like `participants` (user ids may contain `.`, so they never appear in field paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConversationDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub participants: [String; 2],
    pub user_a: String,
    pub user_b: String,
    #[serde(default)]
    pub job_id: Option<String>,
    /// Seq of the newest message applied to this summary (see the module docs: the watermark).
    pub last_seq: i64,
    #[serde(default)]
    pub last_message: Option<MessageDoc>,
    pub unread: [i64; 2],
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl ConversationDoc {
    /// Position of `user` in `participants` (and so in `unread`).
    pub fn participant_index(&self, user: &str) -> Option<usize> {
        self.participants.iter().position(|p| p == user)
    }

    pub fn into_domain(self) -> Conversation {
        Conversation {
            id: self.id.to_hex(),
            participants: self.participants,
            job_id: self.job_id,
            last_message: self.last_message.map(MessageDoc::into_domain),
            last_seq: self.last_seq,
            unread: self.unread,
            created_at: self.created_at.to_chrono(),
            updated_at: self.updated_at.to_chrono(),
        }
    }
}

/// The projection `unread_counts` reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UnreadRow {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub participants: [String; 2],
    pub unread: [i64; 2],
}

/// The projection `newest_seq` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) struct SeqRow {
    pub seq: i64,
}

#[cfg(test)]
mod tests {
    use bson::{Bson, doc};

    use super::*;
    use crate::chat::model::from_millis;

    fn sample_message() -> MessageDoc {
        MessageDoc {
            id: ObjectId::parse_str("65a000000000000000000001").unwrap(),
            conversation_id: ObjectId::parse_str("65a0000000000000000000c1").unwrap(),
            seq: 7,
            sender_id: "alice".into(),
            receiver_id: "bob.smith".into(),
            message_type: MessageType::Image,
            content: "<b>hi</b>".into(),
            status: MessageStatus::Delivered,
            client_message_id: Some("m-1".into()),
            created_at: DateTime::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn ids_parse_only_24_hex_digits() {
        assert_eq!(parse_id("65a000000000000000000001").map(|o| o.to_hex()), Some("65a000000000000000000001".into()));
        assert_eq!(parse_id("65A00000000000000000000F").map(|o| o.to_hex()), Some("65a00000000000000000000f".into()));
        for bad in [
            "",
            "abc",
            "65a00000000000000000000",
            "65a0000000000000000000011",
            "zza000000000000000000001",
            "65a00000000000000000000\u{e9}",
            "éééééééééééé",
            " 65a000000000000000000001",
            "0x65a0000000000000000001",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn message_document_has_the_stored_shape() {
        let d = bson::to_document(&sample_message()).unwrap();
        assert_eq!(
            d,
            doc! {
                "_id": ObjectId::parse_str("65a000000000000000000001").unwrap(),
                "conversationId": ObjectId::parse_str("65a0000000000000000000c1").unwrap(),
                "seq": 7_i64,
                "senderId": "alice",
                "receiverId": "bob.smith",
                "messageType": "image",
                "content": "<b>hi</b>",
                "status": "delivered",
                "clientMessageId": "m-1",
                "createdAt": DateTime::from_millis(1_700_000_000_123),
            }
        );
        let back: MessageDoc = bson::from_document(d).unwrap();
        assert_eq!(back, sample_message());
    }

    #[test]
    fn message_without_client_id_stores_null_and_reads_missing() {
        let mut m = sample_message();
        m.client_message_id = None;
        let mut d = bson::to_document(&m).unwrap();
        assert_eq!(d.get("clientMessageId"), Some(&Bson::Null));
        d.remove("clientMessageId");
        assert_eq!(bson::from_document::<MessageDoc>(d).unwrap(), m);
    }

    #[test]
    fn message_maps_to_the_domain_with_hex_ids_and_millis() {
        let m = sample_message().into_domain();
        assert_eq!(m.id, "65a000000000000000000001");
        assert_eq!(m.conversation_id, "65a0000000000000000000c1");
        assert_eq!(m.created_at, from_millis(1_700_000_000_123));
        assert_eq!(m.status, MessageStatus::Delivered);
        assert_eq!(m.client_message_id.as_deref(), Some("m-1"));
    }

    #[test]
    fn new_message_starts_sent_without_seq() {
        let conv = ObjectId::new();
        let t = from_millis(1_700_000_000_999);
        let m = MessageDoc::new(
            conv,
            NewMessage {
                conversation_id: conv.to_hex(),
                sender_id: "a".into(),
                receiver_id: "b".into(),
                message_type: MessageType::Text,
                content: "x".into(),
                client_message_id: None,
            },
            &t,
        );
        assert_eq!((m.seq, m.status, m.conversation_id), (0, MessageStatus::Sent, conv));
        assert_eq!(m.created_at.to_chrono(), t);
    }

    #[test]
    fn conversation_reads_what_the_server_returns() {
        // As written by the upsert and `$inc`s: int32 counters, a null job, an embedded message.
        let d = doc! {
            "_id": ObjectId::parse_str("65a0000000000000000000c1").unwrap(),
            "userA": "alice",
            "userB": "bob.smith",
            "jobId": Bson::Null,
            "participants": ["alice", "bob.smith"],
            "lastSeq": 7_i32,
            "lastMessage": bson::to_bson(&sample_message()).unwrap(),
            "unread": [0_i32, 3_i64],
            "createdAt": DateTime::from_millis(1_700_000_000_000),
            "updatedAt": DateTime::from_millis(1_700_000_000_123),
        };
        let c: ConversationDoc = bson::from_document(d).unwrap();
        assert_eq!(c.participant_index("bob.smith"), Some(1));
        assert_eq!(c.participant_index("carol"), None);
        let c = c.into_domain();
        assert_eq!(c.id, "65a0000000000000000000c1");
        assert_eq!(c.participants, ["alice".to_owned(), "bob.smith".to_owned()]);
        assert_eq!(c.job_id, None);
        assert_eq!(c.last_seq, 7);
        assert_eq!(c.unread, [0, 3]);
        assert_eq!(c.unread_of("bob.smith"), 3);
        assert_eq!(c.last_message.unwrap().seq, 7);
        assert_eq!(c.updated_at, from_millis(1_700_000_000_123));
    }

    #[test]
    fn conversation_round_trips_and_rejects_a_broken_pair() {
        let c = ConversationDoc {
            id: ObjectId::new(),
            participants: ["a".into(), "b".into()],
            user_a: "a".into(),
            user_b: "b".into(),
            job_id: Some("job-1".into()),
            last_seq: 0,
            last_message: None,
            unread: [0, 0],
            created_at: DateTime::from_millis(1),
            updated_at: DateTime::from_millis(2),
        };
        let mut d = bson::to_document(&c).unwrap();
        assert_eq!(d.get_array("participants").unwrap(), &vec![Bson::from("a"), Bson::from("b")]);
        assert_eq!(d.get("lastMessage"), Some(&Bson::Null));
        assert_eq!(bson::from_document::<ConversationDoc>(d.clone()).unwrap(), c);
        d.insert("participants", vec!["a"]);
        assert!(bson::from_document::<ConversationDoc>(d).is_err());
    }
}
