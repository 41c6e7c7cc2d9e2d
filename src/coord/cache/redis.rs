//! Cached conversation lists and unread counts in Redis, with per-user generations (see
//! `crate::coord::cache`): `P:gen:{user}` (a fresh random value on every write that affects the user,
//! one `SET … EX` where INCR + EXPIRE took two; kept a day, far longer than any value) and one
//! value per (kind, user, variant) under `P:cache:{kind}:{user}:{variant}`, holding
//! `{gen}\n{value}`. One key per variant (not per generation), so a user who writes and
//! reads all the time still holds one key per cached view, overwritten, not one per write
//! until their TTLs run out. A put lands only while its generation is still current.

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

/// KEYS[1] gen key, KEYS[2] value key. Returns {gen, value|false}.
const GET: &str = r#"
local g = redis.call('GET', KEYS[1]) or '0'
local v = redis.call('GET', KEYS[2])
if v then
  local head = g .. '\n'
  if string.sub(v, 1, #head) == head then return {g, string.sub(v, #head + 1)} end
end
return {g, false}
"#;

/// KEYS[1] gen key, KEYS[2] value key; ARGV gen, value, ttl secs. Stores only under the
/// current generation.
const PUT: &str = r#"
local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. ARGV[2], 'EX', ARGV[3])
return 1
"#;

const GEN_TTL_SECS: i64 = 86_400;

pub struct RedisCache {
    client: Client,
    prefix: Arc<str>,
    get: Script,
    put: Script,
}

impl RedisCache {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.into(), get: Script::from_lua(GET), put: Script::from_lua(PUT) }
    }

    fn gen_key(&self, user: &str) -> String {
        format!("{}:gen:{user}", self.prefix)
    }

    fn value_key(&self, kind: CacheKind, user: &str, variant: &str) -> String {
        format!("{}:cache:{}:{user}:{variant}", self.prefix, kind.name())
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, kind: CacheKind, user: &str, variant: &str) -> CoordResult<(Option<String>, Generation)> {
        let keys = vec![self.gen_key(user), self.value_key(kind, user, variant)];
        let (g, v): (String, Option<String>) =
            redis_op("cache_get", self.get.evalsha_with_reload(&self.client, keys, Vec::<String>::new()))
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
        if value.len() > crate::limits::CACHE_MAX_VALUE_BYTES {
            return Ok(());
        }
        let keys = vec![self.gen_key(user), self.value_key(kind, user, variant)];
        let args = vec![gen_.to_string(), value, kind.ttl().as_secs().to_string()];
        let _: i64 = redis_op("cache_put", self.put.evalsha_with_reload(&self.client, keys, args))
            .await
            .map_err(CoordError::from)?;
        Ok(())
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
