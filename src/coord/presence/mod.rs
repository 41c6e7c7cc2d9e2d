//! Presence: who is online anywhere in the cluster.
//!
//! [`PresenceBackend`] keeps "this node holds ≥ 1 socket of user" cluster-wide: [`local`] in
//! this process, [`redis`] with TTL'd entries that live nodes refresh. [`PresenceTracker`]
//! counts this node's sockets per user and calls the backend only on a user's first and last
//! socket here.

use async_trait::async_trait;
use serde::Serialize;

use crate::{chat::model::Timestamp, coord::CoordResult};

pub mod local;
pub mod redis;
pub mod tracker;

pub use tracker::{PresenceTracker, Transition};

/// One user's presence as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    pub user_id: String,
    pub online: bool,
    #[serde(with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<Timestamp>,
}

mod opt_ts {
    use super::Timestamp;
    use serde::Serializer;
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::chat::model::rfc3339(t)),
            None => s.serialize_none(),
        }
    }
}

/// Cluster-wide presence, at the granularity of "this node holds ≥ 1 socket of user".
/// Socket counting per node is done by [`presence::PresenceTracker`].
#[async_trait]
pub trait PresenceBackend: Send + Sync + 'static {
    /// This node now holds the user; `true` if the user was offline everywhere before.
    async fn add(&self, user: &str) -> CoordResult<bool>;
    /// This node no longer holds the user; `Some(lastSeen)` if now offline everywhere.
    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>>;
    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>>;
    /// Re-asserts this node's users (called well inside the TTL).
    async fn refresh(&self, users: &[String]) -> CoordResult<()>;
    /// This node is going away: make it look dead so that a survivor reaps its users.
    async fn leave(&self) -> CoordResult<()>;
    /// Removes users held by nodes that stopped refreshing; returns those now offline.
    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>>;
}
