//! Every Socket.IO event name and payload, defined once (DESIGN §6).

use serde::{Deserialize, Serialize};

use crate::chat::model::Message;

// client → server
pub const JOIN_CONVERSATION: &str = "join_conversation";
pub const LEAVE_CONVERSATION: &str = "leave_conversation";
pub const SEND_MESSAGE: &str = "send_message";
pub const TYPING_START: &str = "typing_start";
pub const TYPING_STOP: &str = "typing_stop";
pub const MARK_AS_READ: &str = "mark_as_read";
pub const MARK_AS_DELIVERED: &str = "mark_as_delivered";
pub const GET_ONLINE_STATUS: &str = "get_online_status";
pub const SYNC: &str = "sync";

// server → client
pub const MESSAGE_DELIVERED: &str = "message_delivered";
pub const NEW_MESSAGE: &str = "new_message";
pub const USER_TYPING: &str = "user_typing";
pub const MESSAGES_READ: &str = "messages_read";
pub const MESSAGES_DELIVERED: &str = "messages_delivered";
pub const USER_STATUS: &str = "user_status";
pub const ERROR: &str = "error";

/// Room of every socket of a user, on every node.
pub fn user_room(user: &str) -> String {
    format!("u:{user}")
}

/// Room of one user's sockets that joined a conversation (typing goes only to the other side).
pub fn conversation_room(conversation: &str, user: &str) -> String {
    format!("c:{conversation}:{user}")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationRef {
    pub conversation_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    pub conversation_id: String,
    pub content: String,
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub client_message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkAsRead {
    pub conversation_id: String,
    #[serde(default)]
    pub up_to_seq: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkAsDelivered {
    pub conversation_id: String,
    pub up_to_seq: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetOnlineStatus {
    pub user_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    pub conversations: Vec<SyncItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncItem {
    pub conversation_id: String,
    #[serde(default)]
    pub after_seq: i64,
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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesRead {
    pub conversation_id: String,
    pub reader_id: String,
    pub up_to_seq: i64,
    pub read_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesDelivered<'a> {
    pub conversation_id: &'a str,
    pub up_to_seq: i64,
}

#[derive(Debug, Serialize)]
pub struct EventError<'a> {
    pub code: &'a str,
    pub message: String,
    pub event: &'a str,
}
