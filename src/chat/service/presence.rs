//! Presence: sockets coming and going on this node, `user_status` announcements, status
//! lookups and the periodic upkeep (refresh inside the TTL, reaping dead nodes, sweeping
//! sockets that no longer exist).

use super::{ChatService, MAX_STATUS_IDS};
use crate::{
    chat::{model::Timestamp, validate},
    coord::{
        UserStatus,
        fanout::{Audience, ServerEvent},
        presence::Transition,
    },
    error::ApiError,
};

impl ChatService {
    /// `get_online_status` / GET users/status, asked by `me`.
    pub async fn statuses(&self, me: &str, ids: &[String]) -> Result<Vec<UserStatus>, ApiError> {
        if ids.len() > MAX_STATUS_IDS {
            return Err(ApiError::validation("userIds", format!("at most {MAX_STATUS_IDS} ids")));
        }
        for id in ids {
            validate::user_id("userIds", id)?;
        }
        self.check_rate(crate::limits::LimitKind::Presence, me).await?;
        self.presence.backend().status(ids).await.map_err(|e| {
            tracing::warn!(error = %e, "presence unavailable");
            ApiError::Unavailable
        })
    }

    /// A socket of `user` connected here: events to `user` reach this node first (the fan-out
    /// subscribes), then presence, then partners are told if `user` came online.
    pub async fn socket_connected(&self, user: &str, socket: &str) {
        self.fanout.attach(user, socket).await;
        tracing::debug!(socket, "connect: subscribed");
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
        self.fanout.detach(user, socket).await;
    }

    /// `user_status` to every socket of everyone who shares a conversation with `user`.
    pub async fn announce(&self, user: &str, online: bool, last_seen: Option<Timestamp>) {
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
        // Counted and logged by `publish`; partners see it on their next status lookup.
        let _ = self.publish(Audience::Users(partners), &ServerEvent::UserStatus(&status)).await;
    }

    /// Forgets this node's sockets that no longer exist and announces users that went offline
    /// by it (bounds how long a socket that closed in a race with its own connect is counted).
    pub async fn sweep_presence(&self) {
        let live = self.fanout.local_socket_ids();
        self.fanout.retain(&live).await;
        for (user, t) in self.presence.sweep(&live).await {
            if let Transition::Offline(at) = t {
                self.announce(&user, false, Some(at)).await;
            }
        }
    }

    /// Re-asserts this node's users (well inside the TTL), then reaps nodes that stopped doing
    /// so and announces their users that are now offline everywhere.
    pub async fn refresh_presence(&self) {
        if let Err(e) = self.presence.refresh().await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
        match self.presence.backend().reap().await {
            Ok(gone) => {
                for (user, t) in gone {
                    self.announce(&user, false, Some(t)).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence reaping failed"),
        }
    }

    /// This node is going away: make it look dead so that a survivor reaps its users and
    /// announces those not reconnected elsewhere.
    pub async fn leave_presence(&self) {
        if let Err(e) = self.presence.backend().leave().await {
            tracing::warn!(error = %e, "presence leave failed; entries expire with the TTL");
        }
    }
}
