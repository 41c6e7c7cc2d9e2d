//! What every call goes through: the schema gate (no call touches collections whose unique
//! indexes are not known to exist; until they are, calls answer `Unavailable` and start a
//! background migration) and the call deadline (a call that runs past it is `Unavailable`,
//! never a hang).

use std::{
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use super::{MongoStore, migrate};
use crate::store::{StoreError, StoreResult};

/// Whether the indexes the invariants rest on are known to exist, and whether a background
/// migration is under way.
#[derive(Debug, Default)]
pub(super) struct SchemaGate {
    pub ready: AtomicBool,
    running: AtomicBool,
}

impl MongoStore {
    /// Runs a store call within the deadline, once the indexes exist: before that (MongoDB
    /// unreachable at start) every call is `Unavailable` and starts a background migration.
    pub(super) async fn call<T>(&self, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.ensure_schema()?;
        bounded(self.deadline, f).await
    }

    fn ensure_schema(&self) -> StoreResult<()> {
        if self.schema.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.schema.running.swap(true, Ordering::AcqRel) {
            let (db, names, gate) = (self.db.clone(), self.names.clone(), self.schema.clone());
            // Its own task: a readiness probe that gives up on its ping must not cancel a build.
            tokio::spawn(async move {
                match migrate::run(&db, &names).await {
                    Ok(()) => {
                        gate.ready.store(true, Ordering::Release);
                        tracing::info!("MongoDB answers and the indexes are in place: store ready");
                    }
                    Err(e) => tracing::warn!(error = %e, "MongoDB store still not ready"),
                }
                gate.running.store(false, Ordering::Release);
            });
        }
        Err(StoreError::Unavailable("MongoDB store not ready: indexes not verified yet".into()))
    }
}

pub(super) async fn bounded<T>(limit: Duration, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("MongoDB did not answer within {limit:?}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_past_the_deadline_are_unavailable() {
        let r: StoreResult<()> = bounded(Duration::from_millis(10), std::future::pending()).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert_eq!(bounded(Duration::from_secs(1), async { Ok(3) }).await.unwrap(), 3);
    }
}
