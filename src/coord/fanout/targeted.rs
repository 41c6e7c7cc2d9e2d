//! Targeted fan-out (cluster mode's default, `CHAT_FANOUT=targeted`): an event reaches only the
//! nodes that hold sockets of its recipients, so Redis deliveries and decode work per message
//! do not grow with the number of nodes (docs/redis.md).
//!
//! Each user has a sharded channel `P:ev:{u:USER}` ([`keys::user_events`], in the user's slot,
//! so on Redis Cluster it lives on the shard that owns the user's keys). A node `SSUBSCRIBE`s
//! while it holds at least one socket of the user and `SUNSUBSCRIBE`s when the last one leaves.
//!
//! Invariants:
//! - **Subscribed before connected**: [`Fanout::attach`] returns once Redis confirmed the
//!   `SSUBSCRIBE`, and the connect middleware awaits it before the socket joins its room and is
//!   told it is connected. An event published after the client saw `connect` reaches it; one
//!   published earlier is caught by `sync`.
//! - **Serialized once**: the sending node encodes the event once and `SPUBLISH`es the same
//!   bytes to each recipient user's channel; a receiving node emits to that user's local room
//!   (`u:USER`, or `c:CONV:USER` for the sockets that joined a conversation). A socket belongs
//!   to one user, so it receives each event once.
//! - **Re-subscribed**: after every reconnect of the subscriber connection (a Redis restart, a
//!   `CLIENT KILL`, a Sentinel failover, a Cluster replica promotion), every user of the
//!   node's own list is subscribed again. Events published while the connection was down are
//!   lost to this node (clients recover them with `sync`); `/readyz` is not ready meanwhile.
//! - **Bounded**: received messages wait in fred's broadcast channel (16,384, see
//!   `redis::connect`); a receiver that falls behind drops the oldest, counted as
//!   `chat_fanout_dropped_total{reason="lagged"}`. The node's list holds at most
//!   [`MAX_USERS`] users, each with at most `MAX_SOCKETS_PER_USER` sockets.
//!
//! Events to one socket (`Audience::Socket`, the sender's own socket) never leave the node; an
//! event to users but one socket (`Audience::UsersExcept`) names that socket on the wire, and
//! the node holding it leaves it out.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, EventInterface, PubsubInterface},
    types::Message,
};
use futures::{StreamExt, future::try_join_all};
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;
use tokio::{task::JoinHandle, time::Instant};

use super::{
    Audience, Fanout, FanoutError, ServerEvent,
    socketio::{SocketIoFanout, conversation_room, user_room},
};
use crate::{
    coord::{presence::tracker::SWEEP_GRACE, redis::keys},
    telemetry::metrics as m,
};

/// Most users one node keeps subscriptions for (far above what a node's sockets reach).
pub const MAX_USERS: usize = 200_000;
/// Re-subscriptions in flight at once after a reconnect.
const RESUBSCRIBE_CONCURRENCY: usize = 64;
/// The wire format version of [`Wire`].
const WIRE_V1: u8 = 1;

/// What goes on a user's channel: version, event name, the conversation for events to the
/// sockets that joined it (typing), and the payload as the client receives it.
#[derive(Serialize)]
struct Wire<'a, T: Serialize + ?Sized> {
    v: u8,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<&'a str>,
    /// A socket that does not receive it (the sender's, served by its own node after the ack).
    #[serde(skip_serializing_if = "Option::is_none")]
    except: Option<&'a str>,
    data: &'a T,
}

#[derive(Deserialize)]
struct WireIn {
    v: u8,
    event: String,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    except: Option<String>,
    /// Passed on to the sockets as it came (no parse into a tree and serialization back).
    data: Box<serde_json::value::RawValue>,
}

/// One user's sockets on this node, with when each was attached. The async lock serializes
/// that user's subscribe and unsubscribe, so a connect and a disconnect of the same user cannot
/// cross in Redis.
type Sockets = Arc<tokio::sync::Mutex<HashMap<String, Instant>>>;

/// The sockets of `sockets` that [`Fanout::retain`] forgets: not `live`, and attached longer
/// than [`SWEEP_GRACE`] ago. A socket is attached inside its connect middleware, before
/// socketioxide lists it as connected, so a sweep that took its `live` snapshot meanwhile must
/// not unsubscribe it (it would stay connected and never receive an event again).
fn gone_sockets(sockets: &HashMap<String, Instant>, live: &HashSet<String>, now: Instant) -> Vec<String> {
    sockets
        .iter()
        .filter(|(id, at)| !live.contains(*id) && now.saturating_duration_since(**at) > SWEEP_GRACE)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The node's own list of subscribed users (the source of truth for re-subscription).
struct Subscriptions {
    subscriber: SubscriberClient,
    prefix: Arc<str>,
    users: Mutex<HashMap<String, Sockets>>,
}

impl Subscriptions {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sockets>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user's entry, created if there is room.
    fn entry(&self, user: &str) -> Option<Sockets> {
        let mut users = self.users();
        if let Some(s) = users.get(user) {
            return Some(s.clone());
        }
        if users.len() >= MAX_USERS {
            return None;
        }
        let s = Sockets::default();
        users.insert(user.to_owned(), s.clone());
        Some(s)
    }

    /// Drops the user's entry if nobody else holds it and it is empty (checked under the map
    /// lock, where new holders are made, so no attach can be using it).
    fn forget_if_unused(&self, user: &str, sockets: &Sockets, empty: bool) {
        let mut users = self.users();
        if empty && Arc::strong_count(sockets) == 2 {
            users.remove(user);
        }
    }

    async fn attach(&self, user: &str, socket: &str) {
        let Some(entry) = self.entry(user) else {
            metrics::counter!(m::FANOUT_DROPPED_TOTAL, "reason" => "subscriptions_full").increment(1);
            tracing::warn!(max = MAX_USERS, "too many users on this node for the targeted fan-out");
            return;
        };
        let mut sockets = entry.lock().await;
        if sockets.is_empty() {
            // Kept in the list even if this fails: the next reconnect re-subscribes it.
            let channel = keys::user_events(&self.prefix, user);
            if let Err(e) = self.subscriber.ssubscribe(channel).await {
                tracing::warn!(error = %e, "subscribing to a user's events failed");
            }
        }
        sockets.insert(socket.to_owned(), Instant::now());
    }

    async fn detach(&self, user: &str, socket: &str) {
        let Some(entry) = self.users().get(user).cloned() else { return };
        let mut sockets = entry.lock().await;
        if sockets.remove(socket).is_some() && sockets.is_empty() {
            let channel = keys::user_events(&self.prefix, user);
            if let Err(e) = self.subscriber.sunsubscribe(channel).await {
                // Harmless: events for this user still reach this node and find no socket.
                tracing::warn!(error = %e, "unsubscribing from a user's events failed");
            }
        }
        let empty = sockets.is_empty();
        drop(sockets);
        self.forget_if_unused(user, &entry, empty);
    }

    /// Subscribes every user of the list again (after a reconnect). Each under its own lock,
    /// so a user whose last socket left meanwhile is not subscribed again.
    async fn resubscribe(&self) {
        let entries: Vec<(String, Sockets)> = self.users().iter().map(|(u, s)| (u.clone(), s.clone())).collect();
        let count = entries.len();
        futures::stream::iter(entries)
            .for_each_concurrent(RESUBSCRIBE_CONCURRENCY, |(user, entry)| async move {
                let sockets = entry.lock().await;
                if sockets.is_empty() {
                    return;
                }
                if let Err(e) = self.subscriber.ssubscribe(keys::user_events(&self.prefix, &user)).await {
                    tracing::warn!(error = %e, "re-subscribing to a user's events failed");
                }
            })
            .await;
        tracing::info!(users = count, "Redis reconnected: user event channels re-subscribed");
    }
}

/// The targeted fan-out over any adapter: local emits and one-socket events go through
/// [`SocketIoFanout`], everything addressed to users through their channels.
pub struct TargetedFanout<A: Adapter> {
    local: Arc<SocketIoFanout<A>>,
    publisher: Client,
    subs: Arc<Subscriptions>,
    tasks: Vec<JoinHandle<()>>,
}

impl<A: Adapter> Drop for TargetedFanout<A> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl<A: Adapter> TargetedFanout<A> {
    /// `subscriber` must not be initialized yet: the reconnect listener has to see its first
    /// connection (which it skips). Starts the receiver and the re-subscriber.
    pub async fn start(
        local: SocketIoFanout<A>,
        publisher: Client,
        subscriber: SubscriberClient,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let local = Arc::new(local);
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        fred::prelude::ClientLike::init(&subscriber).await?;
        let subs = Arc::new(Subscriptions { subscriber, prefix: prefix.into(), users: Mutex::new(HashMap::new()) });
        let tasks = vec![
            tokio::spawn(receive(messages, local.clone(), prefix.into())),
            tokio::spawn(resubscribe_on_reconnect(reconnects, subs.clone())),
        ];
        Ok(Self { local, publisher, subs, tasks })
    }

    async fn spublish(&self, channel: String, bytes: fred::bytes::Bytes) -> Result<(), FanoutError> {
        // The answer is how many nodes received it (0: no socket of that user anywhere).
        self.publisher.spublish::<i64, _, _>(channel, bytes).await.map(|_| ()).map_err(|e| FanoutError(e.to_string()))
    }
}

#[async_trait]
impl<A: Adapter> Fanout for TargetedFanout<A> {
    async fn publish(&self, to: Audience, event: &ServerEvent<'_>) -> Result<(), FanoutError> {
        if self.local.is_closed().await {
            return Err(FanoutError("node is shutting down".into()));
        }
        let (users, conversation, except) = match &to {
            Audience::Socket(_) => return self.local.publish(to, event).await,
            Audience::Users(users) => (users.as_slice(), None, None),
            Audience::UsersExcept { users, socket } => (users.as_slice(), None, Some(socket.as_str())),
            Audience::Joined { conversation, user } => (std::slice::from_ref(user), Some(conversation.as_str()), None),
        };
        let wire = Wire { v: WIRE_V1, event: event.name(), conversation, except, data: event };
        let bytes = fred::bytes::Bytes::from(serde_json::to_vec(&wire).map_err(|e| FanoutError(e.to_string()))?);
        let prefix = &self.subs.prefix;
        try_join_all(users.iter().map(|u| self.spublish(keys::user_events(prefix, u), bytes.clone()))).await?;
        Ok(())
    }

    async fn attach(&self, user: &str, socket: &str) {
        self.subs.attach(user, socket).await
    }

    async fn detach(&self, user: &str, socket: &str) {
        self.subs.detach(user, socket).await
    }

    async fn retain(&self, live: &HashSet<String>) {
        let entries: Vec<(String, Sockets)> = self.subs.users().iter().map(|(u, s)| (u.clone(), s.clone())).collect();
        for (user, entry) in entries {
            let gone = gone_sockets(&*entry.lock().await, live, Instant::now());
            for socket in gone {
                self.subs.detach(&user, &socket).await;
            }
        }
    }

    fn local_socket_ids(&self) -> HashSet<String> {
        self.local.local_socket_ids()
    }

    fn local_transports(&self) -> (usize, usize) {
        self.local.local_transports()
    }

    async fn close(&self, within: Duration) {
        self.local.close(within).await
    }
}

/// Emits every message of a user channel to that user's local room.
async fn receive<A: Adapter>(
    mut rx: tokio::sync::broadcast::Receiver<Message>,
    local: Arc<SocketIoFanout<A>>,
    prefix: Arc<str>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let msg = match rx.recv().await {
            Ok(msg) => msg,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(dropped = n, "targeted fan-out receiver lagged");
                metrics::counter!(m::FANOUT_DROPPED_TOTAL, "reason" => "lagged").increment(n);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(user) = keys::user_of_events(&prefix, &msg.channel) else { continue };
        metrics::counter!(m::REDIS_PUBSUB_RECEIVED_TOTAL).increment(1);
        let wire =
            msg.value.as_bytes().and_then(|b| serde_json::from_slice::<WireIn>(b).ok()).filter(|w| w.v == WIRE_V1);
        let Some(wire) = wire else {
            metrics::counter!(m::FANOUT_DROPPED_TOTAL, "reason" => "decode").increment(1);
            tracing::warn!(channel = %msg.channel, "undecodable message on a user channel");
            continue;
        };
        let room = match &wire.conversation {
            Some(c) => conversation_room(c, user),
            None => user_room(user),
        };
        if let Err(e) = local.emit_local(room, wire.except.as_deref(), &wire.event, &wire.data).await {
            metrics::counter!(m::FANOUT_DROPPED_TOTAL, "reason" => "emit").increment(1);
            tracing::debug!(error = %e, event = %wire.event, "local emit of a user event failed");
        }
    }
}

/// fred does not restore our subscriptions after a reconnect: re-issue them from the node's own
/// list. The first event is the initial connection and is skipped.
async fn resubscribe_on_reconnect(
    mut rx: tokio::sync::broadcast::Receiver<fred::prelude::Server>,
    subs: Arc<Subscriptions>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut first = true;
    loop {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        if std::mem::take(&mut first) {
            continue;
        }
        subs.resubscribe().await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::coord::fanout::event::UserTyping;

    #[test]
    fn a_sweep_keeps_sockets_still_connecting_and_live_ones() {
        let now = Instant::now();
        let old = now - SWEEP_GRACE - Duration::from_secs(1);
        let sockets: HashMap<String, Instant> = [
            ("connecting".to_owned(), now), // attached, not yet listed by socketioxide
            ("live".to_owned(), old),
            ("closed".to_owned(), old),
        ]
        .into();
        let live: HashSet<String> = ["live".to_owned()].into();
        assert_eq!(gone_sockets(&sockets, &live, now), vec!["closed".to_owned()]);
        // Once past the grace, a socket that never showed up is forgotten too.
        let mut later = gone_sockets(&sockets, &live, now + SWEEP_GRACE * 2);
        later.sort();
        assert_eq!(later, vec!["closed".to_owned(), "connecting".to_owned()]);
    }

    #[test]
    fn the_wire_format_carries_version_event_conversation_and_payload() {
        let e = ServerEvent::UserTyping(UserTyping { conversation_id: "c1", user_id: "u", is_typing: true });
        let wire = Wire { v: WIRE_V1, event: e.name(), conversation: Some("c1"), except: None, data: &e };
        let bytes = serde_json::to_vec(&wire).unwrap();
        let back: WireIn = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((back.v, back.event.as_str(), back.conversation.as_deref()), (1, "user_typing", Some("c1")));
        let data: serde_json::Value = serde_json::from_str(back.data.get()).unwrap();
        assert_eq!(data, json!({ "conversationId": "c1", "userId": "u", "isTyping": true }));
        let wire = Wire { v: WIRE_V1, event: e.name(), conversation: None, except: Some("s1"), data: &e };
        let v: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        assert!(v.get("conversation").is_none(), "{v}");
        let back: WireIn = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        assert_eq!(back.except.as_deref(), Some("s1"));
    }
}
