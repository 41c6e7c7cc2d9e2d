//! Rate limits in this process (the embedded default): GCRA per key through `governor`, on
//! tokio's clock ([`TokioClock`]) so that budgets follow a paused test clock like every timer
//! of the node does.

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use async_trait::async_trait;
use governor::{
    Quota as GQuota, RateLimiter as Gcra, clock::Clock, middleware::NoOpMiddleware, state::keyed::DashMapStateStore,
};

use super::{LimitKind, Quota, RateLimiter};
use crate::coord::CoordResult;

/// `governor`'s time source on `tokio::time::Instant`: time since the clock was made. Outside a
/// paused runtime that is the monotonic clock; under `tokio::time::pause` it moves only when
/// the test advances it (governor's default clock would keep running on its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type KeyedLimiter = Gcra<String, DashMapStateStore<String>, TokioClock, NoOpMiddleware<Duration>>;

/// GCRA limits per key through `governor`, one limiter per kind.
pub struct LocalRateLimiter {
    limiters: HashMap<LimitKind, Arc<KeyedLimiter>>,
}

impl LocalRateLimiter {
    pub fn new(quotas: &[(LimitKind, Quota)]) -> Self {
        let clock = TokioClock::default();
        let limiters = quotas
            .iter()
            .map(|(kind, q)| {
                let burst = NonZeroU32::new(q.limit.max(1)).unwrap_or(NonZeroU32::MIN);
                let period = (q.window / q.limit.max(1)).max(Duration::from_nanos(1));
                let quota = GQuota::with_period(period).unwrap_or_else(|| GQuota::per_second(burst)).allow_burst(burst);
                (*kind, Arc::new(Gcra::dashmap_with_clock(quota, clock)))
            })
            .collect();
        Self { limiters }
    }

    /// Forgets keys that are back to a full budget (bounded memory); run periodically.
    pub fn sweep(&self) {
        for l in self.limiters.values() {
            l.retain_recent();
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn hit(&self, kind: LimitKind, key: &str) -> CoordResult<Result<(), Duration>> {
        let Some(l) = self.limiters.get(&kind) else { return Ok(Ok(())) };
        Ok(l.check_key(&key.to_owned()).map_err(|nu| nu.wait_time_from(l.clock().now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limit_allows_burst_then_limits() {
        let l = LocalRateLimiter::new(&[(LimitKind::Message, Quota { limit: 3, window: Duration::from_secs(30) })]);
        for _ in 0..3 {
            assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_ok());
        }
        let wait = l.hit(LimitKind::Message, "u").await.unwrap().unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(10), "{wait:?}");
        assert!(l.hit(LimitKind::Message, "other").await.unwrap().is_ok());
    }

    /// The budget comes back on tokio's clock: exactly when the retry hint said, not before.
    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_on_the_tokio_clock() {
        let l = LocalRateLimiter::new(&[(LimitKind::Message, Quota { limit: 2, window: Duration::from_secs(60) })]);
        for _ in 0..2 {
            assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_ok());
        }
        let wait = l.hit(LimitKind::Message, "u").await.unwrap().unwrap_err();
        assert_eq!(wait, Duration::from_secs(30), "one event per 30 s refills");
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        let left = l.hit(LimitKind::Message, "u").await.unwrap().unwrap_err();
        assert_eq!(left, Duration::from_millis(1), "the hint counts down with the clock");
        tokio::time::advance(left).await;
        assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_ok(), "allowed once the hint has passed");
        assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_err(), "one event back, not the whole burst");
        tokio::time::advance(Duration::from_secs(60)).await;
        l.sweep();
        for _ in 0..2 {
            assert!(l.hit(LimitKind::Message, "u").await.unwrap().is_ok(), "a full window refills the burst");
        }
    }
}
