//! Cached conversation lists and unread counts in Redis, with per-user generations (see
//! `crate::coord::cache`). Per user, in one Redis Cluster slot (`{u:USER}`, see
//! [`crate::coord::redis::keys`]):
//! - `P:gen:{u:USER}`: a fresh random value on every write that affects the user (one
//!   `SET … EX`; kept a day, far longer than any value);
//! - `P:cache:{u:USER}:KIND:VARIANT`: `GEN\nJSON`, the value and the generation it was computed
//!   under, with the kind's TTL. One key per view (not per generation): a new generation's put
//!   overwrites the old value instead of leaving it to expire.
//!
//! A read is one `MGET` of both keys (same slot); a value whose generation is not the current
//! one is a miss. A put is one script over both keys that stores only while the generation it
//! read is still current.

use std::sync::Arc;

use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface},
    types::{Expiration, scripts::Script},
};

use crate::{
    coord::{Cache, CacheKind, CoordError, CoordResult, Generation, redis::keys},
    telemetry::metrics::redis_op,
};

/// KEYS: gen, value. ARGV: the generation read, value, ttl secs. Stores `gen\nvalue` only while
/// that generation is current.
const PUT: &str = r#"
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"#;

const GEN_TTL_SECS: i64 = 86_400;

pub struct RedisCache {
    client: Client,
    prefix: Arc<str>,
    put: Script,
}

impl RedisCache {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.into(), put: Script::from_lua(PUT) }
    }
}

/// `GEN\nJSON` → the JSON if `GEN` is `current`.
fn current_value(stored: Option<String>, current: &str) -> Option<String> {
    let stored = stored?;
    let (g, v) = stored.split_once('\n')?;
    (g == current).then(|| v.to_owned())
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, kind: CacheKind, user: &str, variant: &str) -> CoordResult<(Option<String>, Generation)> {
        let p = &self.prefix;
        let (g, v): (Option<String>, Option<String>) = redis_op(
            "cache_get",
            self.client.mget(vec![keys::generation(p, user), keys::cached(p, user, kind.name(), variant)]),
        )
        .await
        .map_err(CoordError::from)?;
        let g = g.unwrap_or_else(|| "0".into());
        let value = current_value(v, &g);
        Ok((value, g.parse().unwrap_or(0)))
    }

    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        gen_: Generation,
        value: String,
    ) -> CoordResult<()> {
        let p = &self.prefix;
        let keys = vec![keys::generation(p, user), keys::cached(p, user, kind.name(), variant)];
        let args = vec![gen_.to_string(), value, kind.ttl().as_secs().to_string()];
        let _: i64 = redis_op("cache_put", self.put.evalsha_with_reload(&self.client, keys, args))
            .await
            .map_err(CoordError::from)?;
        Ok(())
    }

    async fn invalidate(&self, users: &[&str]) -> CoordResult<()> {
        // A pipeline: on Redis Cluster fred sends each SET to its user's shard.
        let pipe = self.client.pipeline();
        for u in users {
            // Positive (Redis integers are signed) and never 0, the generation no write made.
            let fresh = (rand::random::<u64>() >> 1).max(1) as i64;
            let ttl = Some(Expiration::EX(GEN_TTL_SECS));
            let _: () =
                pipe.set(keys::generation(&self.prefix, u), fresh, ttl, None, false).await.map_err(CoordError::from)?;
        }
        redis_op("cache_invalidate", pipe.all::<Vec<fred::types::Value>>()).await.map_err(CoordError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_current_generation_is_a_hit() {
        use super::current_value;
        assert_eq!(current_value(Some("42\n{\"a\":1}".into()), "42").as_deref(), Some("{\"a\":1}"));
        assert_eq!(current_value(Some("41\n{}".into()), "42"), None);
        assert_eq!(current_value(Some("garbage".into()), "42"), None);
        assert_eq!(current_value(None, "0"), None);
    }
}
