//! The file itself: connection settings (WAL, durability, page size, the busy handler) and the
//! schema, created on a new file and brought up to date on an older one (added columns, a
//! dropped index), idempotently, by every process that opens it.

use std::{path::Path, time::Duration};

use rusqlite::Connection;

use super::{Durability, errors::map_err};
use crate::store::StoreResult;

/// How long a reader waits for a pool connection, and the busy handler's budget.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Waiting for another process's write lock: SQLite's own busy timeout sleeps in steps of up
/// to 100 ms, which is the tail latency of nodes sharing one file. Back off from 50 µs to 1 ms
/// instead, for the same 5 s budget.
pub(super) fn busy_wait(attempt: i32) -> bool {
    let attempt = attempt.max(0) as u64;
    let step = (50 + attempt * 25).min(1000);
    // Sum of the steps: 1 ms steps dominate after ~40 attempts, so ~5000 attempts ≈ 5 s.
    if attempt > 5000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(step));
    true
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL,
    avatar TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user_a TEXT NOT NULL,
    user_b TEXT NOT NULL,
    job_key TEXT NOT NULL,          -- jobId or '' so that the unique index covers "no job"
    job_id TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    unread_a INTEGER NOT NULL DEFAULT 0,
    unread_b INTEGER NOT NULL DEFAULT 0,
    read_seq_a INTEGER NOT NULL DEFAULT 0,
    read_seq_b INTEGER NOT NULL DEFAULT 0,
    delivered_seq_a INTEGER NOT NULL DEFAULT 0,
    delivered_seq_b INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_pair_job ON conversations(user_a, user_b, job_key);
CREATE INDEX IF NOT EXISTS conversations_a_activity ON conversations(user_a, updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS conversations_b_activity ON conversations(user_b, updated_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    client_message_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_conversation_seq ON messages(conversation_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_client_id ON messages(sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender_id);
CREATE INDEX IF NOT EXISTS messages_receiver_status ON messages(receiver_id, status);
DROP INDEX IF EXISTS messages_conversation_receiver_status;
-- A user's view version (`crate::store::ViewVersion`), set by the same transaction as the change.
CREATE TABLE IF NOT EXISTS view_versions (
    user_id TEXT PRIMARY KEY,
    v INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Columns added after the first schema, as (column, definition); added to an older file on open.
/// `read_seq_*` / `delivered_seq_*`: every message to that side with `seq` ≤ it is read /
/// delivered (or read), so receipts only touch newer rows through the `(conversation_id, seq)`
/// index instead of maintaining a fourth per-message index (each index a page write per insert).
pub(super) const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("read_seq_a", "INTEGER NOT NULL DEFAULT 0"),
    ("read_seq_b", "INTEGER NOT NULL DEFAULT 0"),
    ("delivered_seq_a", "INTEGER NOT NULL DEFAULT 0"),
    ("delivered_seq_b", "INTEGER NOT NULL DEFAULT 0"),
];

/// Creates the schema, or brings an older file up to it.
pub(super) fn apply_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let existing: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('conversations')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (column, definition) in ADDED_COLUMNS {
        if !existing.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE conversations ADD COLUMN {column} {definition};"))?;
        }
    }
    Ok(())
}

pub(super) fn open_connection(path: &Path, durability: Durability) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_handler(Some(busy_wait)).map_err(map_err)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // Only takes effect on a new file, so before WAL mode writes its header. Random inserts into
    // the per-message indexes dirty one page each per commit and the WAL writes whole pages:
    // 1 KiB pages write a quarter of 4 KiB ones (benches/store.rs: 30 KiB → 8 KiB per insert).
    conn.execute_batch(&format!(
        "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
    ))
    .map_err(map_err)?;
    Ok(conn)
}

pub(super) fn configure_reader(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(busy_wait))?;
    conn.execute_batch("PRAGMA query_only = ON;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, sqlite::SqliteStore};

    /// The first schema: no receipt watermarks, a fourth per-message index.
    const FIRST_SCHEMA: &str = r#"
        CREATE TABLE conversations (id TEXT PRIMARY KEY, user_a TEXT NOT NULL, user_b TEXT NOT NULL,
            job_key TEXT NOT NULL, job_id TEXT, last_seq INTEGER NOT NULL DEFAULT 0,
            unread_a INTEGER NOT NULL DEFAULT 0, unread_b INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE messages (id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
            sender_id TEXT NOT NULL, receiver_id TEXT NOT NULL, message_type TEXT NOT NULL,
            content TEXT NOT NULL, status TEXT NOT NULL, client_message_id TEXT, created_at INTEGER NOT NULL);
        CREATE INDEX messages_conversation_receiver_status ON messages(conversation_id, receiver_id, status, seq);
        INSERT INTO conversations VALUES ('c1', 'alice', 'bob', '', NULL, 3, 1, 2, 0, 0);
        INSERT INTO messages VALUES ('m1', 'c1', 1, 'alice', 'bob', 'text', 'a', 'sent', NULL, 0),
            ('m2', 'c1', 2, 'bob', 'alice', 'text', 'b', 'sent', NULL, 0),
            ('m3', 'c1', 3, 'alice', 'bob', 'text', 'c', 'sent', NULL, 0);
    "#;

    #[tokio::test]
    async fn an_older_file_is_brought_up_to_the_schema_and_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        Connection::open(&path).unwrap().execute_batch(FIRST_SCHEMA).unwrap();

        let store = SqliteStore::open(&path).unwrap();
        store.migrate().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('conversations')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (column, _) in ADDED_COLUMNS {
            assert!(columns.iter().any(|c| c == column), "{column} missing: {columns:?}");
        }
        let old_index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_conversation_receiver_status'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);

        // Zero watermarks are a safe lower bound: receipts still see every older message.
        assert_eq!(store.mark_delivered("c1", "bob", 1).await.unwrap().updated, 1);
        let r = store.mark_read("c1", "bob", None).await.unwrap();
        assert_eq!((r.up_to_seq, r.updated, r.unread_count), (3, 2, 0));
        assert_eq!(store.unread_counts("alice").await.unwrap(), vec![("c1".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_new_file_uses_small_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("chat.db")).unwrap();
        let size: i64 =
            store.read(|c| c.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(map_err)).await.unwrap();
        assert_eq!(size, 1024);
    }
}
