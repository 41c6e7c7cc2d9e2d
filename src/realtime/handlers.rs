//! Socket.IO event handlers. Each reads its payload with `TryData<Value>` and
//! decodes it with field paths, so bad input gets a `validation` error naming the field.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use socketioxide::{
    adapter::Adapter,
    extract::{Event, SocketRef, TryData},
    socket::DisconnectReason,
};
use tracing::{Instrument, info_span};

use super::{events, reply::Reply};
use crate::{
    auth::Identity,
    chat::{
        responses::{ConversationAck, DeliveredAck, MessageBody, ReadResult, Statuses, SyncBody, TypingAck},
        service::{Origin, SendInput},
    },
    coord::fanout::socketio::conversation_room,
    error::ApiError,
    limits::{LimitKind, MAX_IN_FLIGHT_PER_SOCKET, MAX_ROOMS_PER_SOCKET},
    state::AppState,
    telemetry::metrics as m,
};

/// Events of one socket running now, capped at [`MAX_IN_FLIGHT_PER_SOCKET`]: socketioxide spawns
/// a task per event, so without it one socket could start any number at once.
#[derive(Clone, Default)]
struct SocketEvents(Arc<AtomicUsize>);

/// One running event of a socket; frees its place when dropped.
struct EventSlot(Arc<AtomicUsize>);

impl SocketEvents {
    fn enter(&self) -> Option<EventSlot> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if prev >= MAX_IN_FLIGHT_PER_SOCKET {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(EventSlot(self.0.clone()))
    }
}

impl Drop for EventSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a client is told to wait when it has too many events in flight.
const IN_FLIGHT_RETRY_MS: u64 = 250;

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

/// What every handler gets besides its payload.
pub struct Cx<A: Adapter> {
    pub st: AppState,
    pub s: SocketRef<A>,
    pub me: Identity,
    /// The event's reply, answerable once (see [`ReplySlot`]).
    pub reply: Arc<ReplySlot<A>>,
}

/// A reply answered once: by the handler itself when it must answer before more work follows
/// (a send acks before its fan-out), otherwise by [`run`] with the handler's result.
pub struct ReplySlot<A: Adapter>(Mutex<Option<Reply<A>>>);

impl<A: Adapter> ReplySlot<A> {
    pub fn take(&self) -> Option<Reply<A>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Runs one event with uniform parsing, metrics, span, in-flight accounting and reply.
///
/// Boxed: [`dispatch`] returns one future type for every event.
fn run<A, P, F, Fut, R>(
    (state, slot): (&AppState, EventSlot),
    s: SocketRef<A>,
    event: &'static str,
    v: Result<Value, impl std::fmt::Display + Send + 'static>,
    reply: Reply<A>,
    f: F,
) -> BoxFuture<'static, ()>
where
    A: Adapter,
    P: DeserializeOwned + Send + 'static,
    F: FnOnce(Cx<A>, P) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    R: Serialize,
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
            let _in_flight = (in_flight, slot);
            let start = Instant::now();
            metrics::counter!(m::EVENTS_TOTAL, "event" => event).increment(1);
            let slot = Arc::new(ReplySlot(Mutex::new(Some(reply))));
            let res = async {
                let me = me?;
                let p = parse::<P>(v)?;
                f(Cx { st: state, s, me, reply: slot.clone() }, p).await
            }
            .await;
            match (slot.take(), res) {
                (Some(reply), Ok(data)) => reply.success(data),
                (Some(reply), Err(e)) => reply.error(&e, event),
                (None, Ok(_)) => {}
                (None, Err(e)) => tracing::warn!(error = %e, event, "failed after it was acknowledged"),
            }
            metrics::histogram!(m::EVENT_DURATION_SECONDS, "event" => event).record(start.elapsed().as_secs_f64());
        }
        .instrument(span),
    )
}

/// Routes an event to its handler; unknown events get a `validation` error, events over the
/// socket's in-flight cap `rate_limited` (before any work).
fn dispatch<A: Adapter>(
    st: &AppState,
    events_of_socket: &SocketEvents,
    s: SocketRef<A>,
    name: &str,
    v: Result<Value, impl std::fmt::Display + Send + 'static>,
    reply: Reply<A>,
) -> BoxFuture<'static, ()> {
    use events::{
        GET_ONLINE_STATUS, JOIN_CONVERSATION, LEAVE_CONVERSATION, MARK_AS_DELIVERED, MARK_AS_READ, SEND_MESSAGE, SYNC,
        TYPING_START, TYPING_STOP,
    };
    let Some(slot) = events_of_socket.enter() else {
        metrics::counter!(m::RATE_LIMITED_TOTAL, "kind" => "in_flight").increment(1);
        let e = ApiError::RateLimited { retry_after_ms: IN_FLIGHT_RETRY_MS };
        match events::ALL.iter().copied().find(|e| *e == name) {
            Some(known) => reply.error(&e, known),
            None => reply.error_as(&e, "unknown", &truncate(name, 64)),
        }
        return Box::pin(std::future::ready(()));
    };
    let st = (st, slot);
    match name {
        JOIN_CONVERSATION => run(st, s, JOIN_CONVERSATION, v, reply, on_join_conversation),
        LEAVE_CONVERSATION => run(st, s, LEAVE_CONVERSATION, v, reply, on_leave_conversation),
        TYPING_START => run(st, s, TYPING_START, v, reply, |cx, p| on_typing(cx, p, true)),
        TYPING_STOP => run(st, s, TYPING_STOP, v, reply, |cx, p| on_typing(cx, p, false)),
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

/// The connect handler: counts the socket. Its event and disconnect handlers were registered by
/// the middleware ([`register_events`]), as were presence, the fan-out subscription and the
/// user room.
pub fn on_connect() {
    metrics::counter!(m::SOCKET_CONNECTS_TOTAL).increment(1);
    metrics::gauge!(m::SOCKET_CONNECTIONS).increment(1.0);
}

/// One fallback handler routes every event (see [`dispatch`]) instead of one `on(..)` per event:
/// socketioxide keeps per-socket handlers in a map of boxed closures, ≈ 0.9 KiB per socket for
/// our nine events.
///
/// Called at the end of the connect middleware, before socketioxide sends `connect`: it runs
/// the connect handler only after queueing that packet, and meanwhile a client that emits the
/// moment it sees `connect` can have its next packet read on another worker thread (a
/// long-polling POST, for one). Without handlers yet, that event would vanish with no ack. The disconnect handler is in place from the same moment, so a socket that closes before
/// the connect handler ran is still cleaned up.
pub fn register_events<A: Adapter>(s: &SocketRef<A>, state: &AppState) {
    let st = state.clone();
    let in_flight = SocketEvents::default();
    s.on_fallback(move |s: SocketRef<A>, Event(name): Event, TryData(v): TryData<Value>, reply: Reply<A>| {
        dispatch(&st, &in_flight, s, &name, v, reply)
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
async fn on_join_conversation<A: Adapter>(cx: Cx<A>, p: events::ConversationRef) -> Result<ConversationAck, ApiError> {
    record_conversation(&p.conversation_id);
    crate::chat::validate::object_id("conversationId", &p.conversation_id)?;
    cx.st.chat.check_rate(LimitKind::Join, cx.me.id()).await?;
    cx.st.chat.authorize(cx.me.id(), &p.conversation_id).await?;
    let room = conversation_room(&p.conversation_id, cx.me.id());
    let rooms = cx.s.rooms();
    // Its own user room is one of them.
    if rooms.len() > MAX_ROOMS_PER_SOCKET && !rooms.iter().any(|r| *r == room) {
        return Err(ApiError::validation(
            "conversationId",
            format!("this socket already joined {MAX_ROOMS_PER_SOCKET} conversations: leave one first"),
        ));
    }
    cx.s.join(room);
    Ok(ConversationAck { conversation_id: p.conversation_id })
}

/// `leave_conversation`
async fn on_leave_conversation<A: Adapter>(cx: Cx<A>, p: events::ConversationRef) -> Result<ConversationAck, ApiError> {
    crate::chat::validate::object_id("conversationId", &p.conversation_id)?;
    cx.st.chat.check_rate(LimitKind::Join, cx.me.id()).await?;
    cx.s.leave(conversation_room(&p.conversation_id, cx.me.id()));
    Ok(ConversationAck { conversation_id: p.conversation_id })
}

/// `typing_start` / `typing_stop`
async fn on_typing<A: Adapter>(cx: Cx<A>, p: events::ConversationRef, is_typing: bool) -> Result<TypingAck, ApiError> {
    record_conversation(&p.conversation_id);
    cx.st.chat.typing(&cx.me, &p.conversation_id, is_typing).await?;
    Ok(TypingAck { conversation_id: p.conversation_id, is_typing })
}

/// `mark_as_read`
async fn on_mark_as_read<A: Adapter>(cx: Cx<A>, p: events::MarkAsRead) -> Result<ReadResult, ApiError> {
    record_conversation(&p.conversation_id);
    cx.st.chat.mark_read(&cx.me, &p.conversation_id, p.up_to_seq).await
}

/// `mark_as_delivered`
async fn on_mark_as_delivered<A: Adapter>(cx: Cx<A>, p: events::MarkAsDelivered) -> Result<DeliveredAck, ApiError> {
    record_conversation(&p.conversation_id);
    let r = cx.st.chat.mark_delivered(&cx.me, &p.conversation_id, p.up_to_seq).await?;
    Ok(DeliveredAck { conversation_id: p.conversation_id, up_to_seq: r.up_to_seq, updated: r.updated })
}

/// `get_online_status`
async fn on_get_online_status<A: Adapter>(cx: Cx<A>, p: events::GetOnlineStatus) -> Result<Statuses, ApiError> {
    Ok(Statuses { statuses: cx.st.chat.statuses(cx.me.id(), &p.user_ids).await? })
}

/// `sync`
async fn on_sync<A: Adapter>(cx: Cx<A>, p: events::SyncRequest) -> Result<SyncBody, ApiError> {
    let items: Vec<(String, i64)> = p.conversations.into_iter().map(|i| (i.conversation_id, i.after_seq)).collect();
    Ok(SyncBody { conversations: cx.st.chat.sync(&cx.me, &items).await? })
}

/// `send_message`: the service acks `{message}` through this socket's reply, then sends it
/// `message_delivered`, then `new_message` to every socket of both participants.
async fn on_send_message<A: Adapter>(cx: Cx<A>, p: events::SendMessage) -> Result<(), ApiError> {
    record_conversation(&p.conversation_id);
    let input = SendInput {
        conversation_id: p.conversation_id,
        content: p.content,
        message_type: p.message_type,
        client_message_id: p.client_message_id,
    };
    let id = cx.s.id.to_string();
    let reply = cx.reply.clone();
    let ack = Box::new(move |body: &MessageBody<'_>| {
        if let Some(r) = reply.take() {
            r.success(body);
        }
    });
    cx.st.chat.send_message(&cx.me, input, Origin::Socket { id: &id, ack }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_socket_has_a_bounded_number_of_events_in_flight() {
        let events = SocketEvents::default();
        let held: Vec<_> = (0..MAX_IN_FLIGHT_PER_SOCKET).map(|_| events.enter().expect("within the cap")).collect();
        assert!(events.enter().is_none(), "one more is refused");
        assert!(events.enter().is_none(), "a refusal takes no place");
        drop(held);
        assert!(events.enter().is_some(), "finished events free their places");
    }

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
