//! Cluster-wide presence in Redis with TTL'd entries that live nodes refresh.
//!
//! `P:presence:{user}` is a zset of node → expiry (ms); a user is online while any member's
//! expiry is in the future. Live nodes re-assert their users and their own heartbeat in
//! `P:nodes` every TTL/3. A node whose heartbeat expired (crashed) is reaped by whichever
//! survivor removes it from `P:nodes` first (ZREM returns 1 once): its users lose that member
//! and those left with none are announced offline. Every script uses Redis' clock.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{
    prelude::{Client, SortedSetsInterface},
    types::scripts::Script,
};

use crate::{
    chat::model::{Timestamp, from_millis},
    coord::{CoordError, CoordResult, PresenceBackend, UserStatus},
    telemetry::metrics::redis_op,
};

const NOW: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// ARGV: prefix, node, ttl ms, user. Returns live members before (0 = came online).
const ADD: &str = r#"
local p, node, ttl, user = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local key = p .. ':presence:' .. user
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local before = redis.call('ZCOUNT', key, now, '+inf')
redis.call('ZADD', key, now + ttl, node)
redis.call('PEXPIRE', key, ttl)
redis.call('SADD', p .. ':node:' .. node .. ':users', user)
redis.call('ZADD', p .. ':nodes', now + ttl, node)
return before
"#;

/// ARGV: prefix, node, user. Returns the lastSeen ms if the user is now offline, else 0.
const REMOVE: &str = r#"
local p, node, user = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':presence:' .. user
local removed = redis.call('ZREM', key, node)
redis.call('SREM', p .. ':node:' .. node .. ':users', user)
if removed == 1 and redis.call('ZCOUNT', key, now, '+inf') == 0 then
  redis.call('SET', p .. ':lastseen:' .. user, now, 'PX', 2592000000)
  return now
end
return 0
"#;

/// ARGV: prefix, node, ttl ms, users…: re-asserts this node's users and heartbeat.
const REFRESH: &str = r#"
local p, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local set = p .. ':node:' .. node .. ':users'
for i = 4, #ARGV do
  local key = p .. ':presence:' .. ARGV[i]
  redis.call('ZADD', key, now + ttl, node)
  redis.call('PEXPIRE', key, ttl)
  redis.call('SADD', set, ARGV[i])
end
redis.call('PEXPIRE', set, ttl * 10)
redis.call('ZADD', p .. ':nodes', now + ttl, node)
return 1
"#;

/// ARGV: prefix, node. Reaps nodes whose heartbeat expired; returns {user, lastSeen, …} of
/// users now offline.
const REAP: &str = r#"
local p, me = ARGV[1], ARGV[2]
local out = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', p .. ':nodes', '-inf', now)) do
  if dead ~= me and redis.call('ZREM', p .. ':nodes', dead) == 1 then
    local set = p .. ':node:' .. dead .. ':users'
    for _, user in ipairs(redis.call('SMEMBERS', set)) do
      local key = p .. ':presence:' .. user
      redis.call('ZREM', key, dead)
      if redis.call('ZCOUNT', key, now, '+inf') == 0 then
        redis.call('SET', p .. ':lastseen:' .. user, now, 'PX', 2592000000)
        table.insert(out, user)
        table.insert(out, tostring(now))
      end
    end
    redis.call('DEL', set)
  end
end
return out
"#;

/// ARGV: prefix, users…. Returns {online(0/1), lastSeen|'' , …}.
const STATUS: &str = r#"
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  table.insert(out, redis.call('ZCOUNT', p .. ':presence:' .. ARGV[i], now, '+inf'))
  table.insert(out, redis.call('GET', p .. ':lastseen:' .. ARGV[i]) or '')
end
return out
"#;

pub struct RedisPresence {
    client: Client,
    prefix: Arc<str>,
    node: Arc<str>,
    ttl_ms: u64,
    add: Script,
    remove: Script,
    refresh: Script,
    reap: Script,
    status: Script,
}

fn script(body: &str) -> Script {
    Script::from_lua(format!("{NOW}{body}"))
}

impl RedisPresence {
    pub fn new(client: Client, prefix: &str, node: &str, ttl: Duration) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            node: node.into(),
            ttl_ms: ttl.as_millis() as u64,
            add: script(ADD),
            remove: script(REMOVE),
            refresh: script(REFRESH),
            reap: script(REAP),
            status: script(STATUS),
        }
    }
}

#[async_trait]
impl PresenceBackend for RedisPresence {
    async fn add(&self, user: &str) -> CoordResult<bool> {
        let args = vec![self.prefix.to_string(), self.node.to_string(), self.ttl_ms.to_string(), user.to_owned()];
        let before: i64 =
            redis_op("presence_add", self.add.evalsha_with_reload(&self.client, Vec::<String>::new(), args))
                .await
                .map_err(CoordError::from)?;
        Ok(before == 0)
    }

    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>> {
        let args = vec![self.prefix.to_string(), self.node.to_string(), user.to_owned()];
        let t: i64 =
            redis_op("presence_remove", self.remove.evalsha_with_reload(&self.client, Vec::<String>::new(), args))
                .await
                .map_err(CoordError::from)?;
        Ok((t > 0).then(|| from_millis(t)))
    }

    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(users.len() + 1);
        args.push(self.prefix.to_string());
        args.extend(users.iter().cloned());
        let flat: Vec<fred::types::Value> =
            redis_op("presence_status", self.status.evalsha_with_reload(&self.client, Vec::<String>::new(), args))
                .await
                .map_err(CoordError::from)?;
        Ok(users
            .iter()
            .zip(flat.chunks(2))
            .map(|(u, pair)| UserStatus {
                user_id: u.clone(),
                online: pair[0].as_i64().unwrap_or(0) > 0,
                last_seen: pair.get(1).and_then(|v| v.as_string()).and_then(|s| s.parse().ok()).map(from_millis),
            })
            .collect())
    }

    async fn refresh(&self, users: &[String]) -> CoordResult<()> {
        // Batches keep each script short; the heartbeat is written by every batch.
        for chunk in users.chunks(1000).chain(users.is_empty().then_some(&[][..])) {
            let mut args = vec![self.prefix.to_string(), self.node.to_string(), self.ttl_ms.to_string()];
            args.extend(chunk.iter().cloned());
            let _: i64 = redis_op(
                "presence_refresh",
                self.refresh.evalsha_with_reload(&self.client, Vec::<String>::new(), args),
            )
            .await
            .map_err(CoordError::from)?;
        }
        Ok(())
    }

    async fn leave(&self) -> CoordResult<()> {
        let key = format!("{}:nodes", self.prefix);
        let _: () =
            redis_op("presence_leave", self.client.zadd(key, None, None, false, false, (0.0, self.node.to_string())))
                .await
                .map_err(CoordError::from)?;
        Ok(())
    }

    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>> {
        let args = vec![self.prefix.to_string(), self.node.to_string()];
        let flat: Vec<String> =
            redis_op("presence_reap", self.reap.evalsha_with_reload(&self.client, Vec::<String>::new(), args))
                .await
                .map_err(CoordError::from)?;
        Ok(flat.chunks(2).filter_map(|c| Some((c.first()?.clone(), from_millis(c.get(1)?.parse().ok()?)))).collect())
    }
}
