//! Conversation routes: list, create/find, history, send, read.

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use tracing::Instrument;

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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Page size, 1-100 (default 20).
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
#[utoipa::path(get, path = "/api/chat/conversations", tag = "conversations", params(ListParams),
    summary = "My conversations, most recent activity first",
    responses((status = 200, body = super::openapi::Success<crate::chat::responses::ConversationPage>), super::openapi::Errors))]
async fn list_conversations(
    State(st): State<AppState>,
    Caller(me): Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let page = st
        .chat
        .list_conversations(&me, limit(p.limit, crate::chat::service::LIST_DEFAULT_LIMIT, 100)?, p.cursor.as_deref())
        .await?;
    Ok(success(StatusCode::OK, "conversations", page))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateConversationRequest)]
struct CreateBody {
    participant_id: String,
    #[serde(default)]
    job_id: Option<String>,
}

/// POST /api/chat/conversations {participantId, jobId?}: 201 created, 200 existing.
#[utoipa::path(post, path = "/api/chat/conversations", tag = "conversations", request_body = CreateBody,
    summary = "The conversation between me and another user about a job (created if new)",
    responses(
        (status = 201, description = "created", body = super::openapi::Success<crate::chat::model::ConversationView>),
        (status = 200, description = "it existed", body = super::openapi::Success<crate::chat::model::ConversationView>),
        super::openapi::Errors))]
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

/// Deepest `page` of history (`page × limit` rows skipped in the store).
const MAX_PAGE: u64 = 100;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Page size, 1-100 (default 50).
    limit: Option<u32>,
    before: Option<i64>,
    /// 1-100; deeper pages go by `before`.
    page: Option<u64>,
}

/// GET /api/chat/conversations/:id/messages?limit=50&before=SEQ (or page=N)
#[utoipa::path(get, path = "/api/chat/conversations/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "conversation id"), HistoryParams),
    summary = "History: the newest page first, messages in a page oldest first",
    responses((status = 200, body = super::openapi::Success<crate::chat::responses::HistoryPage>), super::openapi::Errors))]
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
        // The store skips `skip` rows to get there: deep pages go by `before` instead.
        Some(n) if n > MAX_PAGE => {
            return Err(ApiError::validation("page", format!("at most {MAX_PAGE}; page further with `before`")));
        }
        Some(n) => (n - 1).saturating_mul(u64::from(limit)),
    };
    let page = st.chat.history(&me, &id, HistoryQuery { before_seq: p.before, skip, limit }).await?;
    Ok(success(StatusCode::OK, "messages", page))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SendMessageRequest)]
struct SendBody {
    content: String,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    client_message_id: Option<String>,
}

/// POST /api/chat/conversations/:id/messages: same effects and events as `send_message`.
#[utoipa::path(post, path = "/api/chat/conversations/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "conversation id")), request_body = SendBody,
    summary = "Send a message (same effects and events as the send_message event)",
    responses(
        (status = 201, description = "stored", body = super::openapi::Success<super::openapi::SentMessage>),
        (status = 200, description = "a repeat of an earlier clientMessageId: the stored message", body = super::openapi::Success<super::openapi::SentMessage>),
        super::openapi::Errors))]
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
    // On a task of its own: the REST timeout drops this handler, and must not drop a send
    // that has committed before its fan-out. Counted in flight, so a drain waits for it
    // before it closes the fan-out. The task stays in the request's span, so its store and
    // Redis spans remain children of `http_request` in the trace.
    let (chat, in_flight) = (st.chat.clone(), st.in_flight.enter());
    let sent = tokio::spawn(
        async move {
            let _in_flight = in_flight;
            chat.send_message(&me, input, Origin::Rest).await
        }
        .in_current_span(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "send_message task failed");
        ApiError::Internal
    })??;
    let status = if sent.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(success(status, "message sent", MessageBody { message: &sent.message }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = MarkReadRequest)]
struct ReadBody {
    #[serde(default)]
    up_to_seq: Option<i64>,
}

/// POST /api/chat/conversations/:id/read {upToSeq?}
#[utoipa::path(post, path = "/api/chat/conversations/{id}/read", tag = "messages",
    params(("id" = String, Path, description = "conversation id")), request_body(content = Option<ReadBody>, description = "optional; none = everything"),
    summary = "Mark the other side's messages read (same as the mark_as_read event)",
    responses((status = 200, body = super::openapi::Success<crate::chat::responses::ReadResult>), super::openapi::Errors))]
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
