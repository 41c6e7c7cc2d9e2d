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
    chat::model::{MessageStatus, Role},
    coord::{
        Quota,
        cache::local::LocalCache,
        fanout::memory::{MemoryFanout, Published},
        presence::{local::LocalPresence, tracker::SWEEP_GRACE},
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
    kit_with(messages_per_window, Arc::new(LocalCache::default()))
}

fn kit_with(messages_per_window: u32, cache: Arc<dyn crate::coord::Cache>) -> Kit {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("chat.db")).expect("open sqlite"));
    let fanout = Arc::new(MemoryFanout::default());
    let quota = Quota { limit: messages_per_window, window: Duration::from_secs(60) };
    let chat = Arc::new(ChatService::new(
        Backends {
            store,
            presence: Arc::new(LocalPresence::default()),
            cache,
            limiter: Arc::new(LocalRateLimiter::new(&[(LimitKind::Message, quota)])),
            fanout: fanout.clone(),
        },
        Settings { typing_expiry: EXPIRY },
    ));
    Kit { chat, fanout, _dir: dir }
}

fn who(id: &str) -> Identity {
    Identity {
        user: User { id: id.into(), name: id.into(), email: None, role: Role::Customer, avatar: None },
        expires_at: None,
    }
}

impl Kit {
    async fn conversation(&self) -> String {
        self.chat.store().migrate().await.expect("migrate");
        let (view, created) = self.chat.create_conversation(&who("alice"), "bob", None).await.expect("create");
        assert!(created);
        self.fanout.take();
        view.id
    }

    /// A conversation between alice and bob, then alice's first socket (its `user_status` taken).
    async fn alice_online_on(&self, socket: &str) {
        self.conversation().await;
        self.chat.socket_connected("alice", socket).await;
        let online = self.fanout.take();
        assert_eq!(online.len(), 1, "{online:?}");
    }

    async fn online(&self, user: &str) -> bool {
        self.chat.statuses("observer", &[user.to_owned()]).await.unwrap()[0].online
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
                to: Audience::UsersExcept { users: vec!["alice".into(), "bob".into()], socket: "sock-1".into() },
                event: "new_message",
                data: json!({ "message": message }),
            },
            Published {
                to: Audience::Socket("sock-1".into()),
                event: "message_delivered",
                data: json!({ "clientMessageId": "c-1", "message": message }),
            },
            Published {
                to: Audience::Socket("sock-1".into()),
                event: "new_message",
                data: json!({ "message": message })
            },
        ],
        "every other socket, then the sender's: delivered, then its own copy"
    );

    // A retry is answered with the original and published again (recipients dedupe by _id),
    // in case the first attempt failed after its commit.
    let again = k.chat.send_message(&who("alice"), send(&conv, "hi", Some("c-1")), Origin::Rest).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.message.id, sent.message.id);
    assert_eq!(
        k.fanout.take(),
        vec![Published {
            to: Audience::Users(vec!["alice".into(), "bob".into()]),
            event: "new_message",
            data: json!({ "message": message }),
        }],
        "a retried send is delivered again"
    );
}

/// A cache that answers every call with an error once broken (Redis down), counting its hits.
#[derive(Default)]
struct SwitchableCache(LocalCache, std::sync::atomic::AtomicBool, std::sync::atomic::AtomicUsize);

impl SwitchableCache {
    fn check(&self) -> crate::coord::CoordResult<()> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::coord::CoordError::Unavailable("cache refused by the test".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::coord::Cache for SwitchableCache {
    async fn get(
        &self,
        kind: crate::coord::CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
    ) -> crate::coord::CoordResult<Option<String>> {
        self.check()?;
        let hit = self.0.get(kind, user, variant, version).await?;
        if hit.is_some() {
            self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(hit)
    }
    async fn put(
        &self,
        kind: crate::coord::CacheKind,
        user: &str,
        variant: &str,
        version: ViewVersion,
        value: String,
    ) -> crate::coord::CoordResult<()> {
        self.check()?;
        self.0.put(kind, user, variant, version, value).await
    }
}

#[tokio::test]
async fn a_send_needs_no_cache_and_reads_fall_back_to_the_store_while_it_is_down() {
    let cache = Arc::new(SwitchableCache::default());
    let k = kit_with(100, cache.clone());
    let conv = k.conversation().await;
    cache.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = Arc::new(Mutex::new(0));
    let count = acked.clone();
    let ack = Box::new(move |_: &crate::chat::responses::MessageBody<'_>| *count.lock().unwrap() += 1);
    let res = k.chat.send_message(&who("alice"), send(&conv, "hi", Some("c-9")), Origin::Socket { id: "s", ack }).await;
    assert!(res.expect("the send does not touch the cache").created);
    assert_eq!(*acked.lock().unwrap(), 1);
    let events: Vec<_> = k.fanout.take().iter().map(|p| p.event).collect();
    assert_eq!(events, ["new_message", "message_delivered", "new_message"]);
    let unread = k.chat.unread(&who("bob")).await.expect("read from the store");
    assert_eq!(unread.total, 1);
}

#[tokio::test]
async fn cached_views_are_served_until_a_write_and_never_after_it() {
    let cache = Arc::new(SwitchableCache::default());
    let k = kit_with(100, cache.clone());
    let conv = k.conversation().await;
    let hits = || cache.2.load(std::sync::atomic::Ordering::SeqCst);
    let bob = who("bob");
    let total = |u: crate::chat::responses::UnreadSummary| u.total;
    assert_eq!(total(k.chat.unread(&bob).await.unwrap()), 0);
    assert_eq!(total(k.chat.unread(&bob).await.unwrap()), 0);
    assert_eq!(hits(), 1, "the second read is a hit");
    let list = k.chat.list_conversations(&bob, LIST_DEFAULT_LIMIT, None).await.unwrap();
    assert!(list.conversations[0].last_message.is_none());

    // Each write is seen by the next read, with no cache call on the write path.
    k.chat.send_message(&who("alice"), send(&conv, "one", None), Origin::Rest).await.unwrap();
    assert_eq!(total(k.chat.unread(&bob).await.unwrap()), 1);
    let list = k.chat.list_conversations(&bob, LIST_DEFAULT_LIMIT, None).await.unwrap();
    assert_eq!(list.conversations[0].last_message.as_ref().map(|m| m.content.as_str()), Some("one"));
    let before = hits();
    assert_eq!(total(k.chat.unread(&bob).await.unwrap()), 1);
    assert_eq!(hits(), before + 1, "unchanged since: a hit again");

    k.chat.mark_read(&bob, &conv, None).await.unwrap();
    assert_eq!(total(k.chat.unread(&bob).await.unwrap()), 0);
    let list = k.chat.list_conversations(&who("alice"), LIST_DEFAULT_LIMIT, None).await.unwrap();
    assert_eq!(list.conversations[0].last_message.as_ref().map(|m| m.status), Some(MessageStatus::Read));

    // A profile change reaches the partner's cached list.
    let mut renamed = who("alice");
    renamed.user.name = "Alice Smith".into();
    k.chat.register_user(&renamed).await.unwrap();
    let list = k.chat.list_conversations(&bob, LIST_DEFAULT_LIMIT, None).await.unwrap();
    let names: Vec<_> = list.conversations[0].participants.iter().map(|p| p.name.clone()).collect();
    assert!(names.contains(&"Alice Smith".to_owned()), "{names:?}");
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

/// With the clock paused, time jumps straight to the next timer: a timeout that ends 1 ms
/// before the expiry sees nothing only if the expiry timer is not due earlier.
#[tokio::test(start_paused = true)]
async fn the_typing_expiry_is_published_exactly_once_and_not_before() {
    let k = kit(100);
    let conv = k.conversation().await;
    k.chat.typing(&who("alice"), &conv, true).await.unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(k.fanout.take().len(), 1, "the start itself");

    let early = tokio::time::timeout(EXPIRY - Duration::from_millis(1), k.fanout.wait_for(1)).await;
    assert!(early.is_err(), "published before the expiry: {:?}", k.fanout.take());
    tokio::time::timeout(Duration::from_millis(2), k.fanout.wait_for(1)).await.expect("expired by now");
    assert!(start.elapsed() >= EXPIRY, "expired after {:?}", start.elapsed());
    let expired = k.fanout.take();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].event, "user_typing");
    assert_eq!(expired[0].to, Audience::Joined { conversation: conv.clone(), user: "bob".into() });
    assert_eq!(expired[0].data, json!({ "conversationId": conv, "userId": "alice", "isTyping": false }));

    let again = tokio::time::timeout(EXPIRY * 10, k.fanout.wait_for(1)).await;
    assert!(again.is_err(), "a second expiry event: {:?}", k.fanout.take());
}

/// The local limiter runs on tokio's clock, so the paused clock drives the budget: refused with
/// the hint until exactly then, allowed after.
#[tokio::test(start_paused = true)]
async fn a_refused_send_is_allowed_again_once_its_retry_hint_has_passed() {
    let k = kit(2);
    let conv = k.conversation().await;
    for i in 0..2 {
        k.chat.send_message(&who("alice"), send(&conv, &format!("m{i}"), None), Origin::Rest).await.unwrap();
    }
    let refused = |r: Result<_, ApiError>| match r {
        Err(ApiError::RateLimited { retry_after_ms }) => retry_after_ms,
        Ok(_) => panic!("expected rate_limited, the send went through"),
        Err(e) => panic!("expected rate_limited, got {e:?}"),
    };
    // 2 per 60 s: one send comes back every 30 s.
    let hint = refused(k.chat.send_message(&who("alice"), send(&conv, "early", None), Origin::Rest).await);
    assert_eq!(hint, 30_000);
    tokio::time::advance(Duration::from_millis(hint - 1)).await;
    let left = refused(k.chat.send_message(&who("alice"), send(&conv, "still early", None), Origin::Rest).await);
    assert_eq!(left, 1, "the hint counts down with the clock");
    tokio::time::advance(Duration::from_millis(left)).await;
    let sent = k.chat.send_message(&who("alice"), send(&conv, "on time", None), Origin::Rest).await.unwrap();
    assert_eq!(sent.message.seq, 3, "refused sends took no seq");
    refused(k.chat.send_message(&who("alice"), send(&conv, "one back, not two", None), Origin::Rest).await);
}

/// In-process presence has no TTL (this node is the only one that could hold the socket):
/// however long the clock runs, a held socket keeps its user online and upkeep announces nothing.
#[tokio::test(start_paused = true)]
async fn a_held_socket_stays_online_however_long_the_clock_runs() {
    let k = kit(100);
    k.alice_online_on("s1").await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    k.chat.refresh_presence().await;
    assert!(k.fanout.take().is_empty(), "no user_status from the upkeep");
    assert!(k.online("alice").await);
}

/// A socket this node no longer lists (the recording fan-out lists none) is swept only once it
/// is older than the grace period, on tokio's clock; then its user goes offline, announced once.
#[tokio::test(start_paused = true)]
async fn a_socket_that_no_longer_exists_is_swept_offline_after_the_grace_period() {
    let k = kit(100);
    k.alice_online_on("s1").await;

    tokio::time::advance(SWEEP_GRACE - Duration::from_millis(1)).await;
    k.chat.sweep_presence().await;
    assert!(k.fanout.take().is_empty(), "a young socket is left alone");
    assert!(k.online("alice").await);

    tokio::time::advance(Duration::from_millis(2)).await;
    k.chat.sweep_presence().await;
    let offline = k.fanout.take();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!((offline[0].event, offline[0].to.clone()), ("user_status", Audience::Users(vec!["bob".into()])));
    assert_eq!(offline[0].data["online"], false);
    assert!(!k.online("alice").await);
    k.chat.sweep_presence().await;
    assert!(k.fanout.take().is_empty(), "swept once");
}
