//! A fan-out that records what was published instead of sending it: unit tests of the domain
//! run without a Socket.IO server and assert on exactly what each operation published.

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;

use super::{Audience, Fanout, FanoutError, ServerEvent};

/// One published event: audience, event name, payload as it would go on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub to: Audience,
    pub event: &'static str,
    pub data: Value,
}

#[derive(Default)]
pub struct MemoryFanout {
    log: Mutex<Vec<Published>>,
    published: Notify,
    failing: AtomicBool,
    closed: AtomicBool,
}

impl MemoryFanout {
    /// Everything published so far, oldest first (and forgets it).
    pub fn take(&self) -> Vec<Published> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes every later publish fail (as an unreachable Redis would), or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Resolves once at least `n` events are recorded (for events published by timers).
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.published.notified();
            if self.log.lock().unwrap_or_else(|e| e.into_inner()).len() >= n {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Fanout for MemoryFanout {
    async fn publish(&self, to: Audience, event: &ServerEvent<'_>) -> Result<(), FanoutError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(FanoutError("node is shutting down".into()));
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(FanoutError("recording fan-out set to fail".into()));
        }
        let data = serde_json::to_value(event).map_err(|e| FanoutError(e.to_string()))?;
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(Published { to, event: event.name(), data });
        self.published.notify_waiters();
        Ok(())
    }

    fn local_socket_ids(&self) -> HashSet<String> {
        HashSet::new()
    }

    async fn close(&self, _within: Duration) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
