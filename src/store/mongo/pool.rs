//! `chat_db_pool_connections{state="active"|"idle"|"max"}` from the driver's connection pool
//! (CMAP) events. Connections are tracked by (server, connection id) rather than counted, so a
//! missed or repeated event cannot drift the gauges. `active`/`idle` sum over every server's
//! pool; `max` is `maxPoolSize`, which applies per server (and so to the primary, where all our
//! operations go).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use mongodb::event::{EventHandler, cmap::CmapEvent};

use crate::telemetry::metrics::DB_POOL_CONNECTIONS;

type ConnKey = (String, u32);

/// What a CMAP event changes, for the connections we count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PoolChange {
    Created(ConnKey),
    Closed(ConnKey),
    CheckedOut(ConnKey),
    CheckedIn(ConnKey),
    /// A server's pool went away (server removed, client shut down): forget its connections.
    PoolClosed(String),
}

impl PoolChange {
    fn from_event(e: &CmapEvent) -> Option<Self> {
        Some(match e {
            CmapEvent::ConnectionCreated(e) => Self::Created((e.address.to_string(), e.connection_id)),
            CmapEvent::ConnectionClosed(e) => Self::Closed((e.address.to_string(), e.connection_id)),
            CmapEvent::ConnectionCheckedOut(e) => Self::CheckedOut((e.address.to_string(), e.connection_id)),
            CmapEvent::ConnectionCheckedIn(e) => Self::CheckedIn((e.address.to_string(), e.connection_id)),
            CmapEvent::PoolClosed(e) => Self::PoolClosed(e.address.to_string()),
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct PoolState {
    open: HashSet<ConnKey>,
    in_use: HashSet<ConnKey>,
}

impl PoolState {
    pub fn apply(&mut self, change: PoolChange) {
        match change {
            PoolChange::Created(k) => {
                self.open.insert(k);
            }
            PoolChange::Closed(k) => {
                self.in_use.remove(&k);
                self.open.remove(&k);
            }
            PoolChange::CheckedOut(k) => {
                self.open.insert(k.clone());
                self.in_use.insert(k);
            }
            PoolChange::CheckedIn(k) => {
                self.in_use.remove(&k);
            }
            PoolChange::PoolClosed(addr) => {
                self.open.retain(|(a, _)| *a != addr);
                self.in_use.retain(|(a, _)| *a != addr);
            }
        }
    }

    /// (active, idle)
    pub fn counts(&self) -> (usize, usize) {
        (self.in_use.len(), self.open.len().saturating_sub(self.in_use.len()))
    }
}

/// Keeps the pool gauges current; the handler goes into `ClientOptions::cmap_event_handler`.
pub(super) struct PoolMetrics {
    state: Mutex<PoolState>,
}

impl PoolMetrics {
    pub fn new(max_pool_size: u32) -> Arc<Self> {
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "max").set(f64::from(max_pool_size));
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "active").set(0.0);
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(0.0);
        Arc::new(Self { state: Mutex::new(PoolState::default()) })
    }

    pub fn handler(self: &Arc<Self>) -> EventHandler<CmapEvent> {
        let me = self.clone();
        EventHandler::callback(move |e: CmapEvent| me.observe(&e))
    }

    fn observe(&self, e: &CmapEvent) {
        let Some(change) = PoolChange::from_event(e) else { return };
        // A poisoned lock only means another callback panicked mid-update; the sets stay usable.
        let (active, idle) = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.apply(change);
            s.counts()
        };
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "active").set(active as f64);
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(addr: &str, id: u32) -> ConnKey {
        (addr.to_owned(), id)
    }

    #[test]
    fn counts_follow_the_connection_lifecycle() {
        let mut s = PoolState::default();
        s.apply(PoolChange::Created(k("a:27017", 1)));
        s.apply(PoolChange::Created(k("a:27017", 2)));
        assert_eq!(s.counts(), (0, 2));
        s.apply(PoolChange::CheckedOut(k("a:27017", 1)));
        assert_eq!(s.counts(), (1, 1));
        s.apply(PoolChange::CheckedIn(k("a:27017", 1)));
        assert_eq!(s.counts(), (0, 2));
        s.apply(PoolChange::Closed(k("a:27017", 2)));
        assert_eq!(s.counts(), (0, 1));
    }

    #[test]
    fn closing_a_checked_out_connection_or_a_pool_leaves_no_ghosts() {
        let mut s = PoolState::default();
        s.apply(PoolChange::Created(k("a:1", 1)));
        s.apply(PoolChange::CheckedOut(k("a:1", 1)));
        s.apply(PoolChange::Closed(k("a:1", 1)));
        assert_eq!(s.counts(), (0, 0));
        // Repeated / out-of-order events do not drift.
        s.apply(PoolChange::CheckedIn(k("a:1", 1)));
        s.apply(PoolChange::Closed(k("a:1", 1)));
        assert_eq!(s.counts(), (0, 0));
        for id in 1..=3 {
            s.apply(PoolChange::Created(k("b:1", id)));
            s.apply(PoolChange::Created(k("c:1", id)));
        }
        s.apply(PoolChange::CheckedOut(k("b:1", 1)));
        s.apply(PoolChange::CheckedOut(k("c:1", 1)));
        assert_eq!(s.counts(), (2, 4));
        s.apply(PoolChange::PoolClosed("b:1".into()));
        assert_eq!(s.counts(), (1, 2));
    }
}
