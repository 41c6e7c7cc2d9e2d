//! Leased rate-limit tokens against a real `redis-server`: two limiters stand for two nodes
//! sharing one user's budget. The budget stays the cluster-wide bound, and a large budget costs
//! far fewer scripts than events.

use std::time::Duration;

use fred::prelude::ClientLike;
use jobsphere_chat::coord::{
    LimitKind, Quota, RateLimiter,
    ratelimit::redis::{RedisRateLimiter, max_lease},
    redis::{TlsFiles, connect},
};

use crate::{harness::RedisServer, kit::redis::cli};

async fn limiter(redis: &RedisServer, q: Quota) -> RedisRateLimiter {
    let client = connect::builder(&redis.url(), &TlsFiles::default()).expect("url").build().expect("client");
    client.init().await.expect("redis");
    RedisRateLimiter::new(client, "lease", &[(LimitKind::Message, q)])
}

/// Scripts Redis ran so far (`cmdstat_evalsha` calls).
fn scripts_run(port: u16) -> u64 {
    let stats = cli(port, &[], &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("calls"))
}

/// Hits until the first refusal (or `cap` hits); the number allowed.
async fn allowed_until_refused(l: &RedisRateLimiter, cap: u32) -> u32 {
    allowed_until_refused_by(l, "alice", cap).await
}

async fn allowed_until_refused_by(l: &RedisRateLimiter, user: &str, cap: u32) -> u32 {
    for n in 0..cap {
        if l.hit(LimitKind::Message, user).await.expect("redis up").is_err() {
            return n;
        }
    }
    cap
}

#[tokio::test]
async fn leases_keep_the_budget_cluster_wide_and_save_scripts() {
    let redis = RedisServer::start().await;
    // 2,000 per hour: nothing grows back during the test; leases of up to 20.
    let q = Quota { limit: 2000, window: Duration::from_secs(3600) };
    let lease = max_lease(q);
    assert_eq!(lease, 20);
    let (n1, n2) = (limiter(&redis, q).await, limiter(&redis, q).await);
    let before = scripts_run(redis.port);
    // n1 spends most of the budget, n2 the rest: n2's refusals start once the shared state is
    // empty, less at most the tokens n1 still holds.
    let first = allowed_until_refused(&n1, 1500).await;
    assert_eq!(first, 1500);
    let second = allowed_until_refused(&n2, 2000).await;
    assert!(second <= 500 && second + lease >= 500, "n2 got {second} of the 500 left (lease {lease})");
    // n1 may still spend what it holds (unless its lease has ended); past it, n1 is refused too.
    let rest = allowed_until_refused(&n1, 2000).await;
    let total = first + second + rest;
    assert!(total <= 2000 && total + lease >= 2000, "n1 {first} + n2 {second} + n1 {rest}");
    let scripts = scripts_run(redis.port) - before;
    assert!(scripts * 5 < u64::from(first + second), "{scripts} scripts for {} events", first + second);
}

#[tokio::test]
async fn small_budgets_ask_redis_for_every_event() {
    let redis = RedisServer::start().await;
    let q = Quota { limit: 6, window: Duration::from_secs(60) };
    let (n1, n2) = (limiter(&redis, q).await, limiter(&redis, q).await);
    // The first call on a fresh Redis is a NOSCRIPT reply (counted), then a load and a retry.
    assert_eq!(allowed_until_refused_by(&n1, "warm-up", 1).await, 1);
    let before = scripts_run(redis.port);
    assert_eq!(allowed_until_refused(&n1, 4).await, 4);
    assert_eq!(allowed_until_refused(&n2, 10).await, 2);
    let refused = n1.hit(LimitKind::Message, "alice").await.expect("redis up");
    assert!(refused.is_err_and(|wait| wait > Duration::ZERO && wait <= Duration::from_secs(10)));
    assert_eq!(scripts_run(redis.port) - before, 4 + 3 + 1);
}

#[tokio::test]
async fn budgets_above_a_thousand_per_second_grow_back_at_their_own_rate() {
    let redis = RedisServer::start().await;
    // 100,000 per second: one token every 10 µs. Counted in whole ms, the state grew back one
    // token per ms (1,000 per second) and such a budget, once spent, refused nearly everything.
    let q = Quota { limit: 100_000, window: Duration::from_secs(1) };
    let n1 = limiter(&redis, q).await;
    let burst = allowed_until_refused(&n1, 200_000).await;
    assert!(burst >= 90_000, "the whole burst is allowed first: {burst}");
    // What a tenth of a second grows back: about 10,000 tokens (at least 2,000 however slow
    // this machine is; a ms-granular state gave back about 100).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grown = allowed_until_refused(&n1, 200_000).await;
    assert!(grown >= 2_000, "only {grown} events allowed after 100 ms of a 100,000/s budget");
}
