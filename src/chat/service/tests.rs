//! The service on real in-process backends (SQLite in a temporary directory, local presence,
//! cache and rate limits) with the recording fan-out: what each operation publishes, in which
//! order, and the timers on a paused clock. No Socket.IO server involved.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;

use super::*;
use crate::{
    chat::model::Role,
    coord::{
        Quota,
        cache::local::LocalCache,
        fanout::memory::{MemoryFanout, Published},
        presence::local::LocalPresence,
        ratelimit::local::LocalRateLimiter,
    },
    store::sqlite::SqliteStore,
};

const EXPIRY: Duration = Duration::from_millis(300);

struct Kit {
    chat: Arc<ChatService>,
    fanout: Arc<MemoryFanout>,
    _dir: tempfile::TempDir,
}

fn kit(messages_per_window: u32) -> Kit {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("chat.db")).expect("open sqlite"));
    let fanout = Arc::new(MemoryFanout::default());
    let quota = Quota { limit: messages_per_window, window: Duration::from_secs(60) };
    let chat = Arc::new(ChatService::new(
        Backends {
            store,
            presence: Arc::new(LocalPresence::default()),
            cache: Arc::new(LocalCache::default()),
            limiter: Arc::new(LocalRateLimiter::new(&[(LimitKind::Message, quota)])),
            fanout: fanout.clone(),
        },
        Settings { typing_expiry: EXPIRY },
    ));
    Kit { chat, fanout, _dir: dir }
}

fn who(id: &str) -> Identity {
    Identity { user: User { id: id.into(), name: id.into(), email: None, role: Role::Customer, avatar: None } }
}

impl Kit {
    async fn conversation(&self) -> String {
        self.chat.store().migrate().await.expect("migrate");
        let (view, created) = self.chat.create_conversation(&who("alice"), "bob", None).await.expect("create");
        assert!(created);
        self.fanout.take();
        view.id
    }
}

fn send(conversation: &str, text: &str, cmid: Option<&str>) -> SendInput {
    SendInput {
        conversation_id: conversation.into(),
        content: text.into(),
        message_type: None,
        client_message_id: cmid.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_socket_send_acks_then_tells_the_socket_then_fans_out() {
    let k = kit(100);
    let conv = k.conversation().await;
    let acked: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let log = acked.clone();
    let ack = Box::new(move |b: &crate::chat::responses::MessageBody<'_>| {
        log.lock().unwrap().push(serde_json::to_value(b).unwrap());
    });
    let sent = k
        .chat
        .send_message(&who("alice"), send(&conv, "hi", Some("c-1")), Origin::Socket { id: "sock-1", ack })
        .await
        .unwrap();
    assert!(sent.created);
    let message = serde_json::to_value(&sent.message).unwrap();
    assert_eq!(*acked.lock().unwrap(), vec![json!({ "message": message })], "acked once, with the message");
    assert_eq!(
        k.fanout.take(),
        vec![
            Published {
                to: Audience::Socket("sock-1".into()),
                event: "message_delivered",
                data: json!({ "clientMessageId": "c-1", "message": message }),
            },
            Published {
                to: Audience::Users(vec!["alice".into(), "bob".into()]),
                event: "new_message",
                data: json!({ "message": message }),
            },
        ]
    );

    // A retry is answered with the original and not fanned out again.
    let again = k.chat.send_message(&who("alice"), send(&conv, "hi", Some("c-1")), Origin::Rest).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.message.id, sent.message.id);
    assert!(k.fanout.take().is_empty(), "a retried send publishes nothing");
}

#[tokio::test]
async fn a_failed_fan_out_does_not_fail_a_persisted_send() {
    let k = kit(100);
    let conv = k.conversation().await;
    k.fanout.set_failing(true);
    let sent = k.chat.send_message(&who("bob"), send(&conv, "still stored", None), Origin::Rest).await.unwrap();
    assert!(sent.created);
    k.fanout.set_failing(false);
    let page = k.chat.sync(&who("alice"), &[(conv.clone(), 0)]).await.unwrap();
    assert_eq!(page[0].messages.len(), 1, "the receiver recovers it through sync");
}

#[tokio::test]
async fn the_message_budget_is_enforced_with_a_retry_hint() {
    let k = kit(2);
    let conv = k.conversation().await;
    for i in 0..2 {
        k.chat.send_message(&who("alice"), send(&conv, &format!("m{i}"), None), Origin::Rest).await.unwrap();
    }
    let err = k.chat.send_message(&who("alice"), send(&conv, "one too many", None), Origin::Rest).await.unwrap_err();
    match err {
        ApiError::RateLimited { retry_after_ms } => assert!(retry_after_ms > 0 && retry_after_ms <= 30_000),
        e => panic!("expected rate_limited, got {e:?}"),
    }
    // The budget is per user: the other participant still sends.
    k.chat.send_message(&who("bob"), send(&conv, "mine", None), Origin::Rest).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn typing_expires_by_itself_after_the_configured_time() {
    let k = kit(100);
    let conv = k.conversation().await;
    let start = tokio::time::Instant::now();
    k.chat.typing(&who("alice"), &conv, true).await.unwrap();
    k.fanout.wait_for(2).await;
    let waited = start.elapsed();
    let events = k.fanout.take();
    let to = Audience::Joined { conversation: conv.clone(), user: "bob".into() };
    assert_eq!(events.len(), 2);
    for (e, typing) in events.iter().zip([true, false]) {
        assert_eq!(e.to, to, "only the other side's joined sockets");
        assert_eq!(e.data, json!({ "conversationId": conv, "userId": "alice", "isTyping": typing }));
    }
    assert!(waited >= EXPIRY, "expired after {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn typing_expiry_counts_from_the_latest_start_and_a_stop_cancels_it() {
    let k = kit(100);
    let conv = k.conversation().await;
    k.chat.typing(&who("alice"), &conv, true).await.unwrap();
    tokio::time::sleep(EXPIRY / 2).await;
    let second = tokio::time::Instant::now();
    // Coalesced: a start while typing extends the state without a second broadcast.
    for _ in 0..10 {
        k.chat.typing(&who("alice"), &conv, true).await.unwrap();
    }
    k.fanout.wait_for(2).await;
    assert!(second.elapsed() >= EXPIRY, "the first start's timer must not end the second");
    let typing: Vec<_> = k.fanout.take().into_iter().map(|e| e.data["isTyping"].clone()).collect();
    assert_eq!(typing, [json!(true), json!(false)]);

    k.chat.typing(&who("alice"), &conv, true).await.unwrap();
    k.chat.typing(&who("alice"), &conv, false).await.unwrap();
    tokio::time::sleep(EXPIRY * 3).await;
    let typing: Vec<_> = k.fanout.take().into_iter().map(|e| e.data["isTyping"].clone()).collect();
    assert_eq!(typing, [json!(true), json!(false)], "no expiry event after an explicit stop");
}

#[tokio::test(start_paused = true)]
async fn presence_announces_the_first_and_last_socket_to_partners() {
    let k = kit(100);
    k.conversation().await;
    k.chat.socket_connected("alice", "s1").await;
    k.chat.socket_connected("alice", "s2").await;
    let online = k.fanout.take();
    assert_eq!(online.len(), 1, "one user_status for the first socket only");
    assert_eq!(online[0].to, Audience::Users(vec!["bob".into()]));
    assert_eq!(online[0].event, "user_status");
    assert_eq!(online[0].data["online"], true);
    assert!(k.chat.statuses("bob", &["alice".into()]).await.unwrap()[0].online);

    k.chat.socket_disconnected("alice", "s1").await;
    assert!(k.fanout.take().is_empty(), "still online through s2");
    k.chat.socket_disconnected("alice", "s2").await;
    let offline = k.fanout.take();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].data["online"], false);
    assert!(offline[0].data["lastSeen"].is_string());
    assert!(!k.chat.statuses("bob", &["alice".into()]).await.unwrap()[0].online);
}
