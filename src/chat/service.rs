//! The chat service: every operation of DESIGN §4–§6, independent of the transport. REST
//! handlers and socket handlers validate the shape of their input, then call this.
//!
//! Ordering on a send: persist (seq assigned) → invalidate both users' cached views → return to
//! the caller (which acks) → [`ChatService::publish_message`] fans `new_message` out. Caches are
//! bumped before the ack so any node's next read sees the write.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dashmap::DashMap;
use serde::Serialize;
use tokio::time::Instant;
use tracing::instrument;

use crate::{
    auth::Identity,
    chat::{
        model::{Conversation, ConversationView, Message, MessageType, ParticipantView, User, rfc3339},
        validate,
    },
    coord::{
        Cache, CacheKind, LimitKind, RateLimiter, UserStatus,
        presence::{PresenceTracker, Transition},
    },
    error::ApiError,
    realtime::{events, fanout::Fanout},
    store::{HistoryQuery, ListCursor, NewMessage, Page, ReadReceipt, Store},
    telemetry::metrics as m,
};

/// How long a typing indicator lives without a new `typing_start`.
pub const TYPING_EXPIRY: Duration = Duration::from_secs(5);
/// Most messages returned per conversation by `sync`.
pub const SYNC_LIMIT: u32 = 500;
pub const SYNC_MAX_CONVERSATIONS: usize = 100;
pub const MAX_STATUS_IDS: usize = 200;
/// Bound of the in-process conversation → participants map (participants never change).
const PARTICIPANTS_CACHE_MAX: usize = 200_000;
/// Bound of the in-process map of recently registered users.
const USERS_SEEN_MAX: usize = 200_000;
/// A user record is re-written at most this often unless it changed.
const USER_REFRESH: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct SendInput {
    pub conversation_id: String,
    pub content: String,
    pub message_type: Option<String>,
    pub client_message_id: Option<String>,
}

/// A persisted send, ready to acknowledge and publish.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// False when this was a retry of an earlier send (same clientMessageId).
    pub created: bool,
    pub received_at: Instant,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreadSummary {
    pub total: i64,
    pub conversations: Vec<UnreadItem>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub conversation_id: String,
    pub up_to_seq: i64,
    pub read_at: String,
    pub unread_count: i64,
}

pub struct ChatService {
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    limiter: Arc<dyn RateLimiter>,
    presence: PresenceTracker,
    fanout: Fanout,
    participants: DashMap<String, [String; 2]>,
    users_seen: DashMap<String, (User, Instant)>,
    typing: Arc<DashMap<(String, String), u64>>,
    typing_generation: std::sync::atomic::AtomicU64,
}

/// Inserts into an in-process map that starts over when it holds `max` entries: a forgotten
/// entry only costs one more store round trip.
fn insert_bounded<V>(map: &DashMap<String, V>, max: usize, key: String, value: V) {
    if map.len() >= max {
        map.clear();
    }
    map.insert(key, value);
}

impl ChatService {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        limiter: Arc<dyn RateLimiter>,
        presence: PresenceTracker,
        fanout: Fanout,
    ) -> Self {
        Self {
            store,
            cache,
            limiter,
            presence,
            fanout,
            participants: DashMap::new(),
            users_seen: DashMap::new(),
            typing: Arc::new(DashMap::new()),
            typing_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn presence(&self) -> &PresenceTracker {
        &self.presence
    }

    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Registers or refreshes the caller's user record from its token claims.
    pub async fn register_user(&self, me: &Identity) -> Result<(), ApiError> {
        if let Some(seen) = self.users_seen.get(me.id())
            && seen.0 == me.user
            && seen.1.elapsed() < USER_REFRESH
        {
            return Ok(());
        }
        self.store.upsert_user(&me.user).await?;
        // Forgetting only costs one more upsert per user.
        insert_bounded(&self.users_seen, USERS_SEEN_MAX, me.id().to_owned(), (me.user.clone(), Instant::now()));
        Ok(())
    }

    /// Rate limit check for one more event of `kind` by `key`.
    pub async fn check_rate(&self, kind: LimitKind, key: &str) -> Result<(), ApiError> {
        match self.limiter.hit(kind, key).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => {
                metrics::counter!(m::RATE_LIMITED_TOTAL, "kind" => kind.name()).increment(1);
                Err(ApiError::RateLimited { retry_after_ms: (wait.as_millis() as u64).max(1) })
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable");
                Err(ApiError::Unavailable)
            }
        }
    }

    /// The conversation's participants if `me` is one of them (cached: they never change).
    #[instrument(skip_all, fields(conversation_id = %conversation_id))]
    pub async fn authorize(&self, me: &str, conversation_id: &str) -> Result<[String; 2], ApiError> {
        validate::object_id("conversationId", conversation_id)?;
        let participants = match self.participants.get(conversation_id) {
            Some(p) => p.clone(),
            None => {
                let conv =
                    self.store.get_conversation(conversation_id).await?.ok_or(ApiError::NotFound("conversation"))?;
                self.remember(&conv);
                conv.participants
            }
        };
        if participants.iter().any(|p| p == me) { Ok(participants) } else { Err(ApiError::Forbidden) }
    }

    fn remember(&self, conv: &Conversation) {
        insert_bounded(&self.participants, PARTICIPANTS_CACHE_MAX, conv.id.clone(), conv.participants.clone());
    }

    async fn invalidate(&self, users: &[&str]) -> Result<(), ApiError> {
        self.cache.invalidate(users).await.map_err(|e| {
            tracing::warn!(error = %e, "cache invalidation failed");
            ApiError::Unavailable
        })
    }

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
        self.register_user(me).await?;
        let (conv, created) = self.store.find_or_create_conversation(me.id(), participant_id, job_id).await?;
        self.remember(&conv);
        if created {
            self.invalidate(&[me.id(), participant_id]).await?;
        }
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

    /// GET /api/chat/conversations (cached per user, per page).
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
        let variant = format!("{limit}:{}", cursor.as_ref().map(ListCursor::encode).unwrap_or_default());
        let (cached, gen_) = self.cache_get(CacheKind::Conversations, me.id(), &variant).await;
        let mut views: Vec<ConversationView> = match cached.and_then(|s| serde_json::from_str(&s).ok()) {
            Some(v) => v,
            None => {
                let convs = self.store.list_conversations(me.id(), limit, cursor.as_ref()).await?;
                for c in &convs {
                    self.remember(c);
                }
                let views = self.views(me.id(), convs).await?;
                if let (Some(g), Ok(s)) = (gen_, serde_json::to_string(&views)) {
                    self.cache_put(CacheKind::Conversations, me.id(), &variant, g, s).await;
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

    /// Cache read; `gen` is None when the cache is unavailable (then nothing is stored either).
    async fn cache_get(&self, kind: CacheKind, user: &str, variant: &str) -> (Option<String>, Option<u64>) {
        match self.cache.get(kind, user, variant).await {
            Ok((v, g)) => {
                let result = if v.is_some() { "hit" } else { "miss" };
                metrics::counter!(m::CACHE_REQUESTS_TOTAL, "cache" => kind.name(), "result" => result).increment(1);
                (v, Some(g))
            }
            Err(e) => {
                metrics::counter!(m::CACHE_REQUESTS_TOTAL, "cache" => kind.name(), "result" => "error").increment(1);
                tracing::warn!(error = %e, "cache unavailable, reading the store");
                (None, None)
            }
        }
    }

    async fn cache_put(&self, kind: CacheKind, user: &str, variant: &str, gen_: u64, value: String) {
        if let Err(e) = self.cache.put(kind, user, variant, gen_, value).await {
            tracing::warn!(error = %e, "cache put failed");
        }
    }

    /// GET /api/chat/conversations/:id/messages
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %conversation_id))]
    pub async fn history(
        &self,
        me: &Identity,
        conversation_id: &str,
        q: HistoryQuery,
    ) -> Result<HistoryPage, ApiError> {
        self.authorize(me.id(), conversation_id).await?;
        let Page { messages, has_more } = self.store.history(conversation_id, q).await?;
        Ok(HistoryPage { messages, has_more })
    }

    /// `send_message` / POST messages: validate, rate-limit, persist, invalidate caches.
    /// The caller acknowledges, then calls [`Self::publish_message`].
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %input.conversation_id))]
    pub async fn send_message(&self, me: &Identity, input: SendInput) -> Result<Sent, ApiError> {
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
            .insert_message(NewMessage {
                conversation_id: input.conversation_id,
                sender_id: me.id().to_owned(),
                receiver_id: receiver.clone(),
                message_type,
                content: input.content,
                client_message_id: input.client_message_id,
            })
            .await?;
        self.invalidate(&[me.id(), receiver]).await?;
        if inserted.created {
            metrics::counter!(m::MESSAGES_TOTAL, "type" => message_type.as_str()).increment(1);
        }
        Ok(Sent { message: inserted.message, created: inserted.created, received_at })
    }

    /// Fans a new message out to every socket of both participants (a retry is not re-sent).
    pub async fn publish_message(&self, sent: &Sent) {
        if !sent.created {
            return;
        }
        let msg = &sent.message;
        m::record_message_latency(sent.received_at.elapsed());
        let rooms = vec![events::user_room(&msg.sender_id), events::user_room(&msg.receiver_id)];
        if let Err(e) = self.fanout.emit(rooms, events::NEW_MESSAGE, &events::NewMessage { message: msg }).await {
            // Persisted and acknowledged: recipients get it through `sync` on their next reconnect.
            tracing::warn!(error = %e, "new_message fan-out failed");
            metrics::counter!(m::EVENT_ERRORS_TOTAL, "event" => events::NEW_MESSAGE, "code" => "unavailable")
                .increment(1);
        }
    }

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
        let participants = self.authorize(me.id(), conversation_id).await?;
        let ReadReceipt { up_to_seq, read_at, unread_count, .. } =
            self.store.mark_read(conversation_id, me.id(), up_to_seq).await?;
        self.invalidate(&[&participants[0], &participants[1]]).await?;
        let read_at = rfc3339(&read_at);
        let event = events::MessagesRead {
            conversation_id: conversation_id.to_owned(),
            reader_id: me.id().to_owned(),
            up_to_seq,
            read_at: read_at.clone(),
        };
        let rooms = participants.iter().map(|p| events::user_room(p)).collect();
        if let Err(e) = self.fanout.emit(rooms, events::MESSAGES_READ, &event).await {
            tracing::warn!(error = %e, "messages_read fan-out failed");
        }
        Ok(ReadResult { conversation_id: conversation_id.to_owned(), up_to_seq, read_at, unread_count })
    }

    /// `mark_as_delivered`: my incoming messages up to `up_to_seq` become delivered.
    #[instrument(skip_all, fields(user_id = %me.id(), conversation_id = %conversation_id))]
    pub async fn mark_delivered(&self, me: &Identity, conversation_id: &str, up_to_seq: i64) -> Result<u64, ApiError> {
        if up_to_seq < 0 {
            return Err(ApiError::validation("upToSeq", "must be a non-negative integer"));
        }
        let participants = self.authorize(me.id(), conversation_id).await?;
        let updated = self.store.mark_delivered(conversation_id, me.id(), up_to_seq).await?;
        let sender = if participants[0] == me.id() { &participants[1] } else { &participants[0] };
        if updated > 0 {
            self.invalidate(&[&participants[0], &participants[1]]).await?;
        }
        let event = events::MessagesDelivered { conversation_id, up_to_seq };
        if let Err(e) = self.fanout.emit(vec![events::user_room(sender)], events::MESSAGES_DELIVERED, &event).await {
            tracing::warn!(error = %e, "messages_delivered fan-out failed");
        }
        Ok(updated)
    }

    /// GET /api/chat/unread (cached per user).
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn unread(&self, me: &Identity) -> Result<UnreadSummary, ApiError> {
        let (cached, gen_) = self.cache_get(CacheKind::Unread, me.id(), "").await;
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
                if let (Some(g), Ok(s)) = (gen_, serde_json::to_string(&items)) {
                    self.cache_put(CacheKind::Unread, me.id(), "", g, s).await;
                }
                items
            }
        };
        Ok(UnreadSummary { total: items.iter().map(|i| i.unread_count).sum(), conversations: items })
    }

    /// `get_online_status` / GET users/status.
    pub async fn statuses(&self, ids: &[String]) -> Result<Vec<UserStatus>, ApiError> {
        if ids.len() > MAX_STATUS_IDS {
            return Err(ApiError::validation("userIds", format!("at most {MAX_STATUS_IDS} ids")));
        }
        for id in ids {
            validate::user_id("userIds", id)?;
        }
        self.presence.backend().status(ids).await.map_err(|e| {
            tracing::warn!(error = %e, "presence unavailable");
            ApiError::Unavailable
        })
    }

    /// `sync`: messages after each given seq, for recovery after a reconnect.
    #[instrument(skip_all, fields(user_id = %me.id()))]
    pub async fn sync(&self, me: &Identity, items: &[(String, i64)]) -> Result<Vec<SyncedConversation>, ApiError> {
        if items.len() > SYNC_MAX_CONVERSATIONS {
            return Err(ApiError::validation(
                "conversations",
                format!("at most {SYNC_MAX_CONVERSATIONS} conversations"),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (id, after) in items {
            if *after < 0 {
                return Err(ApiError::validation("afterSeq", "must be a non-negative integer"));
            }
            self.authorize(me.id(), id).await?;
            let page = self.store.messages_after(id, *after, SYNC_LIMIT).await?;
            out.push(SyncedConversation {
                conversation_id: id.clone(),
                messages: page.messages,
                has_more: page.has_more,
            });
        }
        Ok(out)
    }

    /// `typing_start` / `typing_stop`: tells the other participant's joined sockets; a start
    /// expires by itself after [`TYPING_EXPIRY`].
    pub async fn typing(
        self: &Arc<Self>,
        me: &Identity,
        conversation_id: &str,
        is_typing: bool,
    ) -> Result<(), ApiError> {
        let participants = self.authorize(me.id(), conversation_id).await?;
        let other = if participants[0] == me.id() { participants[1].clone() } else { participants[0].clone() };
        let key = (conversation_id.to_owned(), me.id().to_owned());
        // Generations come from one node-wide counter, so a timer of an earlier start can never
        // match a later one, even after a stop removed the entry in between.
        let generation = self.typing_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if is_typing {
            self.typing.insert(key.clone(), generation);
        } else {
            self.typing.remove(&key);
        }
        self.emit_typing(conversation_id, me.id(), &other, is_typing).await?;
        if is_typing {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(TYPING_EXPIRY).await;
                let expired = this.typing.remove_if(&key, |_, g| *g == generation).is_some();
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
        let event = events::UserTyping { conversation_id, user_id: user, is_typing };
        self.fanout
            .emit(vec![events::conversation_room(conversation_id, other)], events::USER_TYPING, &event)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "user_typing fan-out failed");
                ApiError::Unavailable
            })
    }

    /// A socket of `user` connected here: update presence, tell partners if they came online.
    pub async fn socket_connected(&self, user: &str, socket: &str) {
        match self.presence.socket_connected(user, socket).await {
            Ok(Transition::Online) => self.announce(user, true, None).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "presence update failed on connect"),
        }
    }

    pub async fn socket_disconnected(&self, user: &str, socket: &str) {
        match self.presence.socket_disconnected(user, socket).await {
            Ok(Transition::Offline(t)) => self.announce(user, false, Some(t)).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "presence update failed on disconnect"),
        }
    }

    /// `user_status` to every socket of everyone who shares a conversation with `user`.
    pub async fn announce(&self, user: &str, online: bool, last_seen: Option<crate::chat::model::Timestamp>) {
        let partners = match self.store.conversation_partners(user).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load partners for user_status");
                return;
            }
        };
        if partners.is_empty() {
            return;
        }
        let status = UserStatus { user_id: user.to_owned(), online, last_seen };
        let rooms = partners.iter().map(|p| events::user_room(p)).collect();
        if let Err(e) = self.fanout.emit(rooms, events::USER_STATUS, &status).await {
            tracing::warn!(error = %e, "user_status fan-out failed");
        }
    }
}
