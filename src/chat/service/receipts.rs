//! Receipts: `mark_as_read` (messages become read, unread count drops, `messages_read` to both
//! participants) and `mark_as_delivered` (`messages_delivered` to the sender).

use tracing::instrument;

use super::ChatService;
use crate::{
    auth::Identity,
    chat::{model::rfc3339, responses::ReadResult},
    coord::fanout::{
        Audience, ServerEvent,
        event::{MessagesDelivered, MessagesRead},
    },
    error::ApiError,
    limits::LimitKind,
    store::{DeliveryReceipt, ReadReceipt},
};

impl ChatService {
    /// `mark_as_read` / POST read.
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %conversation_id))]
    pub async fn mark_read(
        &self,
        me: &Identity,
        conversation_id: &str,
        up_to_seq: Option<i64>,
    ) -> Result<ReadResult, ApiError> {
        if let Some(s) = up_to_seq
            && s < 0
        {
            return Err(ApiError::validation("upToSeq", "must be a non-negative integer"));
        }
        self.check_rate(LimitKind::Receipt, me.id()).await?;
        let participants = self.authorize(me.id(), conversation_id).await?;
        let ReadReceipt { up_to_seq, read_at, unread_count, .. } =
            self.store.mark_read(conversation_id, me.id(), up_to_seq).await?;
        let read_at = rfc3339(&read_at);
        let event = MessagesRead { conversation_id, reader_id: me.id(), up_to_seq, read_at: &read_at };
        // Persisted: a failed fan-out (counted by `publish`) does not fail the call.
        let _ = self.publish(Audience::Users(participants.to_vec()), &ServerEvent::MessagesRead(event)).await;
        Ok(ReadResult { conversation_id: conversation_id.to_owned(), up_to_seq, read_at, unread_count })
    }

    /// `mark_as_delivered`: my incoming messages up to `up_to_seq` become delivered.
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %conversation_id))]
    /// `upToSeq` past the last message is clamped to it; a receipt that changed nothing (a
    /// repeat, or only my own messages) tells nobody.
    pub async fn mark_delivered(
        &self,
        me: &Identity,
        conversation_id: &str,
        up_to_seq: i64,
    ) -> Result<DeliveryReceipt, ApiError> {
        if up_to_seq < 0 {
            return Err(ApiError::validation("upToSeq", "must be a non-negative integer"));
        }
        self.check_rate(LimitKind::Receipt, me.id()).await?;
        let participants = self.authorize(me.id(), conversation_id).await?;
        let receipt = self.store.mark_delivered(conversation_id, me.id(), up_to_seq).await?;
        if !receipt.changed() {
            return Ok(receipt);
        }
        let sender = if participants[0] == me.id() { &participants[1] } else { &participants[0] };
        let event = MessagesDelivered { conversation_id, up_to_seq: receipt.up_to_seq };
        let _ = self.publish(Audience::user(sender), &ServerEvent::MessagesDelivered(event)).await;
        Ok(receipt)
    }
}
