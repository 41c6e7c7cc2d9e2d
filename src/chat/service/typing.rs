//! Typing indicators: `user_typing` to the other participant's sockets that joined the
//! conversation. A start ends by itself after [`super::Settings::typing_expiry`] unless
//! another start or a stop came first.
//!
//! Coalesced: a `typing_start` while this node already shows the user typing in that
//! conversation only extends the expiry; it is not broadcast again. (A start on one node and
//! a start on another, from two devices, are both broadcast: the state is per node.)

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use dashmap::DashMap;

use super::ChatService;
use crate::{
    auth::Identity,
    coord::fanout::{Audience, ServerEvent, event::UserTyping},
    error::ApiError,
};

/// Live typing states of this node: (conversation, user) → generation of the latest start.
#[derive(Default)]
pub(super) struct TypingStates {
    live: DashMap<(String, String), u64>,
    /// Generations come from one node-wide counter, so a timer of an earlier start can never
    /// match a later one, even after a stop removed the entry in between.
    next: AtomicU64,
}

impl ChatService {
    /// `typing_start` / `typing_stop`.
    pub async fn typing(
        self: &Arc<Self>,
        me: &Identity,
        conversation_id: &str,
        is_typing: bool,
    ) -> Result<(), ApiError> {
        self.check_rate(crate::limits::LimitKind::Typing, me.id()).await?;
        let participants = self.authorize(me.id(), conversation_id).await?;
        let other = if participants[0] == me.id() { participants[1].clone() } else { participants[0].clone() };
        let key = (conversation_id.to_owned(), me.id().to_owned());
        let generation = self.typing.next.fetch_add(1, Ordering::Relaxed);
        let already_typing = if is_typing {
            self.typing.live.insert(key.clone(), generation).is_some()
        } else {
            self.typing.live.remove(&key);
            false
        };
        if !already_typing {
            self.emit_typing(conversation_id, me.id(), &other, is_typing).await?;
        }
        if is_typing {
            let this = Arc::clone(self);
            let expiry = self.settings.typing_expiry;
            tokio::spawn(async move {
                tokio::time::sleep(expiry).await;
                let expired = this.typing.live.remove_if(&key, |_, g| *g == generation).is_some();
                if expired {
                    let _ = this.emit_typing(&key.0, &key.1, &other, false).await;
                }
            });
        }
        Ok(())
    }

    async fn emit_typing(
        &self,
        conversation_id: &str,
        user: &str,
        other: &str,
        is_typing: bool,
    ) -> Result<(), ApiError> {
        let to = Audience::Joined { conversation: conversation_id.to_owned(), user: other.to_owned() };
        self.publish(to, &ServerEvent::UserTyping(UserTyping { conversation_id, user_id: user, is_typing })).await
    }
}
