//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the REST API, generated with `utoipa` from
//! the `#[utoipa::path]` annotations on the handlers and the `ToSchema` types they use.
//!
//! `jobsphere-chat openapi` prints the same document; `docs/openapi.json` is its committed copy
//! and CI fails when the two differ (`tests/docs/check.sh`).

use axum::{Json, Router, routing::get};
use serde::Serialize;
use utoipa::{
    OpenApi, PartialSchema, ToSchema,
    openapi::{
        Object, ObjectBuilder, RefOr, Schema, Type,
        schema::SchemaType,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use crate::{
    chat::model::{Message, MessageStatus, MessageType},
    coord::UserStatus,
    state::AppState,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobsphere-chat REST API",
        description = "The REST half of the JobSphere chat API. Every /api/chat route needs \
            `Authorization: Bearer <JWT>`. Answers use the envelope {status, message, data}; errors \
            {status: \"error\", code, message, data: null} with a stable code. The real-time half \
            (Socket.IO) is described in docs/asyncapi.yaml.",
        license(name = "UNLICENSED"),
    ),
    paths(
        super::conversations::list_conversations,
        super::conversations::create_conversation,
        super::conversations::list_messages,
        super::conversations::send_message,
        super::conversations::mark_read,
        super::users::get_unread,
        super::users::get_status,
        super::dev_login::get_sign_in,
        super::dev_login::post_sign_in,
        get_openapi,
        super::health::get_healthz,
        super::health::get_readyz,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "conversations", description = "Conversations between two users, optionally about a job"),
        (name = "messages", description = "History, sending, read receipts"),
        (name = "users", description = "Unread counts and presence"),
        (name = "development", description = "Development sign-in of the embedded default"),
        (name = "health", description = "Probes and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The document as pretty JSON with a final newline (what `docs/openapi.json` holds).
pub fn document() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(get_openapi))
}

/// GET /api/openapi.json
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", security(()), summary = "This document",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// ------------------------------------------------------------------ schema-only shapes
// The envelope and the bodies that handlers build inline; the types of the data they carry
// are the real ones.

/// The success envelope.
#[derive(Serialize, ToSchema)]
pub struct Success<T: ToSchema> {
    /// Always "success".
    #[schema(example = "success")]
    pub status: String,
    pub message: String,
    pub data: T,
}

/// The error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always "error".
    #[schema(example = "error")]
    pub status: String,
    pub code: ErrorCode,
    /// Safe to show; for `validation` it names the field.
    pub message: String,
    /// Always null.
    pub data: Option<()>,
}

/// Stable error codes, the same words as the Socket.IO acks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Validation,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

/// The errors every authenticated route may answer.
#[derive(utoipa::IntoResponses)]
pub enum Errors {
    /// A bad field (`message` names it).
    #[response(status = 400)]
    Validation(ErrorBody),
    /// No valid token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not a participant of that conversation.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such conversation.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Body over 64 KiB.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// Over a budget; the `Retry-After` header says when to retry, in seconds.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    RateLimited(ErrorBody),
    /// The store or Redis is briefly unreachable, or the request took too long.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `data` of a REST send.
#[derive(Serialize, ToSchema)]
pub struct SentMessage {
    pub message: Message,
}

/// `data` of the presence lookup.
#[derive(Serialize, ToSchema)]
pub struct Statuses {
    pub statuses: Vec<UserStatus>,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// "ready" or "not_ready".
    pub status: String,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    pub store: bool,
    /// Null without Redis (the embedded default).
    pub redis: Option<bool>,
    pub draining: bool,
}

// A message serializes by hand (it writes `timestamp` and `createdAt`), so its schema is
// written by hand too, next to the field list of `Message`'s `Serialize`.
impl PartialSchema for Message {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let time = || {
            string().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)))
        };
        let obj: Object = ObjectBuilder::new()
            .description(Some("A message. `seq` is per conversation 1, 2, 3 … without gaps: order by it."))
            .property("_id", string())
            .property("conversationId", string())
            .property(
                "seq",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
                    .minimum(Some(1)),
            )
            .property("senderId", string())
            .property("receiverId", string())
            .property("messageType", MessageType::schema())
            .property("content", string())
            .property("status", MessageStatus::schema())
            .property(
                "clientMessageId",
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])),
            )
            .property("timestamp", time().description(Some("equal to createdAt")))
            .property("createdAt", time())
            .required("_id")
            .required("conversationId")
            .required("seq")
            .required("senderId")
            .required("receiverId")
            .required("messageType")
            .required("content")
            .required("status")
            .required("clientMessageId")
            .required("timestamp")
            .required("createdAt")
            .build();
        RefOr::T(Schema::Object(obj))
    }
}

impl ToSchema for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        for path in [
            "/api/chat/conversations",
            "/api/chat/conversations/{id}/messages",
            "/api/chat/conversations/{id}/read",
            "/api/chat/unread",
            "/api/chat/users/status",
            "/api/dev/sign-in",
            "/api/openapi.json",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let message = &doc["components"]["schemas"]["Message"];
        assert!(message["properties"]["timestamp"].is_object(), "{message}");
    }
}
