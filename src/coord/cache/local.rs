//! Per-user cached views with generations, in this process (the embedded default).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Cache, CacheKind, Generation};
use crate::coord::CoordResult;

struct UserEntry {
    generation: Generation,
    /// Last invalidation: an entry without items is kept this long after it (a reader's
    /// get → put spans one request), so a late put cannot land on a recreated generation 0.
    touched: Instant,
    items: HashMap<(CacheKind, String), (String, Instant)>,
}

impl Default for UserEntry {
    fn default() -> Self {
        Self { generation: 0, touched: Instant::now(), items: HashMap::new() }
    }
}

/// An emptied entry is forgotten this long after its last invalidation (well above any
/// request's get → put window, the REST timeout).
const KEEP_GENERATION: Duration = Duration::from_secs(120);
/// Items per user at most: callers only cache canonical variants (one conversation list, the
/// unread counts); this bounds a caller that would not.
const MAX_ITEMS_PER_USER: usize = 4;

/// Per-user cached views with generations, in memory.
#[derive(Default)]
pub struct LocalCache {
    users: DashMap<String, UserEntry>,
}

/// Users above this: the next put sweeps expired items and forgotten generations.
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
                !e.items.is_empty() || t.duration_since(e.touched) < KEEP_GENERATION
            });
        }
        if value.len() > crate::limits::CACHE_MAX_VALUE_BYTES {
            return Ok(());
        }
        let mut e = self.users.entry(user.to_owned()).or_default();
        if e.generation == gen_ {
            let key = (kind, variant.to_owned());
            if e.items.len() >= MAX_ITEMS_PER_USER && !e.items.contains_key(&key) {
                e.items.clear();
            }
            e.items.insert(key, (value, Instant::now() + kind.ttl()));
        }
        Ok(())
    }

    async fn invalidate(&self, users: &[&str]) -> CoordResult<()> {
        for u in users {
            let mut e = self.users.entry((*u).to_owned()).or_default();
            e.generation += 1;
            e.touched = Instant::now();
            e.items.clear();
        }
        Ok(())
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
}
