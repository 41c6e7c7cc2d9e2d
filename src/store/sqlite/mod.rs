//! Embedded SQLite store (the default), also shareable by several nodes on one host.
//!
//! Writes go through one writer thread per process that groups queued writes into a single
//! `BEGIN IMMEDIATE … COMMIT` (group commit), each write inside its own savepoint so one failure
//! does not undo the others. A caller is answered only after COMMIT returns, so an acknowledged
//! write is on disk (WAL, `synchronous=FULL` by default; `normal` skips the fsync per commit and
//! still survives a process crash, not a power loss). Across processes the writers take turns
//! (an flock pair, see [`turn`]) on top of SQLite's own write lock; `seq` is taken by
//! `UPDATE … SET last_seq = last_seq + 1 RETURNING` inside the writing transaction, so it is
//! gap-free whoever writes.
//! Reads use a small pool of read connections.
//!
//! # Layout
//! - this file: [`SqliteStore`] (opening, the background threads) and its [`Store`] impl, each
//!   method handing one function of `reads` or `writes` to the reader pool or the writer.
//! - `schema`: connection settings and the schema (created, or an older file brought up to it).
//! - `writer`: the writer thread: group commit, savepoints, answering after COMMIT.
//! - `writes`: the write statements, `seq` allocation among them; `reads`: the read pool and
//!   the read statements.
//! - `rows`: rows ↔ domain records; `errors`: SQLite errors → [`StoreError`].
//! - `checkpoint`: copying the WAL back off the write path; `turn`: the writers' turns.

mod checkpoint;
mod errors;
mod reads;
mod rows;
mod schema;
mod turn;
mod writer;
mod writes;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc as std_mpsc},
};

use async_trait::async_trait;
use deadpool_sqlite::Pool;

use super::{
    DeliveryReceipt, HistoryQuery, Inserted, ListCursor, NewMessage, Page, PoolStats, ReadReceipt, Store, StoreError,
    StoreResult, ViewVersion, sorted_pair,
};
use crate::chat::model::{Conversation, User};
use checkpoint::Checkpointer;
use errors::map_err;
use schema::{apply_schema, open_connection};
use turn::Turn;
use writer::WriteJob;

/// How a commit reaches the disk (`PRAGMA synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every (group) commit: survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

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
        let turn =
            Turn::open(path).inspect_err(|e| tracing::warn!(error = %e, "cannot open the writer lock files")).ok();
        let writer = writer::start(conn, turn)?;
        let checkpointer = Arc::new(Mutex::new(Checkpointer::open(path, durability)?));
        let (stop_checkpoints, stop) = std_mpsc::channel();
        let background = checkpointer.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint::run(background, stop))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let readers = reads::open_pool(path)?;
        Ok(Self { path: path.to_owned(), writer, readers, checkpointer, _stop_checkpoints: stop_checkpoints })
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
        let user = user.clone();
        self.write(move |c| writes::upsert_user(c, &user)).await
    }

    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        let ids = ids.to_vec();
        self.read(move |c| reads::get_users(c, &ids)).await
    }

    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job_id: Option<&str>,
    ) -> StoreResult<(Conversation, bool)> {
        let [ua, ub] = sorted_pair(a, b);
        let job = job_id.map(str::to_owned);
        self.write(move |c| writes::find_or_create_conversation(c, &ua, &ub, job.as_deref())).await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let id = id.to_owned();
        self.read(move |c| reads::get_conversation(c, &id)).await
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>> {
        let (user, cursor) = (user.to_owned(), cursor.cloned());
        self.read(move |c| reads::list_conversations(c, &user, limit, cursor.as_ref())).await
    }

    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        let user = user.to_owned();
        self.read(move |c| reads::conversation_partners(c, &user)).await
    }

    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        self.write(move |c| writes::insert_message(c, msg)).await
    }

    async fn history(&self, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
        let id = conversation_id.to_owned();
        self.read(move |c| reads::history(c, &id, q)).await
    }

    async fn messages_after(&self, conversation_id: &str, after_seq: i64, limit: u32) -> StoreResult<Page> {
        let id = conversation_id.to_owned();
        self.read(move |c| reads::messages_after(c, &id, after_seq, limit)).await
    }

    async fn mark_read(&self, conversation_id: &str, reader: &str, up_to_seq: Option<i64>) -> StoreResult<ReadReceipt> {
        let (id, reader) = (conversation_id.to_owned(), reader.to_owned());
        self.write(move |c| writes::mark_read(c, &id, &reader, up_to_seq)).await
    }

    async fn mark_delivered(
        &self,
        conversation_id: &str,
        receiver: &str,
        up_to_seq: i64,
    ) -> StoreResult<DeliveryReceipt> {
        let (id, receiver) = (conversation_id.to_owned(), receiver.to_owned());
        self.write(move |c| writes::mark_delivered(c, &id, &receiver, up_to_seq)).await
    }

    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        let user = user.to_owned();
        self.read(move |c| reads::unread_counts(c, &user)).await
    }

    async fn view_version(&self, user: &str) -> StoreResult<ViewVersion> {
        let user = user.to_owned();
        self.read(move |c| reads::view_version(c, &user)).await
    }

    async fn bump_view_versions(&self, users: &[String]) -> StoreResult<()> {
        let users = users.to_vec();
        self.write(move |c| writes::bump_view_versions(c, &users)).await
    }
}
