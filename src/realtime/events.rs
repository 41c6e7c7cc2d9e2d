//! Every client → server Socket.IO event name and payload, defined once. The server → client
//! events are `crate::coord::fanout::ServerEvent`.

use serde::Deserialize;

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
/// Every client → server event.
pub const ALL: &[&str] = &[
    JOIN_CONVERSATION,
    LEAVE_CONVERSATION,
    SEND_MESSAGE,
    TYPING_START,
    TYPING_STOP,
    MARK_AS_READ,
    MARK_AS_DELIVERED,
    GET_ONLINE_STATUS,
    SYNC,
];

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
