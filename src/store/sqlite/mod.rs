//! Embedded SQLite store (the default), also shareable by several nodes on one host.
//!
//! Writes go through one writer thread per process that groups queued writes into a single
//! `BEGIN IMMEDIATE … COMMIT` (group commit), each write inside its own savepoint so one failure
//! does not undo the others. A caller is answered only after COMMIT returns, so an acknowledged
//! write is on disk (WAL, `synchronous=FULL` by default; `normal` skips the fsync per commit and
//! still survives a process crash, not a power loss). Across processes the writers take turns
//! (an flock pair, see [`Turn`]) on top of SQLite's own write lock; `seq` is taken by
//! `UPDATE … SET last_seq = last_seq + 1 RETURNING` inside the writing transaction, so it is
//! gap-free whoever writes.
//! Reads use a small pool of read connections.

mod checkpoint;
mod turn;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc as std_mpsc},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_sqlite::{Config as PoolConfig, Hook, HookError, Pool, Runtime};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{
    HistoryQuery, Inserted, ListCursor, NewMessage, Page, PoolStats, ReadReceipt, Store, StoreError, StoreResult,
    sorted_pair,
};
use crate::chat::model::{Conversation, Message, MessageStatus, MessageType, Role, User, from_millis, new_id, now};
use checkpoint::Checkpointer;
use turn::Turn;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 256;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a commit reaches the disk (`PRAGMA synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every (group) commit: survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

/// Waiting for another process's write lock: SQLite's own busy timeout sleeps in steps of up
/// to 100 ms, which is the tail latency of nodes sharing one file. Back off from 50 µs to 1 ms
/// instead, for the same 5 s budget.
fn busy_wait(attempt: i32) -> bool {
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
"#;

/// Columns added after the first schema, as (column, definition); added to an older file on open.
/// `read_seq_*` / `delivered_seq_*`: every message to that side with `seq` ≤ it is read /
/// delivered (or read), so receipts only touch newer rows through the `(conversation_id, seq)`
/// index instead of maintaining a fourth per-message index (each index a page write per insert).
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("read_seq_a", "INTEGER NOT NULL DEFAULT 0"),
    ("read_seq_b", "INTEGER NOT NULL DEFAULT 0"),
    ("delivered_seq_a", "INTEGER NOT NULL DEFAULT 0"),
    ("delivered_seq_b", "INTEGER NOT NULL DEFAULT 0"),
];

/// Creates the schema, or brings an older file up to it.
fn apply_schema(conn: &Connection) -> rusqlite::Result<()> {
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

const CONVERSATION_COLUMNS: &str = "c.id, c.user_a, c.user_b, c.job_id, c.last_seq, c.unread_a, c.unread_b, \
     c.created_at, c.updated_at, m.id, m.seq, m.sender_id, m.receiver_id, m.message_type, m.content, m.status, \
     m.client_message_id, m.created_at";
const CONVERSATION_FROM: &str =
    "conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq AND c.last_seq > 0";
const MESSAGE_COLUMNS: &str =
    "id, seq, sender_id, receiver_id, message_type, content, status, client_message_id, created_at, conversation_id";

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside a savepoint, says whether it succeeded, and returns how to answer the
/// caller once the enclosing transaction's fate is known.
/// `None`: the transaction could not start; the job answers with that error without running.
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

pub struct SqliteStore {
    path: PathBuf,
    writer: std_mpsc::SyncSender<WriteJob>,
    readers: Pool,
    checkpointer: Arc<Mutex<Checkpointer>>,
    /// Dropped with the store: ends the checkpoint thread.
    _stop_checkpoints: std_mpsc::Sender<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/chat.db`.
    pub fn open_dir(dir: &Path, durability: Durability) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Internal(format!("cannot create data dir {}: {e}", dir.display())))?;
        Self::open_with(&dir.join("chat.db"), durability)
    }

    /// Opens with the default (full) durability.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, Durability::Full)
    }

    pub fn open_with(path: &Path, durability: Durability) -> StoreResult<Self> {
        let conn = open_connection(path, durability)?;
        // The schema is created before the pool opens so readers never see a half-made database.
        apply_schema(&conn).map_err(map_err)?;
        let (tx, rx) = std_mpsc::sync_channel::<WriteJob>(8192);
        let turn =
            Turn::open(path).inspect_err(|e| tracing::warn!(error = %e, "cannot open the writer lock files")).ok();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, turn))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let checkpointer = Arc::new(Mutex::new(Checkpointer::open(path, durability)?));
        let (stop_checkpoints, stop) = std_mpsc::channel();
        let background = checkpointer.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint::run(background, stop))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let readers = PoolConfig::new(path)
            .builder(Runtime::Tokio1)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .max_size(4)
            .post_create(Hook::async_fn(|obj, _| {
                Box::pin(async move {
                    obj.interact(configure_reader)
                        .await
                        .map_err(|e| HookError::message(e.to_string()))?
                        .map_err(|e| HookError::message(e.to_string()))
                })
            }))
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self { path: path.to_owned(), writer: tx, readers, checkpointer, _stop_checkpoints: stop_checkpoints })
    }

    /// Copies the WAL back into the database now (a thread does it every second) and returns
    /// (frames in the WAL, frames copied back). Blocking.
    pub fn checkpoint(&self) -> StoreResult<(i64, i64)> {
        let c = self.checkpointer.lock().map_err(|_| StoreError::Internal("checkpointer poisoned".into()))?;
        let pass = c.round().map_err(map_err)?;
        Ok((pass.log, pass.copied))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pool state for the `chat_db_pool_connections` gauge: (in use, idle, max).
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.readers.status();
        (s.size.saturating_sub(s.available), s.available, s.max_size)
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
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

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
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

fn open_connection(path: &Path, durability: Durability) -> StoreResult<Connection> {
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

fn configure_reader(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(busy_wait))?;
    conn.execute_batch("PRAGMA query_only = ON;")
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

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn bad_value(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

fn message_from_row(r: &Row<'_>, base: usize) -> rusqlite::Result<Message> {
    let mt: String = r.get(base + 4)?;
    let st: String = r.get(base + 6)?;
    Ok(Message {
        id: r.get(base)?,
        seq: r.get(base + 1)?,
        sender_id: r.get(base + 2)?,
        receiver_id: r.get(base + 3)?,
        message_type: MessageType::parse(&mt).ok_or_else(|| bad_value("message_type"))?,
        content: r.get(base + 5)?,
        status: MessageStatus::parse(&st).ok_or_else(|| bad_value("status"))?,
        client_message_id: r.get(base + 7)?,
        created_at: from_millis(r.get(base + 8)?),
        conversation_id: r.get(base + 9)?,
    })
}

fn conversation_from_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
    let id: String = r.get(0)?;
    let last_message = match r.get::<_, Option<String>>(9)? {
        None => None,
        Some(mid) => {
            let mt: String = r.get(13)?;
            let st: String = r.get(15)?;
            Some(Message {
                id: mid,
                conversation_id: id.clone(),
                seq: r.get(10)?,
                sender_id: r.get(11)?,
                receiver_id: r.get(12)?,
                message_type: MessageType::parse(&mt).ok_or_else(|| bad_value("message_type"))?,
                content: r.get(14)?,
                status: MessageStatus::parse(&st).ok_or_else(|| bad_value("status"))?,
                client_message_id: r.get(16)?,
                created_at: from_millis(r.get(17)?),
            })
        }
    };
    Ok(Conversation {
        id,
        participants: [r.get(1)?, r.get(2)?],
        job_id: r.get(3)?,
        last_seq: r.get(4)?,
        unread: [r.get(5)?, r.get(6)?],
        created_at: from_millis(r.get(7)?),
        updated_at: from_millis(r.get(8)?),
        last_message,
    })
}

fn get_conversation_on(conn: &Connection, id: &str) -> StoreResult<Option<Conversation>> {
    conn.prepare_cached(&format!("SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} WHERE c.id = ?1"))
        .and_then(|mut s| s.query_row(params![id], conversation_from_row).optional())
        .map_err(map_err)
}

fn page_from(mut rows: Vec<Message>, limit: u32, newest_first: bool) -> Page {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if newest_first {
        rows.reverse();
    }
    Page { messages: rows, has_more }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.write(|c| apply_schema(c).map_err(map_err)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)).await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        let (active, idle, max) = self.pool_status();
        Some(PoolStats { active, idle, max })
    }

    async fn upsert_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, name, email, role, avatar, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   role = excluded.role, avatar = excluded.avatar, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![u.id, u.name, u.email, u.role.as_str(), u.avatar, now().timestamp_millis()])
            })
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }

    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT id, name, email, role, avatar FROM users WHERE id = ?1").map_err(map_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let user = stmt
                    .query_row(params![id], |r| {
                        let role: String = r.get(3)?;
                        Ok(User {
                            id: r.get(0)?,
                            name: r.get(1)?,
                            email: r.get(2)?,
                            role: Role::parse(&role).ok_or_else(|| bad_value("role"))?,
                            avatar: r.get(4)?,
                        })
                    })
                    .optional()
                    .map_err(map_err)?;
                out.extend(user);
            }
            Ok(out)
        })
        .await
    }

    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job_id: Option<&str>,
    ) -> StoreResult<(Conversation, bool)> {
        let [ua, ub] = sorted_pair(a, b);
        let job = job_id.map(str::to_owned);
        self.write(move |c| {
            let job_key = job.clone().unwrap_or_default();
            let t = now().timestamp_millis();
            // INSERT OR IGNORE + SELECT: the unique index decides, whichever node gets there first.
            let created = c
                .prepare_cached(
                    "INSERT INTO conversations (id, user_a, user_b, job_key, job_id, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(user_a, user_b, job_key) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![new_id(), ua, ub, job_key, job, t]))
                .map_err(map_err)?
                == 1;
            let conv = c
                .prepare_cached(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM}
                     WHERE c.user_a = ?1 AND c.user_b = ?2 AND c.job_key = ?3"
                ))
                .and_then(|mut s| s.query_row(params![ua, ub, job_key], conversation_from_row))
                .map_err(map_err)?;
            Ok((conv, created))
        })
        .await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let id = id.to_owned();
        self.read(move |c| get_conversation_on(c, &id)).await
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>> {
        let user = user.to_owned();
        let (cms, cid) = cursor.map_or((i64::MAX, String::new()), |c| (c.updated_at_ms, c.id.clone()));
        self.read(move |c| {
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
            let rows = stmt
                .query_map(params![user, cms, cid, limit], conversation_from_row)
                .map_err(map_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err)?;
            Ok(rows)
        })
        .await
    }

    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT user_b FROM conversations WHERE user_a = ?1
                     UNION SELECT user_a FROM conversations WHERE user_b = ?1",
                )
                .map_err(map_err)?;
            stmt.query_map(params![user], |r| r.get(0))
                .map_err(map_err)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(map_err)
        })
        .await
    }

    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        self.write(move |c| {
            if let Some(cmid) = &msg.client_message_id {
                let existing = c
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_message_id = ?2"
                    ))
                    .and_then(|mut s| s.query_row(params![msg.sender_id, cmid], |r| message_from_row(r, 0)).optional())
                    .map_err(map_err)?;
                if let Some(message) = existing {
                    return Ok(Inserted { message, created: false });
                }
            }
            let created_at = now();
            let t = created_at.timestamp_millis();
            let seq: i64 = c
                .prepare_cached(
                    "UPDATE conversations SET last_seq = last_seq + 1, updated_at = MAX(updated_at, ?2),
                       unread_a = unread_a + (user_a = ?3), unread_b = unread_b + (user_b = ?3)
                     WHERE id = ?1 RETURNING last_seq",
                )
                .and_then(|mut s| {
                    s.query_row(params![msg.conversation_id, t, msg.receiver_id], |r| r.get(0)).optional()
                })
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            let message = Message {
                id: new_id(),
                conversation_id: msg.conversation_id,
                seq,
                sender_id: msg.sender_id,
                receiver_id: msg.receiver_id,
                message_type: msg.message_type,
                content: msg.content,
                status: MessageStatus::Sent,
                client_message_id: msg.client_message_id,
                created_at,
            };
            c.prepare_cached(
                "INSERT INTO messages (id, conversation_id, seq, sender_id, receiver_id, message_type, content,
                   status, client_message_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    message.id,
                    message.conversation_id,
                    message.seq,
                    message.sender_id,
                    message.receiver_id,
                    message.message_type.as_str(),
                    message.content,
                    message.status.as_str(),
                    message.client_message_id,
                    t
                ])
            })
            .map_err(map_err)?;
            Ok(Inserted { message, created: true })
        })
        .await
    }

    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
            let fetch = i64::from(q.limit) + 1;
            let rows = match q.before_seq {
                Some(before) => c
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq < ?2
                         ORDER BY seq DESC LIMIT ?3"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![id, before, fetch], |r| message_from_row(r, 0))?
                            .collect::<Result<Vec<_>, _>>()
                    }),
                None => c
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1
                         ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
                    ))
                    .and_then(|mut s| {
                        let skip = i64::try_from(q.skip).unwrap_or(i64::MAX);
                        s.query_map(params![id, fetch, skip], |r| message_from_row(r, 0))?
                            .collect::<Result<Vec<_>, _>>()
                    }),
            }
            .map_err(map_err)?;
            Ok(page_from(rows, q.limit, true))
        })
        .await
    }

    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
        let id = conversation_id.to_owned();
        self.read(move |c| {
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
        })
        .await
    }

    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
        let (id, reader) = (conversation_id.to_owned(), reader.to_owned());
        self.write(move |c| {
            let (last_seq, read_seq): (i64, i64) = c
                .prepare_cached(
                    "SELECT last_seq, CASE WHEN user_a = ?2 THEN read_seq_a ELSE read_seq_b END
                     FROM conversations WHERE id = ?1",
                )
                .and_then(|mut s| s.query_row(params![id, reader], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            let up = up_to_seq.map_or(last_seq, |u| u.min(last_seq));
            // Everything to me at or below `read_seq` is already read.
            let updated = c
                .prepare_cached(
                    "UPDATE messages SET status = 'read'
                     WHERE conversation_id = ?1 AND seq > ?3 AND seq <= ?4 AND receiver_id = ?2 AND status <> 'read'",
                )
                .and_then(|mut s| s.execute(params![id, reader, read_seq, up]))
                .map_err(map_err)?;
            let read_seq = read_seq.max(up);
            let unread: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM messages
                     WHERE conversation_id = ?1 AND seq > ?3 AND receiver_id = ?2 AND status <> 'read'",
                )
                .and_then(|mut s| s.query_row(params![id, reader, read_seq], |r| r.get(0)))
                .map_err(map_err)?;
            c.prepare_cached(
                "UPDATE conversations SET
                   unread_a = CASE WHEN user_a = ?2 THEN ?3 ELSE unread_a END,
                   unread_b = CASE WHEN user_b = ?2 THEN ?3 ELSE unread_b END,
                   read_seq_a = CASE WHEN user_a = ?2 THEN ?4 ELSE read_seq_a END,
                   read_seq_b = CASE WHEN user_b = ?2 THEN ?4 ELSE read_seq_b END
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, reader, unread, read_seq]))
            .map_err(map_err)?;
            Ok(ReadReceipt { up_to_seq: up, read_at: now(), unread_count: unread, updated: updated as u64 })
        })
        .await
    }

    async fn mark_delivered(&self, conversation_id: &str, receiver: &str, up_to_seq: i64) -> StoreResult<u64> {
        let (id, receiver) = (conversation_id.to_owned(), receiver.to_owned());
        self.write(move |c| {
            let Some((last_seq, done_seq)): Option<(i64, i64)> = c
                .prepare_cached(
                    "SELECT last_seq, CASE WHEN user_a = ?2 THEN MAX(read_seq_a, delivered_seq_a)
                                           ELSE MAX(read_seq_b, delivered_seq_b) END
                     FROM conversations WHERE id = ?1",
                )
                .and_then(|mut s| s.query_row(params![id, receiver], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(map_err)?
            else {
                return Ok(0);
            };
            // Never past the newest message: a later one must not count as delivered already.
            let up = up_to_seq.min(last_seq);
            if up <= done_seq {
                return Ok(0);
            }
            let updated = c
                .prepare_cached(
                    "UPDATE messages SET status = 'delivered'
                     WHERE conversation_id = ?1 AND seq > ?3 AND seq <= ?4 AND receiver_id = ?2 AND status = 'sent'",
                )
                .and_then(|mut s| s.execute(params![id, receiver, done_seq, up]))
                .map_err(map_err)?;
            c.prepare_cached(
                "UPDATE conversations SET
                   delivered_seq_a = CASE WHEN user_a = ?2 THEN MAX(delivered_seq_a, ?3) ELSE delivered_seq_a END,
                   delivered_seq_b = CASE WHEN user_b = ?2 THEN MAX(delivered_seq_b, ?3) ELSE delivered_seq_b END
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, receiver, up]))
            .map_err(map_err)?;
            Ok(updated as u64)
        })
        .await
    }

    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        let user = user.to_owned();
        self.read(move |c| {
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
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(store.mark_delivered("c1", "bob", 1).await.unwrap(), 1);
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

    fn note(conversation_id: &str, sender: &str, receiver: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation_id.to_owned(),
            sender_id: sender.to_owned(),
            receiver_id: receiver.to_owned(),
            message_type: MessageType::Text,
            content: "steady".to_owned(),
            client_message_id: None,
        }
    }

    /// The WAL header's checkpoint sequence number: it goes up each time the WAL starts over.
    fn wal_restarts(db: &Path) -> u32 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let header = std::fs::read(wal).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    /// A passive checkpoint alone never copies the whole WAL back while writes go on, so the
    /// WAL never started over and grew for as long as they did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_round_restarts_the_wal_under_steady_writes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for i in 0..8 {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            let (c, _) = store.find_or_create_conversation(&a, &b, None).await.unwrap();
            let (store, stop) = (store.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    store.insert_message(note(&c.id, &a, &b)).await.unwrap();
                }
            }));
        }
        let (mine, _) = store.find_or_create_conversation("me", "you", None).await.unwrap();
        for round in 0..5 {
            store.insert_message(note(&mine.id, "me", "you")).await.unwrap();
            let before = wal_restarts(&path);
            let s = store.clone();
            let (log, copied) = tokio::task::spawn_blocking(move || s.checkpoint()).await.unwrap().unwrap();
            assert_eq!(log, copied, "round {round}: frames left in the WAL");
            // Queued after the round, so its transaction begins after it.
            store.insert_message(note(&mine.id, "me", "you")).await.unwrap();
            assert!(wal_restarts(&path) > before, "round {round}: the WAL did not start over");
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    }
}
