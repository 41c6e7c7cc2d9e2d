//! Every server → client Socket.IO event of the contract, with its payload. Field
//! names are the wire names (camelCase); [`ServerEvent::name`] is the event name.

use serde::Serialize;

use crate::{chat::model::Message, coord::UserStatus};

/// A server → client event; serializes as its payload alone.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ServerEvent<'a> {
    /// `new_message` to every socket of both participants.
    NewMessage(NewMessage<'a>),
    /// `message_delivered` to the socket that sent the message.
    MessageDelivered(MessageDelivered<'a>),
    /// `user_typing` to the other participant's sockets that joined the conversation.
    UserTyping(UserTyping<'a>),
    /// `messages_read` to every socket of both participants.
    MessagesRead(MessagesRead<'a>),
    /// `messages_delivered` to the sender's sockets.
    MessagesDelivered(MessagesDelivered<'a>),
    /// `user_status` to everyone who shares a conversation with the user.
    UserStatus(&'a UserStatus),
    /// `error` to a socket whose failed event had no ack callback.
    Error(EventError<'a>),
    /// `session_expired` to a socket whose token ran out (its transport is closed next).
    SessionExpired(SessionExpired),
}

impl ServerEvent<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Self::NewMessage(_) => "new_message",
            Self::MessageDelivered(_) => "message_delivered",
            Self::UserTyping(_) => "user_typing",
            Self::MessagesRead(_) => "messages_read",
            Self::MessagesDelivered(_) => "messages_delivered",
            Self::UserStatus(_) => "user_status",
            Self::Error(_) => "error",
            Self::SessionExpired(_) => "session_expired",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewMessage<'a> {
    pub message: &'a Message,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDelivered<'a> {
    pub client_message_id: &'a Option<String>,
    pub message: &'a Message,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserTyping<'a> {
    pub conversation_id: &'a str,
    pub user_id: &'a str,
    pub is_typing: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesRead<'a> {
    pub conversation_id: &'a str,
    pub reader_id: &'a str,
    pub up_to_seq: i64,
    pub read_at: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesDelivered<'a> {
    pub conversation_id: &'a str,
    pub up_to_seq: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionExpired {
    /// Always `token_expired` for now.
    pub reason: &'static str,
    /// The token's `exp`, RFC 3339.
    pub expired_at: String,
}

#[derive(Debug, Serialize)]
pub struct EventError<'a> {
    pub code: &'a str,
    pub message: String,
    pub event: &'a str,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_keep_their_wire_names() {
        let e = ServerEvent::UserTyping(UserTyping { conversation_id: "c", user_id: "u", is_typing: true });
        assert_eq!(e.name(), "user_typing");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({ "conversationId": "c", "userId": "u", "isTyping": true })
        );
        let e = ServerEvent::MessagesRead(MessagesRead {
            conversation_id: "c",
            reader_id: "r",
            up_to_seq: 3,
            read_at: "t",
        });
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({ "conversationId": "c", "readerId": "r", "upToSeq": 3, "readAt": "t" })
        );
        let e = ServerEvent::MessagesDelivered(MessagesDelivered { conversation_id: "c", up_to_seq: 2 });
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({ "conversationId": "c", "upToSeq": 2 }));
        let e = ServerEvent::Error(EventError { code: "validation", message: "m".into(), event: "x" });
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({ "code": "validation", "message": "m", "event": "x" }));
        let e = ServerEvent::SessionExpired(SessionExpired { reason: "token_expired", expired_at: "t".into() });
        assert_eq!(e.name(), "session_expired");
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({ "reason": "token_expired", "expiredAt": "t" }));
    }
}
