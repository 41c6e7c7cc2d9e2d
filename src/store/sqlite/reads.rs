//! The reads, on a small pool of read-only connections (`query_only`), so they never wait for
//! the writer thread; WAL lets them run while it commits.

use std::path::Path;

use deadpool_sqlite::{Config as PoolConfig, Hook, HookError, Pool, Runtime};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    SqliteStore,
    errors::map_err,
    rows::{
        CONVERSATION_COLUMNS, CONVERSATION_FROM, MESSAGE_COLUMNS, conversation_from_row, message_from_row, page_from,
        user_from_row,
    },
    schema::{BUSY_TIMEOUT, configure_reader},
};
use crate::{
    chat::model::{Conversation, User},
    store::{HistoryQuery, ListCursor, Page, StoreError, StoreResult, ViewVersion},
};

/// Read connections per process.
const READERS: usize = 4;

/// The read pool on `path` (the schema already applied).
pub(super) fn open_pool(path: &Path) -> StoreResult<Pool> {
    PoolConfig::new(path)
        .builder(Runtime::Tokio1)
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .max_size(READERS)
        .post_create(Hook::async_fn(|obj, _| {
            Box::pin(async move {
                obj.interact(configure_reader)
                    .await
                    .map_err(|e| HookError::message(e.to_string()))?
                    .map_err(|e| HookError::message(e.to_string()))
            })
        }))
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

impl SqliteStore {
    /// Runs `f` on a pooled read connection.
    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = tokio::time::timeout(BUSY_TIMEOUT, self.readers.get())
            .await
            .map_err(|_| StoreError::Unavailable("read pool timeout".into()))?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        conn.interact(move |c| f(c)).await.map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

/// In the order asked for; unknown ids are left out.
pub(super) fn get_users(c: &Connection, ids: &[String]) -> StoreResult<Vec<User>> {
    let mut stmt =
        c.prepare_cached("SELECT id, name, email, role, avatar FROM users WHERE id = ?1").map_err(map_err)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let user = stmt.query_row(params![id], user_from_row).optional().map_err(map_err)?;
        out.extend(user);
    }
    Ok(out)
}

pub(super) fn get_conversation(c: &Connection, id: &str) -> StoreResult<Option<Conversation>> {
    c.prepare_cached(&format!("SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} WHERE c.id = ?1"))
        .and_then(|mut s| s.query_row(params![id], conversation_from_row).optional())
        .map_err(map_err)
}

pub(super) fn list_conversations(
    c: &Connection,
    user: &str,
    limit: u32,
    cursor: Option<&ListCursor>,
) -> StoreResult<Vec<Conversation>> {
    let (cms, cid) = cursor.map_or((i64::MAX, ""), |c| (c.updated_at_ms, c.id.as_str()));
    // Two index range scans (user as a / as b) merged; keyset pagination on (updated_at, id).
    let sql = format!(
        "SELECT * FROM (
           SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM}
           WHERE c.user_a = ?1 AND (c.updated_at < ?2 OR (c.updated_at = ?2 AND (?3 = '' OR c.id < ?3)))
           UNION ALL
           SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM}
           WHERE c.user_b = ?1 AND c.user_a <> ?1
             AND (c.updated_at < ?2 OR (c.updated_at = ?2 AND (?3 = '' OR c.id < ?3)))
         ) ORDER BY 9 DESC, 1 DESC LIMIT ?4"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(map_err)?;
    stmt.query_map(params![user, cms, cid, limit], conversation_from_row)
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)
}

pub(super) fn conversation_partners(c: &Connection, user: &str) -> StoreResult<Vec<String>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT user_b FROM conversations WHERE user_a = ?1
             UNION SELECT user_a FROM conversations WHERE user_b = ?1",
        )
        .map_err(map_err)?;
    stmt.query_map(params![user], |r| r.get(0)).map_err(map_err)?.collect::<Result<Vec<String>, _>>().map_err(map_err)
}

/// A page newest first (before a seq, or by offset), messages in it oldest first.
pub(super) fn history(c: &Connection, id: &str, q: HistoryQuery) -> StoreResult<Page> {
    let fetch = i64::from(q.limit) + 1;
    let rows = match q.before_seq {
        Some(before) => c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![id, before, fetch], |r| message_from_row(r, 0))?.collect::<Result<Vec<_>, _>>()
            }),
        None => c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1
                 ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
            ))
            .and_then(|mut s| {
                let skip = i64::try_from(q.skip).unwrap_or(i64::MAX);
                s.query_map(params![id, fetch, skip], |r| message_from_row(r, 0))?.collect::<Result<Vec<_>, _>>()
            }),
    }
    .map_err(map_err)?;
    Ok(page_from(rows, q.limit, true))
}

pub(super) fn messages_after(c: &Connection, id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2
             ORDER BY seq ASC LIMIT ?3"
        ))
        .and_then(|mut s| {
            s.query_map(params![id, after_seq, i64::from(limit) + 1], |r| message_from_row(r, 0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(map_err)?;
    Ok(page_from(rows, limit, false))
}

/// `(conversation id, my unread count)` where it is above 0.
pub(super) fn unread_counts(c: &Connection, user: &str) -> StoreResult<Vec<(String, i64)>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id, unread_a FROM conversations WHERE user_a = ?1 AND unread_a > 0
             UNION ALL SELECT id, unread_b FROM conversations WHERE user_b = ?1 AND unread_b > 0",
        )
        .map_err(map_err)?;
    stmt.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)
}

pub(super) fn view_version(c: &Connection, user: &str) -> StoreResult<ViewVersion> {
    c.prepare_cached("SELECT v FROM view_versions WHERE user_id = ?1")
        .and_then(|mut s| s.query_row(params![user], |r| r.get::<_, i64>(0)).optional())
        .map(|v| v.map_or(0, |v| v as ViewVersion))
        .map_err(map_err)
}
