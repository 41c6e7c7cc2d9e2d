//! Socket.IO event handlers (DESIGN §6). Each reads its payload with `TryData<Value>` and
//! decodes it with field paths, so bad input gets a `validation` error naming the field.

use std::{future::Future, time::Instant};

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use socketioxide::{
    adapter::Adapter,
    extract::{Event, SocketRef, TryData},
    socket::DisconnectReason,
};
use tracing::{Instrument, info_span};

use super::{events, reply::Reply};
use crate::{auth::Identity, chat::service::SendInput, error::ApiError, node::AppState, telemetry::metrics as m};

/// Decodes a payload; errors name the offending field.
fn parse<P: DeserializeOwned>(v: Result<Value, impl std::fmt::Display>) -> Result<P, ApiError> {
    let v = v.map_err(|e| ApiError::validation("payload", format!("must be a JSON object ({e})")))?;
    // serde would read an array positionally into the payload struct.
    if !v.is_object() {
        return Err(ApiError::validation("payload", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "payload".to_owned() } else { path };
        ApiError::validation(field, e.into_inner().to_string())
    })
}

fn identity<A: Adapter>(s: &SocketRef<A>) -> Result<Identity, ApiError> {
    s.extensions.get::<Identity>().ok_or(ApiError::Unauthorized)
}

/// What a handler answers: the ack data, and work that must follow the ack (fan-out).
pub struct Answer {
    data: Value,
    then: Option<BoxFuture<'static, ()>>,
}

impl From<Value> for Answer {
    fn from(data: Value) -> Self {
        Self { data, then: None }
    }
}

/// Runs one event with uniform parsing, metrics, span, in-flight accounting and reply.
///
/// Boxed: [`dispatch`] returns one future type for every event.
fn run<A, P, F, Fut, R>(
    state: &AppState,
    s: SocketRef<A>,
    event: &'static str,
    v: Result<Value, impl std::fmt::Display + Send + 'static>,
    reply: Reply<A>,
    f: F,
) -> BoxFuture<'static, ()>
where
    A: Adapter,
    P: DeserializeOwned + Send + 'static,
    F: FnOnce(AppState, SocketRef<A>, Identity, P) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    R: Into<Answer>,
{
    let state = state.clone();
    // One clone of the caller's identity per event, for the span and the handler.
    let me = identity(&s);
    let user = me.as_ref().map(|i| i.id()).unwrap_or_default();
    let span = info_span!("socket_event", event, user_id = %user, conversation_id = tracing::field::Empty, trace_id = tracing::field::Empty);
    crate::telemetry::record_trace_id(&span);
    let in_flight = state.in_flight.enter();
    Box::pin(
        async move {
            let _in_flight = in_flight;
            let start = Instant::now();
            metrics::counter!(m::EVENTS_TOTAL, "event" => event).increment(1);
            let res = async {
                let me = me?;
                let p = parse::<P>(v)?;
                f(state, s.clone(), me, p).await
            }
            .await;
            match res.map(Into::into) {
                Ok(Answer { data, then }) => {
                    reply.success(data);
                    if let Some(then) = then {
                        then.await;
                    }
                }
                Err(e) => reply.error(&e, event),
            }
            metrics::histogram!(m::EVENT_DURATION_SECONDS, "event" => event).record(start.elapsed().as_secs_f64());
        }
        .instrument(span),
    )
}

/// Routes an event to its handler; unknown events get a `validation` error.
fn dispatch<A: Adapter>(
    st: &AppState,
    s: SocketRef<A>,
    name: &str,
    v: Result<Value, impl std::fmt::Display + Send + 'static>,
    reply: Reply<A>,
) -> BoxFuture<'static, ()> {
    use events::{
        GET_ONLINE_STATUS, JOIN_CONVERSATION, LEAVE_CONVERSATION, MARK_AS_DELIVERED, MARK_AS_READ, SEND_MESSAGE, SYNC,
        TYPING_START, TYPING_STOP,
    };
    match name {
        JOIN_CONVERSATION => run(st, s, JOIN_CONVERSATION, v, reply, on_join_conversation),
        LEAVE_CONVERSATION => run(st, s, LEAVE_CONVERSATION, v, reply, on_leave_conversation),
        TYPING_START => run(st, s, TYPING_START, v, reply, |st, s, me, p| on_typing(st, s, me, p, true)),
        TYPING_STOP => run(st, s, TYPING_STOP, v, reply, |st, s, me, p| on_typing(st, s, me, p, false)),
        MARK_AS_READ => run(st, s, MARK_AS_READ, v, reply, on_mark_as_read),
        MARK_AS_DELIVERED => run(st, s, MARK_AS_DELIVERED, v, reply, on_mark_as_delivered),
        GET_ONLINE_STATUS => run(st, s, GET_ONLINE_STATUS, v, reply, on_get_online_status),
        SYNC => run(st, s, SYNC, v, reply, on_sync),
        SEND_MESSAGE => run(st, s, SEND_MESSAGE, v, reply, on_send_message),
        _ => {
            tracing::debug!(event = %name, "unknown event");
            let name = truncate(name, 64);
            reply.error_as(&ApiError::validation("event", format!("unknown event {name:?}")), "unknown", &name);
            Box::pin(std::future::ready(()))
        }
    }
}

fn record_conversation(id: &str) {
    tracing::Span::current().record("conversation_id", id);
}

/// Runs synchronously when socketioxide calls the connect handler, so every event handler is
/// in place before the socket's next packet is read. Presence was done by the middleware.
pub fn on_connect<A: Adapter>(state: &AppState, s: &SocketRef<A>) {
    let Some(me) = s.extensions.get::<Identity>() else {
        // Unreachable: the middleware inserts it; refuse rather than serve anonymously.
        let _ = s.clone().disconnect();
        return;
    };
    s.join(events::user_room(me.id()));
    metrics::counter!(m::SOCKET_CONNECTS_TOTAL).increment(1);
    metrics::gauge!(m::SOCKET_CONNECTIONS).increment(1.0);
    register_events(s, state);
    if !s.connected() {
        // Closed before the disconnect handler existed: clean up here (the periodic presence
        // sweep would catch it too).
        let (st, user, sid) = (state.clone(), me.user.id.clone(), s.id.to_string());
        tokio::spawn(async move {
            metrics::gauge!(m::SOCKET_CONNECTIONS).decrement(1.0);
            st.chat.socket_disconnected(&user, &sid).await;
        });
    }
}

/// One fallback handler routes every event (see [`dispatch`]) instead of one `on(..)` per event:
/// socketioxide keeps per-socket handlers in a map of boxed closures, ≈ 0.9 KiB per socket for
/// our nine events (issue 7).
fn register_events<A: Adapter>(s: &SocketRef<A>, state: &AppState) {
    let st = state.clone();
    s.on_fallback(move |s: SocketRef<A>, Event(name): Event, TryData(v): TryData<Value>, reply: Reply<A>| {
        dispatch(&st, s, &name, v, reply)
    });

    let st = state.clone();
    s.on_disconnect(move |s: SocketRef<A>, reason: DisconnectReason| {
        let st = st.clone();
        async move {
            metrics::gauge!(m::SOCKET_CONNECTIONS).decrement(1.0);
            metrics::counter!(m::SOCKET_DISCONNECTS_TOTAL, "reason" => reason_label(reason)).increment(1);
            if let Some(me) = s.extensions.get::<Identity>() {
                st.chat.socket_disconnected(me.id(), &s.id.to_string()).await;
            }
        }
    });
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn reason_label(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::MultipleHttpPollingError => "multiple_polling",
        DisconnectReason::PacketParsingError => "parse_error",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "closing_server",
    }
}

/// `join_conversation`: this socket gets the conversation's typing events.
async fn on_join_conversation<A: Adapter>(
    st: AppState,
    s: SocketRef<A>,
    me: Identity,
    p: events::ConversationRef,
) -> Result<Value, ApiError> {
    record_conversation(&p.conversation_id);
    st.chat.authorize(me.id(), &p.conversation_id).await?;
    s.join(events::conversation_room(&p.conversation_id, me.id()));
    Ok(json!({ "conversationId": p.conversation_id }))
}

/// `leave_conversation`
async fn on_leave_conversation<A: Adapter>(
    _st: AppState,
    s: SocketRef<A>,
    me: Identity,
    p: events::ConversationRef,
) -> Result<Value, ApiError> {
    crate::chat::validate::object_id("conversationId", &p.conversation_id)?;
    s.leave(events::conversation_room(&p.conversation_id, me.id()));
    Ok(json!({ "conversationId": p.conversation_id }))
}

/// `typing_start` / `typing_stop`
async fn on_typing<A: Adapter>(
    st: AppState,
    _s: SocketRef<A>,
    me: Identity,
    p: events::ConversationRef,
    is_typing: bool,
) -> Result<Value, ApiError> {
    record_conversation(&p.conversation_id);
    st.chat.typing(&me, &p.conversation_id, is_typing).await?;
    Ok(json!({ "conversationId": p.conversation_id, "isTyping": is_typing }))
}

/// `mark_as_read`
async fn on_mark_as_read<A: Adapter>(
    st: AppState,
    _s: SocketRef<A>,
    me: Identity,
    p: events::MarkAsRead,
) -> Result<Value, ApiError> {
    record_conversation(&p.conversation_id);
    let r = st.chat.mark_read(&me, &p.conversation_id, p.up_to_seq).await?;
    Ok(serde_json::to_value(r).unwrap_or_default())
}

/// `mark_as_delivered`
async fn on_mark_as_delivered<A: Adapter>(
    st: AppState,
    _s: SocketRef<A>,
    me: Identity,
    p: events::MarkAsDelivered,
) -> Result<Value, ApiError> {
    record_conversation(&p.conversation_id);
    let updated = st.chat.mark_delivered(&me, &p.conversation_id, p.up_to_seq).await?;
    Ok(json!({ "conversationId": p.conversation_id, "upToSeq": p.up_to_seq, "updated": updated }))
}

/// `get_online_status`
async fn on_get_online_status<A: Adapter>(
    st: AppState,
    _s: SocketRef<A>,
    _me: Identity,
    p: events::GetOnlineStatus,
) -> Result<Value, ApiError> {
    let statuses = st.chat.statuses(&p.user_ids).await?;
    Ok(json!({ "statuses": statuses }))
}

/// `sync`
async fn on_sync<A: Adapter>(
    st: AppState,
    _s: SocketRef<A>,
    me: Identity,
    p: events::SyncRequest,
) -> Result<Value, ApiError> {
    let items: Vec<(String, i64)> = p.conversations.into_iter().map(|i| (i.conversation_id, i.after_seq)).collect();
    let conversations = st.chat.sync(&me, &items).await?;
    Ok(json!({ "conversations": conversations }))
}

/// `send_message`: ack `{message}`, then `message_delivered` to this socket, then `new_message`
/// to every socket of both participants.
async fn on_send_message<A: Adapter>(
    st: AppState,
    s: SocketRef<A>,
    me: Identity,
    p: events::SendMessage,
) -> Result<Answer, ApiError> {
    record_conversation(&p.conversation_id);
    let input = SendInput {
        conversation_id: p.conversation_id,
        content: p.content,
        message_type: p.message_type,
        client_message_id: p.client_message_id,
    };
    let sent = st.chat.send_message(&me, input).await?;
    let data = json!({ "message": &sent.message });
    let then = async move {
        let delivered =
            events::MessageDelivered { client_message_id: &sent.message.client_message_id, message: &sent.message };
        if let Err(e) = s.emit(events::MESSAGE_DELIVERED, &delivered) {
            tracing::debug!(error = %e, "message_delivered not sent");
        }
        st.chat.publish_message(&sent).await;
    };
    Ok(Answer { data, then: Some(Box::pin(then)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let e =
            parse::<events::SendMessage>(Ok::<_, String>(json!({"conversationId": 5, "content": "x"}))).unwrap_err();
        assert!(matches!(&e, ApiError::Validation { field, .. } if field == "conversationId"), "{e:?}");
        let e = parse::<events::SendMessage>(Ok::<_, String>(json!({"content": "x"}))).unwrap_err();
        assert!(e.to_string().contains("conversationId"), "{e}");
        let e = parse::<events::SendMessage>(Ok::<_, String>(json!("just a string"))).unwrap_err();
        assert!(matches!(e, ApiError::Validation { .. }));
    }
}
