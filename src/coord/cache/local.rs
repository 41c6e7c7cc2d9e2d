//! Per-user cached views with generations, in this process (the embedded default).

use std::{collections::HashMap, time::Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Cache, CacheKind, Generation};
use crate::coord::CoordResult;

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
