//! The store on a client that can reach no server: what it answers without MongoDB (id checks,
//! the collection prefix) and how an outage looks (`Unavailable` within the deadline).

use std::time::Instant;

use bson::oid::ObjectId;
use mongodb::options::ClientOptions;

use super::*;
use crate::{chat::model::MessageType, store::StoreError};

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A store on a client that can reach no server: answers come from the id checks alone, or
/// are `Unavailable` within the deadline — never a panic, never a hang.
async fn offline_store(schema_ready: bool) -> MongoStore {
    let mut o = ClientOptions::parse(format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=100", closed_port()))
        .await
        .unwrap();
    connect::apply_defaults(&mut o);
    let client = Client::with_options(o).unwrap();
    let deadline = Duration::from_secs(3);
    let db = client.database_with_options("chat", connect::enforced(deadline));
    let s = MongoStore::new(db, Names { prefix: "chat_".into() }, deadline, PoolMetrics::new(1));
    s.schema.ready.store(schema_ready, Ordering::Release);
    s
}

#[tokio::test]
async fn collections_carry_the_prefix() {
    let s = offline_store(true).await;
    assert_eq!(
        [s.users.name(), s.conversations.name(), s.messages.name()],
        ["chat_users", "chat_conversations", "chat_messages"]
    );
    assert!(validate_prefix("chat_").is_ok() && validate_prefix("").is_ok());
    for bad in ["a.b", "a b", "$x", "x/y", &"p".repeat(65)] {
        assert!(validate_prefix(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn connect_needs_no_server_and_migrate_says_unavailable_quickly() {
    let port = closed_port();
    let uri = format!("mongodb://user:secret@127.0.0.1:{port}/?serverSelectionTimeoutMS=300");
    let s = MongoStore::connect(&MongoSettings::new(uri, "chat")).await.expect("no round trip at connect");
    let started = Instant::now();
    let err = s.migrate().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(matches!(&err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("secret"), "credentials never in errors: {err}");
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))), "not ready");
}

#[tokio::test]
async fn invalid_ids_answer_like_unknown_ones_without_a_round_trip() {
    let s = offline_store(true).await;
    for bad in ["", "nope", "65a00000000000000000000", "zz0000000000000000000000", "éééééééééééé"] {
        assert_eq!(s.get_conversation(bad).await.unwrap(), None);
        let q = HistoryQuery { before_seq: None, skip: 0, limit: 10 };
        let p = s.history(bad, q).await.unwrap();
        assert!(p.messages.is_empty() && !p.has_more);
        assert!(s.messages_after(bad, 0, 10).await.unwrap().messages.is_empty());
        assert!(matches!(s.mark_read(bad, "u", None).await, Err(StoreError::NotFound)));
        assert_eq!(s.mark_delivered(bad, "u", 3).await.unwrap().updated, 0);
        let cursor = ListCursor { updated_at_ms: 1, id: bad.to_owned() };
        assert!(matches!(s.list_conversations("u", 10, Some(&cursor)).await, Err(StoreError::NotFound)));
        let msg = NewMessage {
            conversation_id: bad.to_owned(),
            sender_id: "a".into(),
            receiver_id: "b".into(),
            message_type: MessageType::Text,
            content: "x".into(),
            client_message_id: None,
        };
        assert!(matches!(s.insert_message(msg).await, Err(StoreError::NotFound)));
    }
    assert!(s.get_users(&[]).await.unwrap().is_empty());
    assert!(s.list_conversations("u", 0, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_outage_is_unavailable() {
    for schema_ready in [true, false] {
        let s = offline_store(schema_ready).await;
        assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
        assert!(matches!(s.get_conversation(&ObjectId::new().to_hex()).await, Err(StoreError::Unavailable(_))));
        let msg = NewMessage {
            conversation_id: ObjectId::new().to_hex(),
            sender_id: "a".into(),
            receiver_id: "b".into(),
            message_type: MessageType::Text,
            content: "x".into(),
            client_message_id: Some("m".into()),
        };
        assert!(matches!(s.insert_message(msg).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(s.find_or_create_conversation("a", "b", None).await, Err(StoreError::Unavailable(_))));
    }
}
