//! Counts this node's sockets per user and tells the presence backend only when a user's first
//! socket on this node appears or the last one goes. Transitions of one user are serialised by a
//! per-user lock, so a quick disconnect/reconnect cannot leave the backend saying "offline".

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Mutex;

use super::{CoordResult, PresenceBackend};
use crate::chat::model::Timestamp;

/// What a socket event did to a user's cluster-wide presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    None,
    Online,
    Offline(Timestamp),
}

pub struct PresenceTracker {
    backend: Arc<dyn PresenceBackend>,
    sockets: DashMap<String, Arc<Mutex<usize>>>,
}

impl PresenceTracker {
    pub fn new(backend: Arc<dyn PresenceBackend>) -> Self {
        Self { backend, sockets: DashMap::new() }
    }

    pub fn backend(&self) -> &Arc<dyn PresenceBackend> {
        &self.backend
    }

    fn slot(&self, user: &str) -> Arc<Mutex<usize>> {
        self.sockets.entry(user.to_owned()).or_default().clone()
    }

    pub async fn socket_connected(&self, user: &str) -> CoordResult<Transition> {
        let slot = self.slot(user);
        let mut n = slot.lock().await;
        *n += 1;
        if *n == 1 {
            // Undo the count if the backend failed, so the next socket tries again.
            match self.backend.add(user).await {
                Ok(true) => Ok(Transition::Online),
                Ok(false) => Ok(Transition::None),
                Err(e) => {
                    *n -= 1;
                    Err(e)
                }
            }
        } else {
            Ok(Transition::None)
        }
    }

    pub async fn socket_disconnected(&self, user: &str) -> CoordResult<Transition> {
        let slot = self.slot(user);
        let mut n = slot.lock().await;
        if *n == 0 {
            return Ok(Transition::None);
        }
        *n -= 1;
        if *n > 0 {
            return Ok(Transition::None);
        }
        let res = self.backend.remove(user).await;
        // Drop the entry when nobody else holds the slot (the map's reference and ours).
        self.sockets.remove_if(user, |_, v| Arc::strong_count(v) == 2);
        drop(n);
        match res? {
            Some(t) => Ok(Transition::Offline(t)),
            None => Ok(Transition::None),
        }
    }

    /// Users with at least one socket on this node.
    pub fn local_users(&self) -> Vec<String> {
        self.sockets
            .iter()
            .filter(|e| e.value().try_lock().map(|n| *n > 0).unwrap_or(true))
            .map(|e| e.key().clone())
            .collect()
    }

    pub async fn refresh(&self) -> CoordResult<()> {
        let users = self.local_users();
        self.backend.refresh(&users).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::local::LocalPresence;

    #[tokio::test]
    async fn first_and_last_socket_make_transitions() {
        let t = PresenceTracker::new(Arc::new(LocalPresence::default()));
        assert_eq!(t.socket_connected("u").await.unwrap(), Transition::Online);
        assert_eq!(t.socket_connected("u").await.unwrap(), Transition::None);
        assert_eq!(t.socket_disconnected("u").await.unwrap(), Transition::None);
        assert!(matches!(t.socket_disconnected("u").await.unwrap(), Transition::Offline(_)));
        assert_eq!(t.socket_disconnected("u").await.unwrap(), Transition::None);
        assert!(t.local_users().is_empty());
    }
}
