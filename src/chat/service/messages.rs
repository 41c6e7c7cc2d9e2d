//! Sending a message: validate, authorize, rate-limit, persist (seq assigned, both users' view
//! versions changed in the same write), then publish to every other socket, then answer the
//! caller.
//!
//! Order of what the sending socket sees: its ack `{message}`, then `message_delivered`, then
//! `new_message` (emitted by this node, after the ack); every other socket of both
//! participants gets `new_message` once, possibly before the sender's ack.
//!
//! Once the store has committed a message, it is acknowledged and its fan-out is attempted; a
//! failed publish does not fail the send (recipients catch up with `sync`). A retried send (same
//! clientMessageId) is answered with the original and published again, so a first attempt that
//! failed after its commit still reaches the connected recipients; clients dedupe `new_message` by
//! `_id` (docs/events.md).

use tokio::time::Instant;
use tracing::instrument;

use super::ChatService;
use crate::{
    auth::Identity,
    chat::{
        model::{Message, MessageType},
        responses::MessageBody,
        validate,
    },
    coord::{
        LimitKind,
        fanout::{
            Audience, ServerEvent,
            event::{MessageDelivered, NewMessage},
        },
    },
    error::ApiError,
    store::NewMessage as NewStoredMessage,
    telemetry::metrics as m,
};

#[derive(Debug, Clone)]
pub struct SendInput {
    pub conversation_id: String,
    pub content: String,
    pub message_type: Option<String>,
    pub client_message_id: Option<String>,
}

/// A persisted send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// False when this was a retry of an earlier send (same clientMessageId).
    pub created: bool,
}

/// Where a send came from, so that the service answers it in the contract's order.
pub enum Origin<'a> {
    /// A REST request: the response follows the call (after the fan-out).
    Rest,
    /// A socket of this node: `ack` answers it as soon as the message is persisted, then it
    /// gets `message_delivered`, then the fan-out starts.
    Socket { id: &'a str, ack: Box<dyn FnOnce(&MessageBody<'_>) + Send + 'a> },
}

impl ChatService {
    /// `send_message` / POST messages.
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %input.conversation_id))]
    pub async fn send_message(&self, me: &Identity, input: SendInput, origin: Origin<'_>) -> Result<Sent, ApiError> {
        let received_at = Instant::now();
        validate::object_id("conversationId", &input.conversation_id)?;
        validate::content("content", &input.content)?;
        let message_type = match input.message_type.as_deref() {
            None => MessageType::Text,
            Some(t) => match MessageType::parse(t) {
                // `system` messages are the server's own, never a client's.
                Some(MessageType::System) | None => {
                    return Err(ApiError::validation("messageType", "must be text, image or file"));
                }
                Some(t) => t,
            },
        };
        if let Some(c) = &input.client_message_id {
            validate::client_message_id("clientMessageId", c)?;
        }
        let participants = self.authorize(me.id(), &input.conversation_id).await?;
        self.check_rate(LimitKind::Message, me.id()).await?;
        let receiver = if participants[0] == me.id() { &participants[1] } else { &participants[0] };
        let inserted = self
            .store
            .insert_message(NewStoredMessage {
                conversation_id: input.conversation_id,
                sender_id: me.id().to_owned(),
                receiver_id: receiver.clone(),
                message_type,
                content: input.content,
                client_message_id: input.client_message_id,
            })
            .await?;
        // Committed (both users' view versions with it): from here on nothing may skip the
        // fan-out. Everyone but the sending socket first; the sending socket is served after
        // its ack, in order.
        let sent = Sent { message: inserted.message, created: inserted.created };
        let message = &sent.message;
        let users = vec![message.sender_id.clone(), message.receiver_id.clone()];
        let to = match &origin {
            Origin::Socket { id, .. } => Audience::UsersExcept { users, socket: (*id).to_owned() },
            Origin::Rest => Audience::Users(users),
        };
        let new_message = ServerEvent::NewMessage(NewMessage { message });
        // A failed publish is counted by `publish`; the message is persisted all the same:
        // recipients get it through `sync` on their next reconnect, or from a retry's fan-out.
        let _ = self.publish(to, &new_message).await;
        if sent.created {
            metrics::counter!(m::MESSAGES_TOTAL, "type" => message_type.as_str()).increment(1);
            m::record_message_latency(received_at.elapsed());
        }
        if let Origin::Socket { id, ack } = origin {
            ack(&MessageBody { message });
            let delivered = MessageDelivered { client_message_id: &message.client_message_id, message };
            let _ = self.publish(Audience::Socket(id.to_owned()), &ServerEvent::MessageDelivered(delivered)).await;
            let _ = self.publish(Audience::Socket(id.to_owned()), &new_message).await;
        }
        Ok(sent)
    }
}
