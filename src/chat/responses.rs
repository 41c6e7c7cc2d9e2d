//! Typed answers of the chat operations, shared by REST (`data` of the envelope) and Socket.IO
//! (`data` of the ack): one struct per body, field names as on the wire (camelCase).

use serde::{Deserialize, Serialize};

use crate::{
    chat::model::{ConversationView, Message},
    coord::UserStatus,
};

/// `send_message` ack and `POST …/messages` data: `{message}`.
#[derive(Debug, Serialize)]
pub struct MessageBody<'a> {
    pub message: &'a Message,
}

/// `join_conversation` / `leave_conversation` ack: `{conversationId}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationAck {
    pub conversation_id: String,
}

/// `typing_start` / `typing_stop` ack: `{conversationId, isTyping}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingAck {
    pub conversation_id: String,
    pub is_typing: bool,
}

/// `mark_as_delivered` ack: `{conversationId, upToSeq, updated}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredAck {
    pub conversation_id: String,
    pub up_to_seq: i64,
    pub updated: u64,
}

/// `get_online_status` ack and `GET /api/chat/users/status` data: `{statuses}`.
#[derive(Debug, Serialize)]
pub struct Statuses {
    pub statuses: Vec<UserStatus>,
}

/// `sync` ack: `{conversations}`.
#[derive(Debug, Serialize)]
pub struct SyncBody {
    pub conversations: Vec<SyncedConversation>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreadSummary {
    pub total: i64,
    pub conversations: Vec<UnreadItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreadItem {
    pub conversation_id: String,
    pub unread_count: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<ConversationView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedConversation {
    pub conversation_id: String,
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// `mark_as_read` ack and `POST …/read` data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub conversation_id: String,
    pub up_to_seq: i64,
    pub read_at: String,
    pub unread_count: i64,
}
