//! Cached conversation lists and unread counts in Redis, tagged with the user's view version
//! (see `crate::coord::cache`): `P:cache:{u:USER}:KIND:VARIANT` holds `VERSION\nJSON` with the
//! kind's TTL (see [`crate::coord::redis::keys`]). One key per view, not per version: a newer
//! put overwrites the older value instead of leaving it to expire.
//!
//! A read is one `GET`, a put one `SET … EX`; writes send nothing here (the version lives in
//! the store).

use std::sync::Arc;

use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface},
    types::Expiration,
};

use crate::{
    coord::{Cache, CacheKind, CoordError, CoordResult, redis::keys},
    store::ViewVersion,
    telemetry::metrics::redis_op,
};

pub struct RedisCache {
    client: Client,
    prefix: Arc<str>,
}

impl RedisCache {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.into() }
    }
}

/// `VERSION\nJSON` → the JSON if `VERSION` is `version`.
fn value_under(stored: Option<String>, version: ViewVersion) -> Option<String> {
    let stored = stored?;
    let (v, json) = stored.split_once('\n')?;
    (v.parse::<ViewVersion>().ok()? == version).then(|| json.to_owned())
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
    ) -> CoordResult<Option<String>> {
        let key = keys::cached(&self.prefix, user, kind.name(), variant);
        let stored: Option<String> = redis_op("cache_get", self.client.get(key)).await.map_err(CoordError::from)?;
        Ok(value_under(stored, version))
    }

    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
        value: String,
    ) -> CoordResult<()> {
        // A view this large is cheaper to rebuild than to hold in Redis (bounded memory per user).
        if value.len() > crate::limits::CACHE_MAX_VALUE_BYTES {
            return Ok(());
        }
        let key = keys::cached(&self.prefix, user, kind.name(), variant);
        let ttl = Some(Expiration::EX(kind.ttl().as_secs() as i64));
        let _: () = redis_op("cache_put", self.client.set(key, format!("{version}\n{value}"), ttl, None, false))
            .await
            .map_err(CoordError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_version_read_is_a_hit() {
        use super::value_under;
        assert_eq!(value_under(Some("42\n{\"a\":1}".into()), 42).as_deref(), Some("{\"a\":1}"));
        assert_eq!(value_under(Some("41\n{}".into()), 42), None);
        assert_eq!(value_under(Some("garbage".into()), 42), None);
        assert_eq!(value_under(Some("x\n{}".into()), 0), None);
        assert_eq!(value_under(None, 0), None);
    }
}
