//! In-process presence, cache and rate limits for the single-node embedded default.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota as GQuota, clock::Clock};

use crate::chat::model::{Timestamp, now};
use crate::coord::{
    Cache, CacheKind, CoordResult, Generation, LimitKind, PresenceBackend, Quota, RateLimiter, UserStatus,
};

/// Presence on one node: online = held by this node.
#[derive(Default)]
pub struct LocalPresence {
    online: DashMap<String, ()>,
    last_seen: DashMap<String, Timestamp>,
}

#[async_trait]
impl PresenceBackend for LocalPresence {
    async fn add(&self, user: &str) -> CoordResult<bool> {
        Ok(self.online.insert(user.to_owned(), ()).is_none())
    }

    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>> {
        if self.online.remove(user).is_some() {
            let t = now();
            self.last_seen.insert(user.to_owned(), t);
            Ok(Some(t))
        } else {
            Ok(None)
        }
    }

    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>> {
        Ok(users
            .iter()
            .map(|u| UserStatus {
                user_id: u.clone(),
                online: self.online.contains_key(u),
                last_seen: self.last_seen.get(u).map(|t| *t),
            })
            .collect())
    }

    async fn refresh(&self, _users: &[String]) -> CoordResult<()> {
        Ok(())
    }

    async fn leave(&self) -> CoordResult<()> {
        self.online.clear();
        Ok(())
    }

    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>> {
        Ok(Vec::new())
    }
}

#[derive(Default)]
struct UserEntry {
    generation: Generation,
    items: HashMap<(CacheKind, String), (String, Instant)>,
}

/// Per-user cached views with generations, in memory.
#[derive(Default)]
pub struct LocalCache {
    users: DashMap<String, UserEntry>,
}

/// Entries above this are swept of expired items on the next put.
const LOCAL_CACHE_SWEEP_AT: usize = 50_000;

#[async_trait]
impl Cache for LocalCache {
    async fn get(&self, kind: CacheKind, user: &str, variant: &str) -> CoordResult<(Option<String>, Generation)> {
        let Some(e) = self.users.get(user) else { return Ok((None, 0)) };
        let hit =
            e.items.get(&(kind, variant.to_owned())).filter(|(_, exp)| *exp > Instant::now()).map(|(v, _)| v.clone());
        Ok((hit, e.generation))
    }

    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        gen_: Generation,
        value: String,
    ) -> CoordResult<()> {
        if self.users.len() > LOCAL_CACHE_SWEEP_AT {
            let t = Instant::now();
            self.users.retain(|_, e| {
                e.items.retain(|_, (_, exp)| *exp > t);
                !e.items.is_empty() || e.generation > 0
            });
        }
        let mut e = self.users.entry(user.to_owned()).or_default();
        if e.generation == gen_ {
            e.items.insert((kind, variant.to_owned()), (value, Instant::now() + kind.ttl()));
        }
        Ok(())
    }

    async fn invalidate(&self, users: &[&str]) -> CoordResult<()> {
        for u in users {
            let mut e = self.users.entry((*u).to_owned()).or_default();
            e.generation += 1;
            e.items.clear();
        }
        Ok(())
    }
}

/// GCRA limits per key through `governor`, one limiter per kind.
pub struct LocalRateLimiter {
    limiters: HashMap<LimitKind, Arc<DefaultKeyedRateLimiter<String>>>,
}

impl LocalRateLimiter {
    pub fn new(quotas: &[(LimitKind, Quota)]) -> Self {
        let limiters = quotas
            .iter()
            .map(|(kind, q)| {
                let burst = NonZeroU32::new(q.limit.max(1)).unwrap_or(NonZeroU32::MIN);
                let period = (q.window / q.limit.max(1)).max(Duration::from_nanos(1));
                let quota = GQuota::with_period(period).unwrap_or_else(|| GQuota::per_second(burst)).allow_burst(burst);
                (*kind, Arc::new(DefaultKeyedRateLimiter::keyed(quota)))
            })
            .collect();
        Self { limiters }
    }

    /// Forgets keys that are back to a full budget (bounded memory); run periodically.
    pub fn sweep(&self) {
        for l in self.limiters.values() {
            l.retain_recent();
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn hit(&self, kind: LimitKind, key: &str) -> CoordResult<Result<(), Duration>> {
        let Some(l) = self.limiters.get(&kind) else { return Ok(Ok(())) };
        Ok(l.check_key(&key.to_owned()).map_err(|nu| nu.wait_time_from(governor::clock::DefaultClock::default().now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cache_put_with_old_generation_is_ignored() {
        let c = LocalCache::default();
        let (v, g) = c.get(CacheKind::Unread, "u", "").await.unwrap();
        assert!(v.is_none());
        // A write lands between the reader's get and put:
        c.invalidate(&["u"]).await.unwrap();
        c.put(CacheKind::Unread, "u", "", g, "stale".into()).await.unwrap();
        let (v, g2) = c.get(CacheKind::Unread, "u", "").await.unwrap();
        assert!(v.is_none(), "a value computed before the write must not be served");
        c.put(CacheKind::Unread, "u", "", g2, "fresh".into()).await.unwrap();
        assert_eq!(c.get(CacheKind::Unread, "u", "").await.unwrap().0.as_deref(), Some("fresh"));
    }

    #[tokio::test]
    async fn rate_limit_allows_burst_then_limits() {
        let l = LocalRateLimiter::new(&[(LimitKind::Message, Quota { limit: 3, window: Duration::from_secs(30) })]);
        for _ in 0..3 {
            assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_ok());
        }
        let wait = l.hit(LimitKind::Message, "u").await.unwrap().unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(10), "{wait:?}");
        assert!(l.hit(LimitKind::Message, "other").await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn presence_transitions() {
        let p = LocalPresence::default();
        assert!(p.add("u").await.unwrap());
        assert!(!p.add("u").await.unwrap());
        assert!(p.remove("u").await.unwrap().is_some());
        let s = p.status(&["u".into()]).await.unwrap();
        assert!(!s[0].online && s[0].last_seen.is_some());
    }
}
