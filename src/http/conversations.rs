//! Conversation routes: list, create/find, history, send, read.

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, Caller, OptionalJson};
use crate::{
    chat::{
        responses::MessageBody,
        service::{Origin, SendInput},
        validate,
    },
    error::{ApiError, success},
    state::AppState,
    store::HistoryQuery,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/conversations", get(list_conversations).post(create_conversation))
        .route("/api/chat/conversations/{id}/messages", get(list_messages).post(send_message))
        .route("/api/chat/conversations/{id}/read", post(mark_read))
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

fn limit(v: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", format!("must be between 1 and {max}"))),
    }
}

/// GET /api/chat/conversations?limit=20&cursor=
async fn list_conversations(
    State(st): State<AppState>,
    Caller(me): Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let page = st.chat.list_conversations(&me, limit(p.limit, 20, 100)?, p.cursor.as_deref()).await?;
    Ok(success(StatusCode::OK, "conversations", page))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    participant_id: String,
    #[serde(default)]
    job_id: Option<String>,
}

/// POST /api/chat/conversations {participantId, jobId?}: 201 created, 200 existing.
async fn create_conversation(
    State(st): State<AppState>,
    Caller(me): Caller,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (view, created) = st.chat.create_conversation(&me, &b.participant_id, b.job_id.as_deref()).await?;
    Ok(if created {
        success(StatusCode::CREATED, "conversation created", view)
    } else {
        success(StatusCode::OK, "conversation exists", view)
    })
}

#[derive(Deserialize)]
struct HistoryParams {
    limit: Option<u32>,
    before: Option<i64>,
    page: Option<u64>,
}

/// GET /api/chat/conversations/:id/messages?limit=50&before=SEQ (or page=N)
async fn list_messages(
    State(st): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    validate::object_id("conversationId", &id)?;
    let limit = limit(p.limit, 50, 100)?;
    if p.before.is_some_and(|b| b < 1) {
        return Err(ApiError::validation("before", "must be a positive seq"));
    }
    let skip = match p.page {
        None => 0,
        Some(0) => return Err(ApiError::validation("page", "must be 1 or more")),
        Some(n) => (n - 1).saturating_mul(u64::from(limit)),
    };
    let page = st.chat.history(&me, &id, HistoryQuery { before_seq: p.before, skip, limit }).await?;
    Ok(success(StatusCode::OK, "messages", page))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendBody {
    content: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    client_message_id: Option<String>,
}

/// POST /api/chat/conversations/:id/messages: same effects and events as `send_message`.
async fn send_message(
    State(st): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SendBody>,
) -> Result<Response, ApiError> {
    let input = SendInput {
        conversation_id: id,
        content: b.content,
        message_type: b.message_type,
        client_message_id: b.client_message_id,
    };
    let sent = st.chat.send_message(&me, input, Origin::Rest).await?;
    let status = if sent.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(success(status, "message sent", MessageBody { message: &sent.message }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReadBody {
    #[serde(default)]
    up_to_seq: Option<i64>,
}

/// POST /api/chat/conversations/:id/read {upToSeq?}
async fn mark_read(
    State(st): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ReadBody>,
) -> Result<Response, ApiError> {
    // The body is optional: none means "everything".
    let up_to = body.and_then(|b| b.up_to_seq);
    let r = st.chat.mark_read(&me, &id, up_to).await?;
    Ok(success(StatusCode::OK, "marked as read", r))
}
