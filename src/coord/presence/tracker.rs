//! Tracks this node's sockets per user and tells the presence backend only when a user's first
//! socket on this node appears or the last one goes. Transitions of one user are serialised by a
//! per-user lock, so a quick disconnect/reconnect cannot leave the backend saying "offline".
//!
//! Sockets are tracked by id, not counted: a disconnect can be reported before its connect.
//! Such a socket is remembered as gone and its late connect is ignored, instead of leaving a
//! user "online" with no socket. [`PresenceTracker::sweep`] reconciles with the sockets that
//! really exist, so no path (a handshake that died half-way, a lost handler) leaves a ghost.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use dashmap::DashMap;
use tokio::{sync::Mutex, time::Instant};

use crate::chat::model::Timestamp;
use crate::coord::{CoordResult, PresenceBackend};

/// What a socket event did to a user's cluster-wide presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    None,
    Online,
    Offline(Timestamp),
}

/// Sockets younger than this are not swept: they may not be listed by socketioxide yet.
/// Measured on tokio's clock, so a paused test clock ages them.
pub const SWEEP_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Slot {
    /// Socket id → when it was reported.
    sockets: HashMap<String, Instant>,
    /// Disconnected before their connect was reported (kept until then, or swept).
    gone: HashMap<String, Instant>,
}

pub struct PresenceTracker {
    backend: Arc<dyn PresenceBackend>,
    users: DashMap<String, Arc<Mutex<Slot>>>,
}

impl PresenceTracker {
    pub fn new(backend: Arc<dyn PresenceBackend>) -> Self {
        Self { backend, users: DashMap::new() }
    }

    pub fn backend(&self) -> &Arc<dyn PresenceBackend> {
        &self.backend
    }

    fn slot(&self, user: &str) -> Arc<Mutex<Slot>> {
        self.users.entry(user.to_owned()).or_default().clone()
    }

    /// Drops the user's entry when it is empty and nobody else holds it (the map + the caller).
    fn release(&self, user: &str, slot: &Slot) {
        if slot.sockets.is_empty() && slot.gone.is_empty() {
            self.users.remove_if(user, |_, v| Arc::strong_count(v) == 2);
        }
    }

    /// Sockets of `user` on this node now.
    pub async fn local_sockets(&self, user: &str) -> usize {
        let Some(slot) = self.users.get(user).map(|s| s.clone()) else { return 0 };
        slot.lock().await.sockets.len()
    }

    pub async fn socket_connected(&self, user: &str, socket: &str) -> CoordResult<Transition> {
        let slot = self.slot(user);
        let mut s = slot.lock().await;
        if s.gone.remove(socket).is_some() {
            self.release(user, &s);
            return Ok(Transition::None);
        }
        s.sockets.insert(socket.to_owned(), Instant::now());
        if s.sockets.len() > 1 {
            return Ok(Transition::None);
        }
        match self.backend.add(user).await {
            Ok(true) => Ok(Transition::Online),
            Ok(false) => Ok(Transition::None),
            Err(e) => {
                // Forget it, so the next socket tries again.
                s.sockets.remove(socket);
                self.release(user, &s);
                Err(e)
            }
        }
    }

    pub async fn socket_disconnected(&self, user: &str, socket: &str) -> CoordResult<Transition> {
        let slot = self.slot(user);
        let mut s = slot.lock().await;
        if s.sockets.remove(socket).is_none() {
            s.gone.insert(socket.to_owned(), Instant::now());
            return Ok(Transition::None);
        }
        if !s.sockets.is_empty() {
            return Ok(Transition::None);
        }
        let res = self.backend.remove(user).await;
        self.release(user, &s);
        drop(s);
        match res? {
            Some(t) => Ok(Transition::Offline(t)),
            None => Ok(Transition::None),
        }
    }

    /// Forgets tracked sockets that are not `live` on this node any more (older than a grace
    /// period) and stale "gone" marks; returns the users this made go offline.
    pub async fn sweep(&self, live: &HashSet<String>) -> Vec<(String, Transition)> {
        let candidates: Vec<(String, Vec<String>)> = self
            .users
            .iter()
            .filter_map(|e| {
                let s = e.value().try_lock().ok()?;
                let dead: Vec<String> = s
                    .sockets
                    .iter()
                    .filter(|(id, t)| t.elapsed() > SWEEP_GRACE && !live.contains(*id))
                    .map(|(id, _)| id.clone())
                    .collect();
                let stale_marks = s.gone.values().any(|t| t.elapsed() > SWEEP_GRACE);
                (!dead.is_empty() || stale_marks).then(|| (e.key().clone(), dead))
            })
            .collect();
        let mut out = Vec::new();
        for (user, dead) in candidates {
            {
                let slot = self.slot(&user);
                let mut s = slot.lock().await;
                s.gone.retain(|_, t| t.elapsed() <= SWEEP_GRACE);
                self.release(&user, &s);
            }
            for sid in dead {
                tracing::warn!(user = %user, socket = %sid, "sweeping a socket that no longer exists");
                match self.socket_disconnected(&user, &sid).await {
                    Ok(Transition::None) => {}
                    Ok(t) => out.push((user.clone(), t)),
                    Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
                }
            }
        }
        out
    }

    /// Users with at least one socket on this node.
    pub fn local_users(&self) -> Vec<String> {
        self.users
            .iter()
            .filter(|e| e.value().try_lock().map(|s| !s.sockets.is_empty()).unwrap_or(true))
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
    use crate::coord::presence::local::LocalPresence;

    fn tracker() -> PresenceTracker {
        PresenceTracker::new(Arc::new(LocalPresence::default()))
    }

    #[tokio::test]
    async fn first_and_last_socket_make_transitions() {
        let t = tracker();
        assert_eq!(t.socket_connected("u", "s1").await.unwrap(), Transition::Online);
        assert_eq!(t.socket_connected("u", "s2").await.unwrap(), Transition::None);
        assert_eq!(t.socket_disconnected("u", "s1").await.unwrap(), Transition::None);
        assert!(matches!(t.socket_disconnected("u", "s2").await.unwrap(), Transition::Offline(_)));
        assert!(t.local_users().is_empty());
        assert!(t.users.is_empty(), "empty entries are dropped");
    }

    #[tokio::test]
    async fn sweep_removes_sockets_that_no_longer_exist() {
        let t = tracker();
        t.socket_connected("u", "s1").await.unwrap();
        t.socket_connected("v", "s2").await.unwrap();
        let live: HashSet<String> = ["s2".to_owned()].into();
        assert!(t.sweep(&live).await.is_empty(), "young sockets are left alone");
        // Age the entries instead of waiting out the grace period.
        for e in t.users.iter() {
            let mut s = e.value().try_lock().unwrap();
            for v in s.sockets.values_mut() {
                *v -= SWEEP_GRACE * 2;
            }
        }
        let gone = t.sweep(&live).await;
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "u");
        assert!(matches!(gone[0].1, Transition::Offline(_)));
        assert_eq!(t.local_users(), vec!["v".to_owned()]);
    }

    #[tokio::test]
    async fn a_disconnect_reported_before_its_connect_leaves_no_ghost() {
        let t = tracker();
        assert_eq!(t.socket_disconnected("u", "s1").await.unwrap(), Transition::None);
        assert_eq!(t.socket_connected("u", "s1").await.unwrap(), Transition::None);
        assert!(t.local_users().is_empty());
        let s = t.backend().status(&["u".into()]).await.unwrap();
        assert!(!s[0].online, "user must not be online with no socket");
        assert!(t.users.is_empty());
        // Reporting the same disconnect twice is harmless too.
        assert_eq!(t.socket_connected("u", "s2").await.unwrap(), Transition::Online);
        assert!(matches!(t.socket_disconnected("u", "s2").await.unwrap(), Transition::Offline(_)));
    }
}
