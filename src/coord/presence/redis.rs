//! Cluster-wide presence in Redis with TTL'd entries that live nodes refresh.
//!
//! `P:presence:{u:USER}` is a zset of node → expiry (ms); a user is online while any member's
//! expiry is in the future. The node registry lives in one slot (`{nodes}`): the heartbeats
//! `P:{nodes}:heartbeat` (node → expiry ms) and each node's users `P:{nodes}:users:NODE`
//! (see [`crate::coord::redis::keys`]). Live nodes re-assert their users and their heartbeat
//! every TTL/3. A node whose heartbeat expired (crashed) is reaped by whichever survivor
//! removes it from the heartbeats first (ZREM returns 1 once): its users lose that member and
//! those left with none are announced offline. Every script uses Redis' clock.
//!
//! Redis Cluster: every script touches the keys of one slot only, all declared in `KEYS[]`.
//! What spans slots is done in steps, ordered so that a crash between them errs on the side of
//! the TTLs: a node enlists a user in its registry set *before* writing the user's presence
//! (so a reaper always finds it), and removes it from the set *after*. A reaper that dies
//! between claiming a dead node and clearing its users' members loses only the `user_status`
//! offline announcement; the members have already expired, so status reads are right.
//! Multi-user steps (refresh, status, reap) are pipelined `EVAL`s of one user each (fred
//! routes each to its shard; `EVAL` rather than `EVALSHA` because a promoted replica has no
//! script cache).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{
    prelude::{Client, ClientLike, SetsInterface, SortedSetsInterface},
    types::{ClusterHash, CustomCommand, FromValue, scripts::Script},
};

use crate::{
    chat::model::{Timestamp, from_millis},
    coord::{CoordError, CoordResult, PresenceBackend, UserStatus, redis::keys},
    telemetry::metrics::redis_op,
};

const NOW: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// KEYS: presence. ARGV: node, ttl ms. Returns live members before (0 = came online).
const ADD: &str = r#"
local node, ttl = ARGV[1], tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCOUNT', KEYS[1], now, '+inf')
redis.call('ZADD', KEYS[1], now + ttl, node)
redis.call('PEXPIRE', KEYS[1], ttl)
return before
"#;

/// KEYS: presence, lastseen. ARGV: node. Returns the lastSeen ms if the user is now offline,
/// else 0.
const REMOVE: &str = r#"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('ZCOUNT', KEYS[1], now, '+inf') == 0 then
  redis.call('SET', KEYS[2], now, 'PX', 2592000000)
  return now
end
return 0
"#;

/// KEYS: presence. ARGV: node, ttl ms: re-asserts one user of this node.
const TOUCH: &str = r#"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"#;

/// KEYS: heartbeats, this node's user set. ARGV: node, ttl ms, users…: enlists users (maybe
/// none) and writes the heartbeat.
const ENLIST: &str = r#"
local node, ttl = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 500 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl * 10) end
redis.call('ZADD', KEYS[1], now + ttl, node)
return 1
"#;

/// KEYS: heartbeats, the dead node's user set. ARGV: dead node. Claims the node if its
/// heartbeat is still expired and nobody claimed it yet; returns its users (and deletes the set).
const CLAIM: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now or redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return {}
end
local users = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return users
"#;

/// KEYS: heartbeats. The nodes whose heartbeat expired.
const EXPIRED: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"#;

/// KEYS: presence, lastseen. ARGV: dead node. Returns the lastSeen ms if the user is now
/// offline, else 0.
const DROP: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCOUNT', KEYS[1], now, '+inf') == 0 then
  redis.call('SET', KEYS[2], now, 'PX', 2592000000)
  return now
end
return 0
"#;

/// KEYS: presence, lastseen. Returns {online count, lastSeen|''}.
const STATUS: &str = r#"
return {redis.call('ZCOUNT', KEYS[1], now, '+inf'), redis.call('GET', KEYS[2]) or ''}
"#;

/// Users per pipeline (and per `ENLIST` call).
const BATCH: usize = 1000;

pub struct RedisPresence {
    client: Client,
    prefix: Arc<str>,
    node: Arc<str>,
    ttl_ms: u64,
    add: Script,
    remove: Script,
    enlist: Script,
    claim: Script,
    expired: Script,
    heartbeats: String,
    my_users: String,
}

fn script(body: &str) -> Script {
    Script::from_lua(format!("{NOW}{body}"))
}

fn with_now(body: &str) -> String {
    format!("{NOW}{body}")
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
            enlist: script(ENLIST),
            claim: script(CLAIM),
            expired: script(EXPIRED),
            heartbeats: keys::heartbeats(prefix),
            my_users: keys::node_users(prefix, node),
        }
    }

    /// One `EVAL` per item, pipelined (each goes to its key's shard); results in order.
    async fn per_user<R: FromValue>(
        &self,
        body: &str,
        items: impl Iterator<Item = (Vec<String>, Vec<String>)>,
    ) -> Result<Vec<R>, fred::error::Error> {
        let body = with_now(body);
        let items: Vec<_> = items.collect();
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(BATCH) {
            let pipe = self.client.pipeline();
            for (keys, args) in chunk {
                // Pipelines have no Lua interface: `EVAL` as a custom command, routed (on
                // Redis Cluster) by its first key, at offset 2 after the body and key count.
                let cmd = CustomCommand::new("EVAL", ClusterHash::Offset(2), false);
                let mut argv: Vec<String> = Vec::with_capacity(2 + keys.len() + args.len());
                argv.push(body.clone());
                argv.push(keys.len().to_string());
                argv.extend(keys.iter().cloned());
                argv.extend(args.iter().cloned());
                let _: () = pipe.custom(cmd, argv).await?;
            }
            let results: Vec<fred::types::Value> = pipe.all().await?;
            for v in results {
                out.push(R::from_value(v)?);
            }
        }
        Ok(out)
    }

    async fn enlist_users(&self, users: &[String]) -> Result<(), fred::error::Error> {
        let mut args = vec![self.node.to_string(), self.ttl_ms.to_string()];
        args.extend(users.iter().cloned());
        self.enlist.evalsha_with_reload(&self.client, vec![self.heartbeats.clone(), self.my_users.clone()], args).await
    }
}

#[async_trait]
impl PresenceBackend for RedisPresence {
    async fn add(&self, user: &str) -> CoordResult<bool> {
        let p = &self.prefix;
        let before: i64 = redis_op("presence_add", async {
            // Registry first: a reaper must find every user whose presence names this node.
            self.enlist_users(&[user.to_owned()]).await?;
            self.add
                .evalsha_with_reload(
                    &self.client,
                    keys::presence(p, user),
                    vec![self.node.to_string(), self.ttl_ms.to_string()],
                )
                .await
        })
        .await
        .map_err(CoordError::from)?;
        Ok(before == 0)
    }

    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>> {
        let p = &self.prefix;
        let t: i64 = redis_op("presence_remove", async {
            let t: i64 = self
                .remove
                .evalsha_with_reload(
                    &self.client,
                    vec![keys::presence(p, user), keys::last_seen(p, user)],
                    vec![self.node.to_string()],
                )
                .await?;
            // Registry last (see the module header).
            let _: i64 = self.client.srem(&self.my_users, user).await?;
            Ok::<_, fred::error::Error>(t)
        })
        .await
        .map_err(CoordError::from)?;
        Ok((t > 0).then(|| from_millis(t)))
    }

    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let p = &self.prefix;
        let items = users.iter().map(|u| (vec![keys::presence(p, u), keys::last_seen(p, u)], Vec::new()));
        let flat: Vec<Vec<fred::types::Value>> =
            redis_op("presence_status", self.per_user(STATUS, items)).await.map_err(CoordError::from)?;
        Ok(users
            .iter()
            .zip(flat)
            .map(|(u, pair)| UserStatus {
                user_id: u.clone(),
                online: pair.first().and_then(|v| v.as_i64()).unwrap_or(0) > 0,
                last_seen: pair.get(1).and_then(|v| v.as_string()).and_then(|s| s.parse().ok()).map(from_millis),
            })
            .collect())
    }

    async fn refresh(&self, users: &[String]) -> CoordResult<()> {
        let p = &self.prefix;
        redis_op("presence_refresh", async {
            // Registry (and heartbeat) first, in batches that keep each script short.
            for chunk in users.chunks(BATCH).chain(users.is_empty().then_some(&[][..])) {
                self.enlist_users(chunk).await?;
            }
            let args = vec![self.node.to_string(), self.ttl_ms.to_string()];
            let items = users.iter().map(|u| (vec![keys::presence(p, u)], args.clone()));
            let _: Vec<i64> = self.per_user(TOUCH, items).await?;
            Ok::<_, fred::error::Error>(())
        })
        .await
        .map_err(CoordError::from)
    }

    async fn leave(&self) -> CoordResult<()> {
        let _: () = redis_op(
            "presence_leave",
            self.client.zadd(&self.heartbeats, None, None, false, false, (0.0, self.node.to_string())),
        )
        .await
        .map_err(CoordError::from)?;
        Ok(())
    }

    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>> {
        let p = &self.prefix;
        let offline: Vec<(String, i64)> = redis_op("presence_reap", async {
            // Candidates; each claim re-checks its node atomically.
            let dead: Vec<String> =
                self.expired.evalsha_with_reload(&self.client, self.heartbeats.clone(), Vec::<String>::new()).await?;
            let mut users: Vec<(String, String)> = Vec::new();
            for node in dead.into_iter().filter(|n| **n != *self.node) {
                let claimed: Vec<String> = self
                    .claim
                    .evalsha_with_reload(
                        &self.client,
                        vec![self.heartbeats.clone(), keys::node_users(p, &node)],
                        vec![node.clone()],
                    )
                    .await?;
                users.extend(claimed.into_iter().map(|u| (node.clone(), u)));
            }
            let items =
                users.iter().map(|(node, u)| (vec![keys::presence(p, u), keys::last_seen(p, u)], vec![node.clone()]));
            let times: Vec<i64> = self.per_user(DROP, items).await?;
            Ok::<_, fred::error::Error>(
                users.into_iter().zip(times).filter(|(_, t)| *t > 0).map(|((_, u), t)| (u, t)).collect(),
            )
        })
        .await
        .map_err(CoordError::from)?;
        Ok(offline.into_iter().map(|(u, t)| (u, from_millis(t))).collect())
    }
}
