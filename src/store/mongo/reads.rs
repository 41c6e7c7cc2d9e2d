//! The reads: users, conversations (one, a user's list by last activity, partners, unread
//! counts) and message pages (history, sync), each one driver call within the deadline.

use std::collections::HashMap;

use bson::DateTime;

use super::{
    MongoStore,
    errors::map_err,
    ops::{collect, find},
    query::{self, FindSpec},
    schema::{ConversationDoc, MessageDoc, UnreadRow, parse_id},
};
use crate::{
    chat::model::{Conversation, User},
    store::{HistoryQuery, ListCursor, Page, StoreError, StoreResult, ViewVersion},
};

impl MongoStore {
    pub(super) async fn conversation_by_key(&self, key: bson::Document) -> StoreResult<Option<ConversationDoc>> {
        self.conversations.find_one(key).max_time(self.deadline).await.map_err(map_err)
    }
}

pub(super) async fn get_users(s: &MongoStore, ids: &[String]) -> StoreResult<Vec<User>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    s.call(async {
        let found: Vec<User> = collect(s.users.find(query::users_by_ids(ids)), s.deadline).await?;
        let by_id: HashMap<&str, &User> = found.iter().map(|u| (u.id.as_str(), u)).collect();
        // In the order asked for, like the SQLite store.
        Ok(ids.iter().filter_map(|id| by_id.get(id.as_str()).map(|u| (*u).clone())).collect())
    })
    .await
}

pub(super) async fn get_conversation(s: &MongoStore, id: &str) -> StoreResult<Option<Conversation>> {
    let Some(id) = parse_id(id) else { return Ok(None) };
    s.call(async { Ok(s.conversation_by_key(query::by_id(id)).await?.map(ConversationDoc::into_domain)) }).await
}

pub(super) async fn list_conversations(
    s: &MongoStore,
    user: &str,
    limit: u32,
    cursor: Option<&ListCursor>,
) -> StoreResult<Vec<Conversation>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let after = match cursor {
        None => None,
        Some(c) => Some((DateTime::from_millis(c.updated_at_ms), parse_id(&c.id).ok_or(StoreError::NotFound)?)),
    };
    let spec = FindSpec {
        filter: query::conversations_of(user, after),
        sort: query::conversations_order(),
        limit: i64::from(limit),
        skip: None,
        projection: None,
    };
    s.call(async {
        Ok(find(&s.conversations, spec, s.deadline).await?.into_iter().map(ConversationDoc::into_domain).collect())
    })
    .await
}

pub(super) async fn conversation_partners(s: &MongoStore, user: &str) -> StoreResult<Vec<String>> {
    s.call(async {
        let all = s
            .conversations
            .distinct("participants", query::conversations_of(user, None))
            .max_time(s.deadline)
            .await
            .map_err(map_err)?;
        Ok(all.into_iter().filter_map(|p| p.as_str().filter(|p| *p != user).map(str::to_owned)).collect())
    })
    .await
}

pub(super) async fn history(s: &MongoStore, conversation_id: &str, q: HistoryQuery) -> StoreResult<Page> {
    let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
    s.call(async { Ok(page_from(find(&s.messages, query::history(id, &q), s.deadline).await?, q.limit, true)) }).await
}

pub(super) async fn messages_after(
    s: &MongoStore,
    conversation_id: &str,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Page> {
    let Some(id) = parse_id(conversation_id) else { return Ok(empty_page()) };
    let spec = query::messages_after(id, after_seq, i64::from(limit) + 1);
    s.call(async { Ok(page_from(find(&s.messages, spec, s.deadline).await?, limit, false)) }).await
}

pub(super) async fn unread_counts(s: &MongoStore, user: &str) -> StoreResult<Vec<(String, i64)>> {
    s.call(async {
        let unread = s.conversations.clone_with_type::<UnreadRow>();
        let rows =
            collect(unread.find(query::unread_of(user)).projection(query::unread_projection()), s.deadline).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let slot = r.participants.iter().position(|p| p == user)?;
                (r.unread[slot] > 0).then(|| (r.id.to_hex(), r.unread[slot]))
            })
            .collect())
    })
    .await
}

/// Rows (`limit` + 1 asked for) to a page; history comes newest first and is turned around.
fn page_from(rows: Vec<MessageDoc>, limit: u32, newest_first: bool) -> Page {
    let mut messages: Vec<_> = rows.into_iter().map(MessageDoc::into_domain).collect();
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    if newest_first {
        messages.reverse();
    }
    Page { messages, has_more }
}

fn empty_page() -> Page {
    Page { messages: Vec::new(), has_more: false }
}

pub(super) async fn view_version(s: &MongoStore, user: &str) -> StoreResult<ViewVersion> {
    s.call(async {
        let found = s.view_versions.find_one(query::user_key(user)).max_time(s.deadline).await.map_err(map_err)?;
        Ok(found.and_then(|d| d.get_i64("v").ok()).map_or(0, |v| v as ViewVersion))
    })
    .await
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;
    use crate::chat::model::{MessageStatus, MessageType, from_millis};
    use crate::store::mongo::schema::to_bson_time;

    #[test]
    fn pages_are_oldest_first_with_has_more() {
        let m = |seq| MessageDoc {
            id: ObjectId::new(),
            conversation_id: ObjectId::new(),
            seq,
            sender_id: "a".into(),
            receiver_id: "b".into(),
            message_type: MessageType::Text,
            content: "x".into(),
            status: MessageStatus::Sent,
            client_message_id: None,
            created_at: to_bson_time(&from_millis(1)),
        };
        let p = page_from(vec![m(9), m(8), m(7)], 2, true);
        assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9]);
        assert!(p.has_more);
        let p = page_from(vec![m(3), m(4)], 2, false);
        assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(!p.has_more);
    }
}
