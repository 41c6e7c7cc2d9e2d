//! Cluster-wide rate limits: GCRA in one Lua script (one key per subject, TTL = the time until
//! the budget is full again): `P:rlu:KIND:{SUBJECT}` (see [`crate::coord::redis::keys`]), one key
//! per script, declared, so any Redis Cluster shard runs it. Redis' own clock, so node clocks do
//! not matter.
//!
//! Leases: a budget large enough (≥ [`LEASE_MIN_BUDGET`] events per window) is not asked once
//! per event. A node takes a few tokens at once from the shared GCRA state (the script grants
//! up to the number asked, never more than the budget holds) and spends them locally for at
//! most [`LEASE_LIFETIME`]. The cluster-wide budget stays the bound: tokens a node holds are
//! gone from the shared state. The cost is bounded and small: a node's unspent tokens (at most
//! one lease, ≤ 1/[`LEASE_DIVISOR`] of the budget) are refused to the user's other nodes until
//! they grow back, and tokens spent up to one lifetime late can exceed a window's budget by one
//! lease. A lease grows while it is spent before it expires and shrinks when it expires unspent,
//! so a node takes about what its user sends. Small budgets (every default, see
//! `crate::limits`) take one token per event, exactly as without leases.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use dashmap::DashMap;
use fred::{prelude::Client, types::scripts::Script};
use tokio::time::Instant;

use crate::{
    coord::{CoordError, CoordResult, LimitKind, Quota, RateLimiter, redis::keys},
    telemetry::metrics::redis_op,
};

/// KEYS[1] state (the theoretical arrival time in µs); ARGV interval µs, burst, tokens wanted
/// (≥ 1). Returns {granted, wait ms}: granted ≥ 1 and wait 0, or granted 0 and the ms until one
/// token is there. With 1 wanted this is plain GCRA. Microseconds (Lua numbers hold them
/// exactly) so that budgets above 1,000 events per second per subject are not rounded down to
/// one event per ms.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = burst - math.ceil((tat - now) / interval)
if available < 1 then return {0, math.ceil((tat - (burst - 1) * interval - now) / 1000)} end
local granted = math.min(want, available)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {granted, 0}
"#;

/// A lease holds at most this fraction of a budget.
pub const LEASE_DIVISOR: u32 = 100;
/// Budgets below this many events per window lease nothing (every default is below).
pub const LEASE_MIN_BUDGET: u32 = 1000;
/// Most leases held by one node; past it they start over (forgotten tokens are only refused).
const LEASES_MAX: usize = 100_000;

/// The largest lease of a budget: 1 (no lease) below [`LEASE_MIN_BUDGET`] per window.
pub fn max_lease(q: Quota) -> u32 {
    if q.limit < LEASE_MIN_BUDGET { 1 } else { q.limit / LEASE_DIVISOR }
}

/// The GCRA emission interval in whole µs: at least 1.
fn interval_us(q: Quota) -> u64 {
    (q.window.as_micros() as u64 / u64::from(q.limit.max(1))).max(1)
}

/// How long a node may spend leased tokens, whatever the budget's window. It does not loosen the
/// bound: tokens are debited when leased, so a window sees at most what the shared state grants
/// in it plus the one lease per node held at its start, however old that lease is. It sets how
/// often a steady sender asks Redis (a lease grows towards what its user sends in one lifetime):
/// at one second, a user sending five messages a second still ran a script every five or so.
/// Unspent tokens are lost either way (refused to other nodes until they grow back).
pub const LEASE_LIFETIME: Duration = Duration::from_secs(5);

/// Tokens a node holds for one subject.
#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    until: Instant,
    /// What the next lease asks for.
    size: u32,
}

impl Lease {
    /// Size of the next lease: doubled when this one was spent before its end, halved when it
    /// ended unspent.
    fn next_size(&self, now: Instant, max: u32) -> u32 {
        if self.left == 0 && now < self.until {
            (self.size.saturating_mul(2)).min(max)
        } else if self.left > 0 {
            (self.size / 2).max(1)
        } else {
            self.size
        }
    }

    /// One event against a subject's lease: `None` when it spent a token the node holds, or the
    /// number of tokens to ask the shared state for.
    fn spend(lease: Option<&mut Lease>, now: Instant, max: u32) -> Option<u32> {
        match lease {
            Some(l) if l.left > 0 && now < l.until => {
                l.left -= 1;
                None
            }
            Some(l) => Some(l.next_size(now, max)),
            None => Some(1),
        }
    }

    /// The lease after the shared state granted `granted` (≥ 1) of `want`: one spent at once.
    fn granted(granted: u32, want: u32, now: Instant) -> Lease {
        Lease { left: granted - 1, until: now + LEASE_LIFETIME, size: want }
    }
}

pub struct RedisRateLimiter {
    client: Client,
    prefix: Arc<str>,
    script: Script,
    quotas: HashMap<LimitKind, Quota>,
    leases: DashMap<(LimitKind, String), Lease>,
}

impl RedisRateLimiter {
    pub fn new(client: Client, prefix: &str, quotas: &[(LimitKind, Quota)]) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            script: Script::from_lua(GCRA),
            quotas: quotas.iter().copied().collect(),
            leases: DashMap::new(),
        }
    }

    /// Takes up to `want` tokens from the shared state: `Ok(granted ≥ 1)` or `Err(wait)`.
    async fn take(&self, kind: LimitKind, key: &str, q: Quota, want: u32) -> CoordResult<Result<u32, Duration>> {
        let k = keys::rate(&self.prefix, kind.name(), key);
        let (granted, wait): (u64, u64) = redis_op(
            "rate_limit",
            self.script.evalsha_with_reload(
                &self.client,
                k,
                vec![interval_us(q), u64::from(q.limit), u64::from(want.max(1))],
            ),
        )
        .await
        .map_err(CoordError::from)?;
        Ok(if granted == 0 { Err(Duration::from_millis(wait)) } else { Ok(granted.min(u64::from(want)) as u32) })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, kind: LimitKind, key: &str) -> CoordResult<Result<(), Duration>> {
        let Some(&q) = self.quotas.get(&kind) else { return Ok(Ok(())) };
        let max = max_lease(q);
        if max == 1 {
            return Ok(self.take(kind, key, q, 1).await?.map(|_| ()));
        }
        let now = Instant::now();
        let id = (kind, key.to_owned());
        let Some(want) = Lease::spend(self.leases.get_mut(&id).as_deref_mut(), now, max) else {
            return Ok(Ok(()));
        };
        let granted = match self.take(kind, key, q, want).await? {
            Ok(n) => n,
            Err(wait) => return Ok(Err(wait)),
        };
        if self.leases.len() >= LEASES_MAX {
            self.leases.clear();
        }
        // A concurrent refill of the same subject is overwritten: its tokens are only refused.
        self.leases.insert(id, Lease::granted(granted, want, Instant::now()));
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota { limit, window: Duration::from_secs(secs) }
    }

    #[test]
    fn small_budgets_lease_nothing() {
        for (kind, q) in crate::limits::DEFAULT_BUDGETS {
            assert_eq!(max_lease(*q), 1, "{kind:?}");
        }
        assert_eq!(max_lease(quota(999, 10)), 1);
        assert_eq!(max_lease(quota(1000, 10)), 10);
        assert_eq!(max_lease(quota(1_000_000, 1)), 10_000);
    }

    #[test]
    fn emission_intervals_are_whole_microseconds() {
        assert_eq!(interval_us(quota(1_000_000, 1)), 1);
        assert_eq!(interval_us(quota(30, 10)), 333_333);
        assert_eq!(interval_us(quota(u32::MAX, 1)), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_grows_when_spent_in_time_and_shrinks_when_not() {
        let now = Instant::now();
        let until = now + Duration::from_millis(100);
        let spent = Lease { left: 0, until, size: 8 };
        assert_eq!(spent.next_size(now, 10), 10);
        assert_eq!(spent.next_size(until, 10), 8);
        let unspent = Lease { left: 3, until, size: 8 };
        assert_eq!(unspent.next_size(until, 10), 4);
        assert_eq!(Lease { left: 1, until, size: 1 }.next_size(until, 10), 1);
    }

    /// Refills a steady sender needs over `secs` seconds at `per_sec` events, every ask granted.
    fn refills(per_sec: u32, secs: u32, max: u32) -> u32 {
        let start = Instant::now();
        let mut lease = None;
        let mut asks = 0;
        for i in 0..per_sec * secs {
            let now = start + Duration::from_secs(u64::from(i)) / per_sec;
            if let Some(want) = Lease::spend(lease.as_mut(), now, max) {
                asks += 1;
                lease = Some(Lease::granted(want, want, now));
            }
        }
        asks
    }

    #[test]
    fn a_steady_sender_asks_the_shared_state_about_once_a_lifetime() {
        let max = max_lease(quota(1_000_000, 1));
        // Five a second (the comparison's fan-out): 1, 2, 4, 8, 16 in the first 6 s, then leases of
        // 16 to 32 tokens for the rest: about one ask per lifetime, not one per second.
        let asks = refills(5, 60, max);
        let lifetimes = 60 / LEASE_LIFETIME.as_secs() as u32;
        assert!(asks <= lifetimes + 10, "{asks} asks in 60 s");
        assert!(asks <= 25, "{asks} asks for 300 events");
        assert!(asks >= lifetimes, "{asks} asks in 60 s: leases outlive their lifetime");
        // A budget's cap holds: 1,000 a window leases at most 10 at once.
        assert!(refills(50, 10, max_lease(quota(1000, 10))) >= 50);
    }
}
