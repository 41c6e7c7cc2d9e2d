//! Rows ↔ domain records: the column lists every query selects and the functions that turn a
//! row into a [`Message`], [`Conversation`] or [`User`] (a stored enum that does not parse is a
//! column type error, never a panic), and rows into a [`Page`].

use rusqlite::Row;

use crate::{
    chat::model::{Conversation, Message, MessageStatus, MessageType, Role, User, from_millis},
    store::Page,
};

pub(super) const CONVERSATION_COLUMNS: &str = "c.id, c.user_a, c.user_b, c.job_id, c.last_seq, c.unread_a, c.unread_b, \
     c.created_at, c.updated_at, m.id, m.seq, m.sender_id, m.receiver_id, m.message_type, m.content, m.status, \
     m.client_message_id, m.created_at";
pub(super) const CONVERSATION_FROM: &str =
    "conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq AND c.last_seq > 0";
pub(super) const MESSAGE_COLUMNS: &str =
    "id, seq, sender_id, receiver_id, message_type, content, status, client_message_id, created_at, conversation_id";

fn bad_value(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

pub(super) fn message_from_row(r: &Row<'_>, base: usize) -> rusqlite::Result<Message> {
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

pub(super) fn conversation_from_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
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

pub(super) fn page_from(mut rows: Vec<Message>, limit: u32, newest_first: bool) -> Page {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if newest_first {
        rows.reverse();
    }
    Page { messages: rows, has_more }
}

/// `SELECT id, name, email, role, avatar FROM users`.
pub(super) fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get(2)?,
        role: Role::parse(&role).ok_or_else(|| bad_value("role"))?,
        avatar: r.get(4)?,
    })
}
