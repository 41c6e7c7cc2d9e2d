//! Per-user cached views tagged with view versions, in this process (the embedded default).

use std::time::Instant;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Cache, CacheKind};
use crate::{coord::CoordResult, store::ViewVersion};

struct Entry {
    version: ViewVersion,
    value: String,
    expires: Instant,
}

/// Entries above this: the next put sweeps the expired ones, and starts over if that is not
/// enough (a forgotten entry only costs one rebuild).
const LOCAL_CACHE_MAX_ENTRIES: usize = 50_000;

/// Cached views, in memory: one entry per (kind, user, variant).
#[derive(Default)]
pub struct LocalCache {
    entries: DashMap<(CacheKind, String, String), Entry>,
}

#[async_trait]
impl Cache for LocalCache {
    async fn get(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
    ) -> CoordResult<Option<String>> {
        let key = (kind, user.to_owned(), variant.to_owned());
        Ok(self
            .entries
            .get(&key)
            .filter(|e| e.version == version && e.expires > Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
        value: String,
    ) -> CoordResult<()> {
        if value.len() > crate::limits::CACHE_MAX_VALUE_BYTES {
            return Ok(());
        }
        if self.entries.len() >= LOCAL_CACHE_MAX_ENTRIES {
            let t = Instant::now();
            self.entries.retain(|_, e| e.expires > t);
            if self.entries.len() >= LOCAL_CACHE_MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let entry = Entry { version, value, expires: Instant::now() + kind.ttl() };
        self.entries.insert((kind, user.to_owned(), variant.to_owned()), entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_is_served_only_under_the_version_it_was_put_with() {
        let c = LocalCache::default();
        assert!(c.get(CacheKind::Unread, "u", "", 1).await.unwrap().is_none());
        c.put(CacheKind::Unread, "u", "", 1, "v1".into()).await.unwrap();
        assert_eq!(c.get(CacheKind::Unread, "u", "", 1).await.unwrap().as_deref(), Some("v1"));
        // A write moved the version on: the old value is a miss, whatever is stored.
        assert!(c.get(CacheKind::Unread, "u", "", 2).await.unwrap().is_none());
        assert!(c.get(CacheKind::Conversations, "u", "", 1).await.unwrap().is_none(), "kinds are apart");
        assert!(c.get(CacheKind::Unread, "w", "", 1).await.unwrap().is_none(), "users are apart");
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let c = LocalCache::default();
        for i in 0..LOCAL_CACHE_MAX_ENTRIES + 10 {
            c.put(CacheKind::Unread, &i.to_string(), "", 1, "x".into()).await.unwrap();
        }
        assert!(c.entries.len() <= LOCAL_CACHE_MAX_ENTRIES);
    }
}
