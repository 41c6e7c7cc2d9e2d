//! Conversations: create/find, list (cached), history, `sync` after a reconnect, unread counts.

use std::collections::HashSet;

use tracing::instrument;

use super::{ChatService, SYNC_LIMIT, SYNC_MAX_CONVERSATIONS};
use crate::limits::{LimitKind, SYNC_MAX_BYTES, SYNC_MAX_MESSAGES};
use crate::{
    auth::Identity,
    chat::{
        model::{Conversation, ConversationView, ParticipantView},
        responses::{ConversationPage, HistoryPage, SyncedConversation, UnreadItem, UnreadSummary},
        validate,
    },
    coord::CacheKind,
    error::ApiError,
    store::{HistoryQuery, ListCursor, Page},
};

impl ChatService {
    /// POST /api/chat/conversations: the conversation between me and `participant_id` for a job.
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn create_conversation(
        &self,
        me: &Identity,
        participant_id: &str,
        job_id: Option<&str>,
    ) -> Result<(ConversationView, bool), ApiError> {
        validate::user_id("participantId", participant_id)?;
        if let Some(j) = job_id {
            validate::job_id("jobId", j)?;
        }
        if participant_id == me.id() {
            return Err(ApiError::validation("participantId", "must be another user"));
        }
        self.check_rate(LimitKind::Create, me.id()).await?;
        self.register_user(me).await?;
        let (conv, created) = self.store.find_or_create_conversation(me.id(), participant_id, job_id).await?;
        self.remember(&conv);
        let mut views = self.views(me.id(), vec![conv]).await?;
        self.mark_online(&mut views).await;
        Ok((views.remove(0), created))
    }

    /// Builds client views (participants as user objects, my unread count), online = false.
    async fn views(&self, me: &str, convs: Vec<Conversation>) -> Result<Vec<ConversationView>, ApiError> {
        let ids: Vec<String> =
            convs.iter().flat_map(|c| c.participants.iter().cloned()).collect::<HashSet<_>>().into_iter().collect();
        let users = self.store.get_users(&ids).await?;
        let view_of = |id: &str| {
            users
                .iter()
                .find(|u| u.id == id)
                .map(|u| ParticipantView {
                    id: u.id.clone(),
                    name: u.name.clone(),
                    avatar: u.avatar.clone(),
                    role: Some(u.role),
                    online: false,
                })
                .unwrap_or_else(|| ParticipantView {
                    id: id.to_owned(),
                    name: id.to_owned(),
                    avatar: None,
                    role: None,
                    online: false,
                })
        };
        Ok(convs
            .into_iter()
            .map(|c| ConversationView {
                participants: c.participants.iter().map(|p| view_of(p)).collect(),
                unread_count: c.unread_of(me),
                id: c.id,
                job_id: c.job_id,
                last_message: c.last_message,
                created_at: c.created_at,
                updated_at: c.updated_at,
            })
            .collect())
    }

    /// Fills `online` from presence; a presence outage leaves everyone shown offline.
    async fn mark_online(&self, views: &mut [ConversationView]) {
        let ids: Vec<String> = views
            .iter()
            .flat_map(|v| v.participants.iter().map(|p| p.id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return;
        }
        match self.presence.backend().status(&ids).await {
            Ok(statuses) => {
                for v in views.iter_mut() {
                    for p in v.participants.iter_mut() {
                        p.online = statuses.iter().any(|s| s.user_id == p.id && s.online);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence unavailable for conversation list"),
        }
    }

    /// GET /api/chat/conversations. Only the canonical first page (default size, no cursor) is
    /// cached: clients cannot choose cache keys, so a user holds at most one list entry.
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn list_conversations(
        &self,
        me: &Identity,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ConversationPage, ApiError> {
        let cursor = match cursor.filter(|c| !c.is_empty()) {
            Some(c) => {
                Some(ListCursor::decode(c).ok_or_else(|| ApiError::validation("cursor", "is not a valid cursor"))?)
            }
            None => None,
        };
        self.check_rate(LimitKind::Read, me.id()).await?;
        let canonical = limit == super::LIST_DEFAULT_LIMIT && cursor.is_none();
        let variant = "first";
        let (cached, version) =
            if canonical { self.cache_get(CacheKind::Conversations, me.id(), variant).await? } else { (None, None) };
        let mut views: Vec<ConversationView> = match cached.and_then(|s| serde_json::from_str(&s).ok()) {
            Some(v) => v,
            None => {
                let convs = self.store.list_conversations(me.id(), limit, cursor.as_ref()).await?;
                for c in &convs {
                    self.remember(c);
                }
                let views = self.views(me.id(), convs).await?;
                if let (Some(v), Ok(s)) = (version, serde_json::to_string(&views)) {
                    self.cache_put(CacheKind::Conversations, me.id(), variant, v, s).await;
                }
                views
            }
        };
        let next_cursor = (views.len() == limit as usize)
            .then(|| {
                views
                    .last()
                    .map(|v| ListCursor { updated_at_ms: v.updated_at.timestamp_millis(), id: v.id.clone() }.encode())
            })
            .flatten();
        self.mark_online(&mut views).await;
        Ok(ConversationPage { conversations: views, next_cursor })
    }

    /// GET /api/chat/conversations/:id/messages
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %conversation_id))]
    pub async fn history(
        &self,
        me: &Identity,
        conversation_id: &str,
        q: HistoryQuery,
    ) -> Result<HistoryPage, ApiError> {
        self.check_rate(LimitKind::Read, me.id()).await?;
        self.authorize(me.id(), conversation_id).await?;
        let Page { messages, has_more } = self.store.history(conversation_id, q).await?;
        Ok(HistoryPage { messages, has_more })
    }

    /// GET /api/chat/unread (cached per user).
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn unread(&self, me: &Identity) -> Result<UnreadSummary, ApiError> {
        self.check_rate(LimitKind::Read, me.id()).await?;
        let (cached, version) = self.cache_get(CacheKind::Unread, me.id(), "").await?;
        let items: Vec<UnreadItem> = match cached.and_then(|s| serde_json::from_str(&s).ok()) {
            Some(v) => v,
            None => {
                let items: Vec<UnreadItem> = self
                    .store
                    .unread_counts(me.id())
                    .await?
                    .into_iter()
                    .map(|(conversation_id, unread_count)| UnreadItem { conversation_id, unread_count })
                    .collect();
                if let (Some(v), Ok(s)) = (version, serde_json::to_string(&items)) {
                    self.cache_put(CacheKind::Unread, me.id(), "", v, s).await;
                }
                items
            }
        };
        Ok(UnreadSummary { total: items.iter().map(|i| i.unread_count).sum(), conversations: items })
    }

    /// `sync`: messages after each given seq, for recovery after a reconnect.
    ///
    /// Bounded in count and bytes: repeated entries count once (the smallest `afterSeq` wins),
    /// at most [`SYNC_LIMIT`] messages per conversation and [`SYNC_MAX_MESSAGES`] /
    /// [`SYNC_MAX_BYTES`] over the whole answer. A conversation cut short (or not reached) says
    /// `hasMore`, and the client asks again from its last seq.
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn sync(&self, me: &Identity, items: &[(String, i64)]) -> Result<Vec<SyncedConversation>, ApiError> {
        if items.len() > SYNC_MAX_CONVERSATIONS {
            return Err(ApiError::validation(
                "conversations",
                format!("at most {SYNC_MAX_CONVERSATIONS} conversations"),
            ));
        }
        let mut wanted: Vec<(&str, i64)> = Vec::with_capacity(items.len());
        for (id, after) in items {
            if *after < 0 {
                return Err(ApiError::validation("afterSeq", "must be a non-negative integer"));
            }
            validate::object_id("conversationId", id)?;
            match wanted.iter_mut().find(|(w, _)| w == id) {
                Some(w) => w.1 = w.1.min(*after),
                None => wanted.push((id, *after)),
            }
        }
        self.check_rate(LimitKind::Sync, me.id()).await?;
        let (mut messages_left, mut bytes_left) = (SYNC_MAX_MESSAGES, SYNC_MAX_BYTES);
        let mut out = Vec::with_capacity(wanted.len());
        for (id, after) in wanted {
            self.authorize(me.id(), id).await?;
            if messages_left == 0 || bytes_left == 0 {
                out.push(SyncedConversation { conversation_id: id.to_owned(), messages: Vec::new(), has_more: true });
                continue;
            }
            let limit = SYNC_LIMIT.min(messages_left as u32);
            let mut page = self.store.messages_after(id, after, limit).await?;
            let mut keep = 0;
            for m in &page.messages {
                let size = message_size(m);
                if size > bytes_left {
                    break;
                }
                bytes_left -= size;
                keep += 1;
            }
            if keep < page.messages.len() {
                page.messages.truncate(keep);
                page.has_more = true;
                // Nothing more fits (the next message did not): the others only get `hasMore`.
                bytes_left = 0;
            }
            messages_left -= keep;
            out.push(SyncedConversation {
                conversation_id: id.to_owned(),
                messages: page.messages,
                has_more: page.has_more,
            });
        }
        Ok(out)
    }
}

/// What a message weighs in an answer: its content, JSON-escaped at worst (`\uXXXX` is 6 bytes
/// for a 1-byte control character, but only `\n \r \t` are allowed: 2 bytes), plus the fixed
/// fields (ids, timestamps, status: ~330 bytes serialized).
fn message_size(m: &crate::chat::model::Message) -> usize {
    const FIXED: usize = 400;
    FIXED + 2 * m.content.len() + m.client_message_id.as_ref().map_or(0, |c| 2 * c.len())
}
