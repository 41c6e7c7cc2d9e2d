//! Cached conversation lists and unread counts in Redis, with per-user generations (see
//! `crate::coord::cache`): `P:gen:{user}` (a fresh random value on every write that affects the user,
//! one `SET … EX` where INCR + EXPIRE took two; kept a day, far longer than any value) and values
//! under `P:cache:{kind}:{user}:{gen}:{variant}`.

use std::sync::Arc;

use async_trait::async_trait;
use fred::{
    prelude::{Client, KeysInterface},
    types::{Expiration, scripts::Script},
};

use crate::{
    coord::{Cache, CacheKind, CoordError, CoordResult, Generation},
    telemetry::metrics::redis_op,
};

/// KEYS[1] gen key; ARGV value-key prefix and suffix. Returns {gen, value|false}.
const GET: &str = r#"
local g = redis.call('GET', KEYS[1]) or '0'
local v = redis.call('GET', ARGV[1] .. g .. ARGV[2])
return {g, v}
"#;

const GEN_TTL_SECS: i64 = 86_400;

pub struct RedisCache {
    client: Client,
    prefix: Arc<str>,
    get: Script,
}

impl RedisCache {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.into(), get: Script::from_lua(GET) }
    }

    fn gen_key(&self, user: &str) -> String {
        format!("{}:gen:{user}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, kind: CacheKind, user: &str, variant: &str) -> CoordResult<(Option<String>, Generation)> {
        let head = format!("{}:cache:{}:{user}:", self.prefix, kind.name());
        let tail = format!(":{variant}");
        let (g, v): (String, Option<String>) =
            redis_op("cache_get", self.get.evalsha_with_reload(&self.client, self.gen_key(user), vec![head, tail]))
                .await
                .map_err(CoordError::from)?;
        Ok((v, g.parse().unwrap_or(0)))
    }

    async fn put(
        &self,
        kind: CacheKind,
        user: &str,
        variant: &str,
        gen_: Generation,
        value: String,
    ) -> CoordResult<()> {
        let key = format!("{}:cache:{}:{user}:{gen_}:{variant}", self.prefix, kind.name());
        let ttl = Expiration::EX(kind.ttl().as_secs() as i64);
        redis_op("cache_put", self.client.set::<(), _, _>(key, value, Some(ttl), None, false))
            .await
            .map_err(CoordError::from)
    }

    async fn invalidate(&self, users: &[&str]) -> CoordResult<()> {
        let pipe = self.client.pipeline();
        for u in users {
            // Positive (Redis integers are signed) and never 0, the generation no write made.
            let fresh = (rand::random::<u64>() >> 1).max(1) as i64;
            let ttl = Some(Expiration::EX(GEN_TTL_SECS));
            let _: () = pipe.set(self.gen_key(u), fresh, ttl, None, false).await.map_err(CoordError::from)?;
        }
        redis_op("cache_invalidate", pipe.all::<Vec<fred::types::Value>>()).await.map_err(CoordError::from)?;
        Ok(())
    }
}
