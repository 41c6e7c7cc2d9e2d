//! Cluster-wide rate limits: GCRA in one Lua script per hit (one key per subject, TTL = the
//! time until the budget is full again): `P:rl:KIND:{SUBJECT}` (see
//! [`crate::coord::redis::keys`]), one key per script, declared, so any Redis Cluster shard
//! runs it. Redis' own clock, so node clocks do not matter.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{prelude::Client, types::scripts::Script};

use crate::{
    coord::{CoordError, CoordResult, LimitKind, Quota, RateLimiter, redis::keys},
    telemetry::metrics::redis_op,
};

/// KEYS[1] state; ARGV interval ms, burst. Returns 0 (allowed) or ms to wait.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1)
return 0
"#;

pub struct RedisRateLimiter {
    client: Client,
    prefix: Arc<str>,
    script: Script,
    quotas: HashMap<LimitKind, Quota>,
}

impl RedisRateLimiter {
    pub fn new(client: Client, prefix: &str, quotas: &[(LimitKind, Quota)]) -> Self {
        Self { client, prefix: prefix.into(), script: Script::from_lua(GCRA), quotas: quotas.iter().copied().collect() }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, kind: LimitKind, key: &str) -> CoordResult<Result<(), Duration>> {
        let Some(q) = self.quotas.get(&kind) else { return Ok(Ok(())) };
        let interval_ms = (q.window.as_millis() as u64 / u64::from(q.limit.max(1))).max(1);
        let k = keys::rate(&self.prefix, kind.name(), key);
        let wait: u64 = redis_op(
            "rate_limit",
            self.script.evalsha_with_reload(&self.client, k, vec![interval_ms, u64::from(q.limit)]),
        )
        .await
        .map_err(CoordError::from)?;
        Ok(if wait == 0 { Ok(()) } else { Err(Duration::from_millis(wait)) })
    }
}
