//! The write path: one writer thread per process, group commit, a savepoint per write.
//!
//! Writes queue on a bounded channel; the thread takes every queued write (up to
//! [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint so
//! one failure does not undo the others, and answers each caller only after COMMIT returned.
//! Processes sharing the file take turns ([`Turn`]) before SQLite's own write lock.

use std::sync::mpsc as std_mpsc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::{SqliteStore, errors::map_err, turn::Turn};
use crate::store::{StoreError, StoreResult};

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 256;
/// Writes queued at most before callers wait (`try_send` first, see [`SqliteStore::write`]).
const QUEUE: usize = 8192;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside a savepoint, says whether it succeeded, and returns how to answer the
/// caller once the enclosing transaction's fate is known.
/// `None`: the transaction could not start; the job answers with that error without running.
pub(super) type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

/// Starts the writer thread on `conn` (the schema already applied): the queue it serves.
pub(super) fn start(conn: Connection, turn: Option<Turn>) -> StoreResult<std_mpsc::SyncSender<WriteJob>> {
    let (tx, rx) = std_mpsc::sync_channel::<WriteJob>(QUEUE);
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(conn, rx, turn))
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(tx)
}

impl SqliteStore {
    /// Runs `f` inside the next group commit; answers once that transaction's fate is known.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let res = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Unavailable("write not started".into())),
            };
            let ok = res.is_ok();
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(res));
            });
            (ok, done)
        });
        let writer = self.writer.clone();
        // try_send first: the channel is large, blocking only happens under extreme backlog.
        match writer.try_send(job) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || writer.send(job))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))?
                    .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError::Unavailable("writer stopped".into()));
            }
        }
        rx.await.map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }
}

/// Group commit: take every queued write, run them in one transaction, answer after COMMIT.
///
/// Writers of processes sharing the file take turns (see [`Turn`]) before SQLite's write lock.
/// Jobs that arrive while waiting for the turn join the batch.
fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<WriteJob>, turn: Option<Turn>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let _turn = turn.as_ref().and_then(|t| {
            t.take()
                .inspect_err(|e| tracing::warn!(error = %e, "writer turn unusable; relying on SQLite's busy handler"))
                .ok()
        });
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let err = map_err(e);
                for job in batch {
                    let (_, done) = job(None);
                    done(Err(err.clone()));
                }
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch.len());
        // One savepoint at a time, released (or undone) before the next: a constant name lets
        // the statements be prepared once.
        let savepoint = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop);
        for job in batch {
            if let Err(e) = savepoint("SAVEPOINT w") {
                let (_, done) = job(None);
                completions.push((done, Some(map_err(e))));
                continue;
            }
            let (ok, done) = job(Some(&tx));
            let fin = if ok { Ok(()) } else { savepoint("ROLLBACK TO w") };
            let fin = fin.and_then(|()| savepoint("RELEASE w"));
            completions.push((done, fin.err().map(map_err)));
        }
        let commit = tx.commit().map_err(map_err);
        for (done, own_err) in completions {
            done(match (&commit, own_err) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
            });
        }
    }
}
