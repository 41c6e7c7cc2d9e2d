//! A [`Store`] decorator that gives every backend the same `chat_db_*` metrics and a child span
//! per call, so backends stay free of instrumentation.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{Instrument, info_span};

use super::metrics::db_op;
use crate::{
    chat::model::{Conversation, User},
    store::{
        DeliveryReceipt, HistoryQuery, Inserted, ListCursor, NewMessage, Page, PoolStats, ReadReceipt, Store,
        StoreResult, ViewVersion,
    },
};

pub struct MeteredStore(pub Arc<dyn Store>);

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {
        db_op($op, $call).instrument(info_span!("store", op = $op, db.system = $self.0.kind())).await
    };
}

#[async_trait]
impl Store for MeteredStore {
    async fn migrate(&self) -> StoreResult<()> {
        timed!(self, "migrate", self.0.migrate())
    }
    async fn ping(&self) -> StoreResult<()> {
        timed!(self, "ping", self.0.ping())
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn pool_stats(&self) -> Option<PoolStats> {
        self.0.pool_stats()
    }
    async fn upsert_user(&self, user: &User) -> StoreResult<()> {
        timed!(self, "upsert_user", self.0.upsert_user(user))
    }
    async fn get_users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        timed!(self, "get_users", self.0.get_users(ids))
    }
    async fn find_or_create_conversation(
        &self,
        a: &str,
        b: &str,
        job: Option<&str>,
    ) -> StoreResult<(Conversation, bool)> {
        timed!(self, "find_or_create_conversation", self.0.find_or_create_conversation(a, b, job))
    }
    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        timed!(self, "get_conversation", self.0.get_conversation(id))
    }
    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&ListCursor>,
    ) -> StoreResult<Vec<Conversation>> {
        timed!(self, "list_conversations", self.0.list_conversations(user, limit, cursor))
    }
    async fn conversation_partners(&self, user: &str) -> StoreResult<Vec<String>> {
        timed!(self, "conversation_partners", self.0.conversation_partners(user))
    }
    async fn insert_message(&self, msg: NewMessage) -> StoreResult<Inserted> {
        timed!(self, "insert_message", self.0.insert_message(msg))
    }
    async fn history(&self, id: &str, q: HistoryQuery) -> StoreResult<Page> {
        timed!(self, "history", self.0.history(id, q))
    }
    async fn messages_after(&self, id: &str, after: i64, limit: u32) -> StoreResult<Page> {
        timed!(self, "messages_after", self.0.messages_after(id, after, limit))
    }
    async fn mark_read(&self, id: &str, reader: &str, up_to: Option<i64>) -> StoreResult<ReadReceipt> {
        timed!(self, "mark_read", self.0.mark_read(id, reader, up_to))
    }
    async fn mark_delivered(&self, id: &str, receiver: &str, up_to: i64) -> StoreResult<DeliveryReceipt> {
        timed!(self, "mark_delivered", self.0.mark_delivered(id, receiver, up_to))
    }
    async fn unread_counts(&self, user: &str) -> StoreResult<Vec<(String, i64)>> {
        timed!(self, "unread_counts", self.0.unread_counts(user))
    }
    async fn view_version(&self, user: &str) -> StoreResult<ViewVersion> {
        timed!(self, "view_version", self.0.view_version(user))
    }
    async fn bump_view_versions(&self, users: &[String]) -> StoreResult<()> {
        timed!(self, "bump_view_versions", self.0.bump_view_versions(users))
    }
}
