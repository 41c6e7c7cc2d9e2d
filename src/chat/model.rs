//! Domain records and their JSON shapes (field names follow the existing JobSphere clients,
//! the contract). Times are UTC, truncated to milliseconds so that every store round-trips them.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};

pub type Timestamp = DateTime<Utc>;

/// Now, truncated to milliseconds.
pub fn now() -> Timestamp {
    from_millis(Utc::now().timestamp_millis())
}

pub fn from_millis(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub fn rfc3339(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// serde helper: RFC 3339 UTC with milliseconds.
pub mod ts_format {
    use super::*;
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Contractor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Contractor => "contractor",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "contractor" => Some(Role::Contractor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub avatar: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Text,
    Image,
    File,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
            Self::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "image" => Some(Self::Image),
            "file" => Some(Self::File),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Sent,
    Delivered,
    Read,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored message. Serialized with both `timestamp` and `createdAt` (equal), as clients expect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(rename = "_id")]
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub receiver_id: String,
    pub message_type: MessageType,
    pub content: String,
    pub status: MessageStatus,
    pub client_message_id: Option<String>,
    #[serde(with = "ts_format")]
    pub created_at: Timestamp,
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let created = rfc3339(&self.created_at);
        let mut st = s.serialize_struct("Message", 11)?;
        st.serialize_field("_id", &self.id)?;
        st.serialize_field("conversationId", &self.conversation_id)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("senderId", &self.sender_id)?;
        st.serialize_field("receiverId", &self.receiver_id)?;
        st.serialize_field("messageType", &self.message_type)?;
        st.serialize_field("content", &self.content)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("clientMessageId", &self.client_message_id)?;
        st.serialize_field("timestamp", &created)?;
        st.serialize_field("createdAt", &created)?;
        st.end()
    }
}

/// A stored conversation between exactly two users (sorted ids), optionally about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub participants: [String; 2],
    pub job_id: Option<String>,
    pub last_message: Option<Message>,
    pub last_seq: i64,
    /// Unread counts of `participants[0]` and `participants[1]`.
    pub unread: [i64; 2],
    #[serde(with = "ts_format")]
    pub created_at: Timestamp,
    #[serde(with = "ts_format")]
    pub updated_at: Timestamp,
}

impl Conversation {
    pub fn has_participant(&self, user: &str) -> bool {
        self.participants.iter().any(|p| p == user)
    }

    /// The other participant, for a user that is one.
    pub fn other(&self, user: &str) -> &str {
        if self.participants[0] == user { &self.participants[1] } else { &self.participants[0] }
    }

    pub fn unread_of(&self, user: &str) -> i64 {
        if self.participants[0] == user { self.unread[0] } else { self.unread[1] }
    }
}

/// A participant as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParticipantView {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub avatar: Option<String>,
    pub role: Option<Role>,
    pub online: bool,
}

/// A conversation as shown to one user: participants as user objects, the caller's unread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    #[serde(rename = "_id")]
    pub id: String,
    pub participants: Vec<ParticipantView>,
    pub job_id: Option<String>,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    #[serde(with = "ts_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "ts_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A new id in the ObjectId format: the same shape in every store.
pub fn new_id() -> String {
    bson::oid::ObjectId::new().to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_json_has_both_timestamps_in_millis() {
        let m = Message {
            id: new_id(),
            conversation_id: new_id(),
            seq: 1,
            sender_id: "a".into(),
            receiver_id: "b".into(),
            message_type: MessageType::Text,
            content: "<b>hi</b>".into(),
            status: MessageStatus::Sent,
            client_message_id: None,
            created_at: from_millis(1_700_000_000_123),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["createdAt"], v["timestamp"]);
        assert_eq!(v["clientMessageId"], serde_json::Value::Null);
        assert_eq!(v["content"], "<b>hi</b>");
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
