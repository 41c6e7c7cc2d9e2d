//! Rate limits in this process (the embedded default): GCRA per key through `governor`.

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota as GQuota, clock::Clock};

use super::{LimitKind, Quota, RateLimiter};
use crate::coord::CoordResult;

/// GCRA limits per key through `governor`, one limiter per kind.
pub struct LocalRateLimiter {
    limiters: HashMap<LimitKind, Arc<DefaultKeyedRateLimiter<String>>>,
}

impl LocalRateLimiter {
    pub fn new(quotas: &[(LimitKind, Quota)]) -> Self {
        let limiters = quotas
            .iter()
            .map(|(kind, q)| {
                let burst = NonZeroU32::new(q.limit.max(1)).unwrap_or(NonZeroU32::MIN);
                let period = (q.window / q.limit.max(1)).max(Duration::from_nanos(1));
                let quota = GQuota::with_period(period).unwrap_or_else(|| GQuota::per_second(burst)).allow_burst(burst);
                (*kind, Arc::new(DefaultKeyedRateLimiter::keyed(quota)))
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
        Ok(l.check_key(&key.to_owned()).map_err(|nu| nu.wait_time_from(governor::clock::DefaultClock::default().now())))
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
}
