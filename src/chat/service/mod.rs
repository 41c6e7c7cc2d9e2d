//! The chat service: every REST and Socket.IO operation, independent of the transport. REST
//! handlers and socket handlers check the shape of their input, then call this; the service
//! validates, authorizes, rate-limits, persists, keeps caches right and publishes the server
//! events itself, so no transport can forget a fan-out.
//!
//! One file per feature: [`messages`] (send), [`conversations`] (create, list, history, sync,
//! unread), [`receipts`] (read / delivered), [`typing`], [`presence`] (connect, disconnect,
//! statuses, upkeep). Shared here: authorization, rate limits, caches and the counted publish.
//!
//! Ordering on a send: persist (seq assigned, and both users' view versions changed in the same
//! write) → fan out to every other socket → answer the caller → its own socket. Cached views
//! are keyed by the view version read before the data (`crate::coord::cache`), so any node's
//! next read sees the write without the send touching a cache.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::time::Instant;
use tracing::instrument;

use crate::{
    auth::Identity,
    chat::{
        model::{Conversation, User},
        validate,
    },
    coord::{
        Cache, CacheKind, LimitKind, PresenceBackend, RateLimiter,
        fanout::{Audience, Fanout, ServerEvent},
        presence::PresenceTracker,
    },
    error::ApiError,
    store::{Store, ViewVersion},
    telemetry::metrics as m,
};

pub mod conversations;
pub mod messages;
pub mod presence;
pub mod receipts;
#[cfg(test)]
mod tests;
pub mod typing;

pub use messages::{Origin, SendInput, Sent};

/// How long a typing indicator lives without a new `typing_start` (the default).
pub const TYPING_EXPIRY: Duration = Duration::from_secs(5);
/// Most messages returned per conversation by `sync`.
pub const SYNC_LIMIT: u32 = 500;
pub const SYNC_MAX_CONVERSATIONS: usize = 100;
/// Page size of the conversation list when the client names none (the only cached page).
pub const LIST_DEFAULT_LIMIT: u32 = 20;
pub const MAX_STATUS_IDS: usize = 200;
/// Bound of the in-process conversation → participants map (participants never change).
const PARTICIPANTS_CACHE_MAX: usize = 200_000;
/// Bound of the in-process map of recently registered users.
const USERS_SEEN_MAX: usize = 200_000;
/// A user record is re-written at most this often unless it changed.
const USER_REFRESH: Duration = Duration::from_secs(600);

/// What the service runs on: the store and the coordination backends, local or Redis.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub presence: Arc<dyn PresenceBackend>,
    pub cache: Arc<dyn Cache>,
    pub limiter: Arc<dyn RateLimiter>,
    pub fanout: Arc<dyn Fanout>,
}

/// Tunables of the service.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A typing state ends by itself after this long without a new start.
    pub typing_expiry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { typing_expiry: TYPING_EXPIRY }
    }
}

pub struct ChatService {
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    limiter: Arc<dyn RateLimiter>,
    presence: PresenceTracker,
    fanout: Arc<dyn Fanout>,
    settings: Settings,
    participants: DashMap<String, [String; 2]>,
    users_seen: DashMap<String, (User, Instant)>,
    typing: typing::TypingStates,
}

/// Whether partners would see the same participant (the fields a conversation view shows).
fn same_profile(a: &User, b: &User) -> bool {
    a.name == b.name && a.avatar == b.avatar && a.role == b.role
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
    pub fn new(backends: Backends, settings: Settings) -> Self {
        let Backends { store, presence, cache, limiter, fanout } = backends;
        Self {
            store,
            cache,
            limiter,
            presence: PresenceTracker::new(presence),
            fanout,
            settings,
            participants: DashMap::new(),
            users_seen: DashMap::new(),
            typing: typing::TypingStates::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn presence(&self) -> &PresenceTracker {
        &self.presence
    }

    pub fn fanout(&self) -> &Arc<dyn Fanout> {
        &self.fanout
    }

    /// Registers or refreshes the caller's user record from its token claims.
    ///
    /// Read-your-writes for profiles: when the claims change what partners see (name, avatar,
    /// role), every partner's view version is changed before this returns, so once the
    /// connect or request that carried the new token is answered, every node lists the new
    /// profile.
    pub async fn register_user(&self, me: &Identity) -> Result<(), ApiError> {
        let seen = self.users_seen.get(me.id()).map(|s| (s.0.clone(), s.1.elapsed() < USER_REFRESH));
        if let Some((user, fresh)) = &seen
            && *user == me.user
            && *fresh
        {
            return Ok(());
        }
        // What partners' lists were built from: this node's last copy, or the store's.
        let before = match seen {
            Some((user, _)) => Some(user),
            None => self.store.get_users(std::slice::from_ref(&me.user.id)).await?.pop(),
        };
        self.store.upsert_user(&me.user).await?;
        if before.is_none_or(|b| !same_profile(&b, &me.user)) {
            let mut users = self.store.conversation_partners(me.id()).await?;
            users.push(me.id().to_owned());
            self.store.bump_view_versions(&users).await?;
        }
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

    /// Cache read: the user's view version (read first: the data is read after it) and the
    /// value cached under it. The version is None when the cache is unavailable (then nothing
    /// is stored either).
    async fn cache_get(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
    ) -> Result<(Option<String>, Option<ViewVersion>), ApiError> {
        let version = self.store.view_version(user).await?;
        Ok(match self.cache.get(kind, user, variant, version).await {
            Ok(v) => {
                let result = if v.is_some() { "hit" } else { "miss" };
                metrics::counter!(m::CACHE_REQUESTS_TOTAL, "cache" => kind.name(), "result" => result).increment(1);
                (v, Some(version))
            }
            Err(e) => {
                metrics::counter!(m::CACHE_REQUESTS_TOTAL, "cache" => kind.name(), "result" => "error").increment(1);
                tracing::warn!(error = %e, "cache unavailable, reading the store");
                (None, None)
            }
        })
    }

    async fn cache_put(&self, kind: CacheKind, user: &str, variant: &str, version: ViewVersion, value: String) {
        if let Err(e) = self.cache.put(kind, user, variant, version, value).await {
            tracing::warn!(error = %e, "cache put failed");
        }
    }

    /// Publishes a server event; a failure is logged and counted under the event's name.
    async fn publish(&self, to: Audience, event: &ServerEvent<'_>) -> Result<(), ApiError> {
        self.fanout.publish(to, event).await.map_err(|e| {
            tracing::warn!(error = %e, event = event.name(), "fan-out failed");
            metrics::counter!(m::EVENT_ERRORS_TOTAL, "event" => event.name(), "code" => "unavailable").increment(1);
            ApiError::Unavailable
        })
    }
}
