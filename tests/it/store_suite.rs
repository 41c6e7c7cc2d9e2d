//! One store test suite that every backend must pass (the contract of `jobsphere_chat::store`).
//!
//! Each case is a backend-independent `async fn case_xxx(store: Arc<dyn Store>)`; `store_cases!`
//! turns it into `sqlite_xxx` (a fresh SQLite file) and `mongo_xxx` (a fresh database on
//! `MONGODB_URI`, dropped afterwards; `#[ignore]`d, so reported as skipped, unless run with
//! `--run-ignored` as `scripts/test.sh` does when `MONGODB_URI` is set).

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use jobsphere_chat::{
    chat::model::{Conversation, Message, MessageStatus, MessageType, Role, Timestamp, User, now},
    store::{HistoryQuery, Inserted, ListCursor, NewMessage, Page, Store, StoreError},
};
use tempfile::TempDir;
use tokio::sync::Barrier;

use crate::harness::unique;

/// Upper bound of one case: a store that deadlocks fails the test instead of hanging it.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

async fn sqlite_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = jobsphere_chat::store::sqlite::SqliteStore::open(&dir.path().join("chat.db")).expect("open sqlite");
    let store: Arc<dyn Store> = Arc::new(store);
    store.migrate().await.expect("migrate sqlite");
    (store, dir)
}

/// Two stores on one database, as two nodes sharing it (two SQLite handles on one file).
async fn sqlite_pair() -> (Arc<dyn Store>, Arc<dyn Store>, TempDir) {
    let (first, dir) = sqlite_store().await;
    let second = jobsphere_chat::store::sqlite::SqliteStore::open(&dir.path().join("chat.db")).expect("open again");
    let second: Arc<dyn Store> = Arc::new(second);
    second.migrate().await.expect("migrate the second handle");
    (first, second, dir)
}

/// Runs a case on `nodes` stores sharing a fresh database of `MONGODB_URI`, then drops that
/// database whether the case passed or not. The `mongo_*` tests are `#[ignore]`d so that
/// without a server they are reported as skipped; `scripts/test.sh` runs them when
/// `MONGODB_URI` is set (docs/mongodb.md).
async fn mongo_case<F, Fut>(name: &'static str, nodes: usize, case: F)
where
    F: FnOnce(Vec<Arc<dyn Store>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let uri = std::env::var("MONGODB_URI").expect("the mongo_* store cases need MONGODB_URI (docs/mongodb.md)");
    let db = unique("suite");
    let settings = jobsphere_chat::store::mongo::MongoSettings::new(&uri, &db);
    let mut stores = Vec::new();
    for _ in 0..nodes {
        let store = jobsphere_chat::store::mongo::connect(&settings).await.expect("connect to MongoDB");
        store.migrate().await.expect("migrate mongo");
        stores.push(store);
    }
    let outcome = tokio::spawn(run_case(name, case(stores))).await;
    drop_database(&uri, &db).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Test databases do not pile up on the server.
async fn drop_database(uri: &str, db: &str) {
    crate::harness::drop_mongo_database(uri, db).await.unwrap_or_else(|e| panic!("dropping test database {db}: {e}"));
}

async fn run_case<F: Future<Output = ()>>(name: &str, case: F) {
    let started = std::time::Instant::now();
    tokio::time::timeout(CASE_TIMEOUT, case)
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out after {CASE_TIMEOUT:?}"));
    println!("{name}: {:?}", started.elapsed());
}

macro_rules! store_cases {
    ($($case:ident => $sqlite:ident, $mongo:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (store, _dir) = sqlite_store().await;
            run_case(stringify!($sqlite), $case(store)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs MONGODB_URI"]
        async fn $mongo() {
            mongo_case(stringify!($mongo), 1, |mut s| $case(s.remove(0))).await;
        }
    )*};
}

store_cases! {
    case_migrate_idempotent => sqlite_migrate_idempotent, mongo_migrate_idempotent;
    case_users => sqlite_users, mongo_users;
    case_find_or_create => sqlite_find_or_create, mongo_find_or_create;
    case_find_or_create_concurrent => sqlite_find_or_create_concurrent, mongo_find_or_create_concurrent;
    case_seq_sequential => sqlite_seq_sequential, mongo_seq_sequential;
    case_seq_concurrent => sqlite_seq_concurrent, mongo_seq_concurrent;
    case_dedup => sqlite_dedup, mongo_dedup;
    case_dedup_concurrent => sqlite_dedup_concurrent, mongo_dedup_concurrent;
    case_insert_unknown_conversation => sqlite_insert_unknown_conversation, mongo_insert_unknown_conversation;
    case_history => sqlite_history, mongo_history;
    case_messages_after => sqlite_messages_after, mongo_messages_after;
    case_mark_read => sqlite_mark_read, mongo_mark_read;
    case_mark_delivered => sqlite_mark_delivered, mongo_mark_delivered;
    case_unread_counts => sqlite_unread_counts, mongo_unread_counts;
    case_list_conversations => sqlite_list_conversations, mongo_list_conversations;
    case_conversation_partners => sqlite_conversation_partners, mongo_conversation_partners;
    case_timestamps => sqlite_timestamps, mongo_timestamps;
    case_view_versions => sqlite_view_versions, mongo_view_versions;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_nodes_one_database() {
    let (first, second, _dir) = sqlite_pair().await;
    run_case("sqlite_two_nodes_one_database", case_two_nodes(first, second)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MONGODB_URI"]
async fn mongo_two_nodes_one_database() {
    mongo_case("mongo_two_nodes_one_database", 2, |mut s| {
        let second = s.pop().unwrap();
        case_two_nodes(s.pop().unwrap(), second)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// helpers

fn new_message(conv: &Conversation, from: &str, content: &str, client_message_id: Option<&str>) -> NewMessage {
    assert!(conv.has_participant(from), "{from} is not in {conv:?}");
    NewMessage {
        conversation_id: conv.id.clone(),
        sender_id: from.to_owned(),
        receiver_id: conv.other(from).to_owned(),
        message_type: MessageType::Text,
        content: content.to_owned(),
        client_message_id: client_message_id.map(str::to_owned),
    }
}

/// Inserts a new message (no clientMessageId) and asserts it was created.
async fn send(store: &Arc<dyn Store>, conv: &Conversation, from: &str, content: &str) -> Message {
    let ins = store.insert_message(new_message(conv, from, content, None)).await.expect("insert_message");
    assert!(ins.created, "a message without clientMessageId must be created: {ins:?}");
    ins.message
}

async fn conversation(store: &Arc<dyn Store>, a: &str, b: &str, job: Option<&str>) -> Conversation {
    store.find_or_create_conversation(a, b, job).await.expect("find_or_create_conversation").0
}

async fn reload(store: &Arc<dyn Store>, id: &str) -> Conversation {
    store.get_conversation(id).await.expect("get_conversation").unwrap_or_else(|| panic!("conversation {id} vanished"))
}

/// Every message of a conversation, oldest first.
async fn all_messages(store: &Arc<dyn Store>, id: &str) -> Vec<Message> {
    let page = store.messages_after(id, 0, 10_000).await.expect("messages_after");
    assert!(!page.has_more);
    page.messages
}

fn seqs(page: &Page) -> Vec<i64> {
    page.messages.iter().map(|m| m.seq).collect()
}

fn status_by_seq(messages: &[Message]) -> BTreeMap<i64, MessageStatus> {
    messages.iter().map(|m| (m.seq, m.status)).collect()
}

fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Waits (without sleeping) until the millisecond clock has moved past `t`, so that the next
/// write gets a strictly later timestamp and "most recent activity" has a known order.
async fn after_millisecond(t: Timestamp) {
    while now() <= t {
        tokio::task::yield_now().await;
    }
}

fn user_record(id: &str, name: &str, role: Role, avatar: Option<&str>) -> User {
    User {
        id: id.to_owned(),
        name: name.to_owned(),
        email: Some(format!("{id}@example.com")),
        role,
        avatar: avatar.map(str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------------
// cases

async fn case_migrate_idempotent(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    let m = send(&store, &conv, "alice", "before the second migrate").await;
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    store.ping().await.expect("ping");
    assert!(!store.kind().is_empty());
    assert_eq!(all_messages(&store, &conv.id).await, vec![m]);
    let (again, created) = store.find_or_create_conversation("bob", "alice", None).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, conv.id);
}

async fn case_users(store: Arc<dyn Store>) {
    let alice = user_record("alice", "Alice", Role::Customer, Some("https://img/alice.png"));
    let bob = user_record("bob", "Bob", Role::Contractor, None);
    store.upsert_user(&alice).await.unwrap();
    store.upsert_user(&bob).await.unwrap();
    assert_eq!(store.get_users(&["alice".to_owned()]).await.unwrap(), vec![alice.clone()]);

    // Upsert again: name and role change, still one record.
    let alice2 = user_record("alice", "Alice Smith", Role::Admin, Some("https://img/alice.png"));
    store.upsert_user(&alice2).await.unwrap();
    assert_eq!(store.get_users(&["alice".to_owned()]).await.unwrap(), vec![alice2.clone()]);

    // Unknown ids are ignored; known ones all come back (order not part of the contract).
    let mut got = store
        .get_users(&["nobody".to_owned(), "bob".to_owned(), "alice".to_owned(), "ghost".to_owned()])
        .await
        .unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, vec![alice2, bob]);
    assert!(store.get_users(&["nobody".to_owned()]).await.unwrap().is_empty());
    assert!(store.get_users(&[]).await.unwrap().is_empty());
}

async fn case_find_or_create(store: Arc<dyn Store>) {
    let (c, created) = store.find_or_create_conversation("bob", "alice", None).await.unwrap();
    assert!(created, "first call creates");
    assert!(is_object_id(&c.id), "id {:?} is not an ObjectId hex string", c.id);
    assert_eq!(c.participants, ["alice".to_owned(), "bob".to_owned()], "participants are stored sorted");
    assert_eq!(c.job_id, None);
    assert_eq!(c.last_seq, 0);
    assert_eq!(c.last_message, None);
    assert_eq!(c.unread, [0, 0]);
    assert!(c.created_at <= c.updated_at);

    let (again, created) = store.find_or_create_conversation("bob", "alice", None).await.unwrap();
    assert!(!created, "second call finds");
    assert_eq!(again, c);
    let (swapped, created) = store.find_or_create_conversation("alice", "bob", None).await.unwrap();
    assert!(!created, "(a, b) and (b, a) are the same conversation");
    assert_eq!(swapped, c);
    assert_eq!(store.get_conversation(&c.id).await.unwrap(), Some(c.clone()));

    let (job1, created) = store.find_or_create_conversation("alice", "bob", Some("job-1")).await.unwrap();
    assert!(created, "a jobId makes a different conversation");
    assert_ne!(job1.id, c.id);
    assert_eq!(job1.job_id.as_deref(), Some("job-1"));
    let (job1b, created) = store.find_or_create_conversation("bob", "alice", Some("job-1")).await.unwrap();
    assert!(!created);
    assert_eq!(job1b.id, job1.id);

    let (job2, created) = store.find_or_create_conversation("alice", "bob", Some("job-2")).await.unwrap();
    assert!(created, "another jobId, another conversation");
    assert!(job2.id != job1.id && job2.id != c.id);

    let (other, created) = store.find_or_create_conversation("alice", "carol", None).await.unwrap();
    assert!(created, "another pair, another conversation");
    assert!(![&c.id, &job1.id, &job2.id].contains(&&other.id));

    // None is still the same after the job conversations exist.
    let (none_again, created) = store.find_or_create_conversation("alice", "bob", None).await.unwrap();
    assert!(!created);
    assert_eq!(none_again.id, c.id);

    assert_eq!(store.get_conversation(&jobsphere_chat::chat::model::new_id()).await.unwrap(), None);
}

async fn case_find_or_create_concurrent(store: Arc<dyn Store>) {
    for job in [None, Some("job-race")] {
        let barrier = Arc::new(Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let job = job.map(str::to_owned);
                tokio::spawn(async move {
                    let (a, b) = if i % 2 == 0 { ("alice", "bob") } else { ("bob", "alice") };
                    barrier.wait().await;
                    store.find_or_create_conversation(a, b, job.as_deref()).await
                })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut created = 0;
        for t in tasks {
            let (c, was_created) = t.await.expect("task").expect("find_or_create_conversation");
            ids.insert(c.id);
            created += usize::from(was_created);
        }
        assert_eq!(ids.len(), 1, "job {job:?}: concurrent calls made several conversations: {ids:?}");
        assert_eq!(created, 1, "job {job:?}: exactly one call must report created");
    }
    let partners = store.conversation_partners("alice").await.unwrap();
    assert_eq!(partners, vec!["bob".to_owned()]);
}

async fn case_seq_sequential(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    let plan = [("alice", "one"), ("alice", "two"), ("bob", "three"), ("alice", "four"), ("bob", "five")];
    let mut ids = HashSet::new();
    for (i, (from, content)) in plan.iter().enumerate() {
        let t0 = now();
        let m = send(&store, &conv, from, content).await;
        let t1 = now();
        assert_eq!(m.seq, i as i64 + 1);
        assert!(is_object_id(&m.id), "message id {:?}", m.id);
        assert!(ids.insert(m.id.clone()), "duplicate message id");
        assert_eq!(m.conversation_id, conv.id);
        assert_eq!(m.sender_id, *from);
        assert_eq!(m.receiver_id, conv.other(from));
        assert_eq!(m.message_type, MessageType::Text);
        assert_eq!(m.content, *content);
        assert_eq!(m.status, MessageStatus::Sent);
        assert_eq!(m.client_message_id, None);
        assert!(t0 <= m.created_at && m.created_at <= t1, "createdAt {} not within the call", m.created_at);
    }
    // Other message types are stored as given.
    let mut img = new_message(&conv, "bob", "https://img/1.png", None);
    img.message_type = MessageType::Image;
    let img = store.insert_message(img).await.unwrap().message;
    assert_eq!((img.seq, img.message_type), (6, MessageType::Image));

    let c = reload(&store, &conv.id).await;
    assert_eq!(c.last_seq, 6);
    assert_eq!(c.last_message.as_ref(), Some(&img));
    assert_eq!(c.unread_of("bob"), 3, "alice sent bob 3 messages");
    assert_eq!(c.unread_of("alice"), 3, "bob sent alice 3 messages");
    let all = all_messages(&store, &conv.id).await;
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    assert_eq!(all.last(), Some(&img));
}

async fn case_seq_concurrent(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    // A second conversation written at the same time must have its own independent seq.
    let side = conversation(&store, "alice", "carol", None).await;
    let barrier = Arc::new(Barrier::new(110));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (store, barrier, conv) = (store.clone(), barrier.clone(), conv.clone());
        let from = if i % 2 == 0 { "alice" } else { "bob" };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.insert_message(new_message(&conv, from, &format!("{from}-{i}"), None)).await
        }));
    }
    for i in 0..10 {
        let (store, barrier, side) = (store.clone(), barrier.clone(), side.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.insert_message(new_message(&side, "carol", &format!("side-{i}"), None)).await
        }));
    }
    let mut inserted: Vec<Message> = Vec::new();
    let mut side_inserted: Vec<Message> = Vec::new();
    for t in tasks {
        let Inserted { message, created } = t.await.expect("task").expect("insert_message");
        assert!(created);
        if message.conversation_id == conv.id { inserted.push(message) } else { side_inserted.push(message) }
    }
    inserted.sort_by_key(|m| m.seq);
    assert_eq!(inserted.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>(), "gap or dup");
    side_inserted.sort_by_key(|m| m.seq);
    assert_eq!(side_inserted.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());

    // What is stored is exactly what the inserts returned.
    assert_eq!(all_messages(&store, &conv.id).await, inserted);
    let c = reload(&store, &conv.id).await;
    assert_eq!(c.last_seq, 100);
    assert_eq!(c.last_message.as_ref(), Some(&inserted[99]), "lastMessage must be the seq-100 message");
    let to_bob = inserted.iter().filter(|m| m.receiver_id == "bob").count() as i64;
    let to_alice = inserted.iter().filter(|m| m.receiver_id == "alice").count() as i64;
    assert_eq!((to_bob, to_alice), (50, 50));
    assert_eq!(c.unread_of("bob"), to_bob);
    assert_eq!(c.unread_of("alice"), to_alice);
    let newest = inserted.iter().map(|m| m.created_at).max().unwrap();
    assert!(c.updated_at >= newest, "updatedAt {} older than the newest message {newest}", c.updated_at);

    let s = reload(&store, &side.id).await;
    assert_eq!((s.last_seq, s.unread_of("alice"), s.unread_of("carol")), (10, 10, 0));
}

async fn case_dedup(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    let first = store.insert_message(new_message(&conv, "alice", "original", Some("cm-1"))).await.unwrap();
    assert!(first.created);
    assert_eq!(first.message.seq, 1);
    assert_eq!(first.message.client_message_id.as_deref(), Some("cm-1"));

    // A retry (even with other content) returns the original and consumes no seq.
    let retry = store.insert_message(new_message(&conv, "alice", "retried", Some("cm-1"))).await.unwrap();
    assert!(!retry.created, "a retry must report created=false");
    assert_eq!(retry.message, first.message);
    let next = send(&store, &conv, "alice", "next").await;
    assert_eq!(next.seq, 2, "the retry must not consume a seq");

    // The same clientMessageId from the other sender is another message.
    let other = store.insert_message(new_message(&conv, "bob", "bob's", Some("cm-1"))).await.unwrap();
    assert!(other.created);
    assert_ne!(other.message.id, first.message.id);
    assert_eq!(other.message.seq, 3);

    let c = reload(&store, &conv.id).await;
    assert_eq!(c.last_seq, 3);
    assert_eq!(c.unread_of("bob"), 2, "a retry must not count as unread again");
    assert_eq!(c.unread_of("alice"), 1);
    let all = all_messages(&store, &conv.id).await;
    assert_eq!(all.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["original", "next", "bob's"]);
}

async fn case_dedup_concurrent(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    send(&store, &conv, "bob", "before").await;
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (store, barrier, conv) = (store.clone(), barrier.clone(), conv.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.insert_message(new_message(&conv, "alice", &format!("attempt {i}"), Some("burst"))).await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let ins = t.await.expect("task").expect("insert_message with a duplicate clientMessageId");
        assert_eq!(ins.message.seq, 2);
        ids.insert(ins.message.id);
        created += usize::from(ins.created);
    }
    assert_eq!(ids.len(), 1, "concurrent retries made several messages");
    assert_eq!(created, 1, "exactly one concurrent insert creates");
    let c = reload(&store, &conv.id).await;
    assert_eq!(c.last_seq, 2);
    assert_eq!(c.unread_of("bob"), 1);
    assert_eq!(all_messages(&store, &conv.id).await.len(), 2);
    assert_eq!(send(&store, &conv, "alice", "after").await.seq, 3);
}

async fn case_insert_unknown_conversation(store: Arc<dyn Store>) {
    let real = conversation(&store, "alice", "bob", None).await;
    let mut ghost = real.clone();
    ghost.id = jobsphere_chat::chat::model::new_id();
    match store.insert_message(new_message(&ghost, "alice", "into the void", None)).await {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    match store.insert_message(new_message(&ghost, "alice", "into the void", Some("void-1"))).await {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound with a clientMessageId, got {other:?}"),
    }
    assert!(store.messages_after(&ghost.id, 0, 10).await.unwrap().messages.is_empty());
    // Nothing leaked into the real conversation; the failed clientMessageId is still free.
    let ok = store.insert_message(new_message(&real, "alice", "here", Some("void-1"))).await.unwrap();
    assert!(ok.created);
    assert_eq!(ok.message.seq, 1);
}

async fn case_history(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    let other = conversation(&store, "alice", "carol", None).await;
    for i in 1..=25 {
        send(&store, &conv, if i % 3 == 0 { "bob" } else { "alice" }, &format!("m{i}")).await;
        if i % 10 == 0 {
            send(&store, &other, "carol", "elsewhere").await;
        }
    }
    let q = |before_seq, skip, limit| HistoryQuery { before_seq, skip, limit };

    let newest = store.history(&conv.id, q(None, 0, 10)).await.unwrap();
    assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>(), "newest page first, oldest first inside");
    assert!(newest.has_more);
    assert!(newest.messages.iter().all(|m| m.conversation_id == conv.id && m.content == format!("m{}", m.seq)));

    // before_seq walks the whole history, no duplicates, no omissions.
    for limit in [1u32, 4, 5, 10, 25, 30] {
        let mut walked: Vec<i64> = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = store.history(&conv.id, q(before, 0, limit)).await.unwrap();
            pages += 1;
            assert!(pages <= 30, "limit {limit}: paging does not end");
            assert!(page.messages.len() <= limit as usize);
            let s = seqs(&page);
            assert!(s.windows(2).all(|w| w[0] + 1 == w[1]), "limit {limit}: page not contiguous ascending: {s:?}");
            if let (Some(b), Some(last)) = (before, s.last()) {
                assert_eq!(last + 1, b, "limit {limit}: page must end right before {b}");
            }
            walked.splice(0..0, s.iter().copied());
            if !page.has_more {
                break;
            }
            before = Some(s[0]);
        }
        assert_eq!(walked, (1..=25).collect::<Vec<_>>(), "limit {limit}");
        assert_eq!(pages, 25usize.div_ceil(limit as usize), "limit {limit}: has_more must be false on the last page");
    }

    // Page N = skip (N-1)·limit.
    let page = |n: u64| store.history(&conv.id, q(None, (n - 1) * 10, 10));
    let (p1, p2, p3, p4) =
        (page(1).await.unwrap(), page(2).await.unwrap(), page(3).await.unwrap(), page(4).await.unwrap());
    assert_eq!((seqs(&p1), p1.has_more), ((16..=25).collect(), true));
    assert_eq!((seqs(&p2), p2.has_more), ((6..=15).collect(), true));
    assert_eq!((seqs(&p3), p3.has_more), ((1..=5).collect(), false));
    assert_eq!((seqs(&p4), p4.has_more), (vec![], false));
    let exact = store.history(&conv.id, q(None, 15, 10)).await.unwrap();
    assert_eq!((seqs(&exact), exact.has_more), ((1..=10).collect(), false), "exactly the rest: no more");

    // before_seq wins over skip; edges.
    let b = store.history(&conv.id, q(Some(12), 100, 3)).await.unwrap();
    assert_eq!((seqs(&b), b.has_more), (vec![9, 10, 11], true));
    let b = store.history(&conv.id, q(Some(1), 0, 10)).await.unwrap();
    assert_eq!((seqs(&b), b.has_more), (vec![], false));
    let b = store.history(&conv.id, q(Some(1000), 0, 3)).await.unwrap();
    assert_eq!((seqs(&b), b.has_more), (vec![23, 24, 25], true));

    let o = store.history(&other.id, q(None, 0, 50)).await.unwrap();
    assert_eq!((seqs(&o), o.has_more), (vec![1, 2], false), "histories are per conversation");
    let empty = conversation(&store, "bob", "carol", None).await;
    let e = store.history(&empty.id, q(None, 0, 50)).await.unwrap();
    assert!(e.messages.is_empty() && !e.has_more);
}

async fn case_messages_after(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    let other = conversation(&store, "alice", "dave", None).await;
    for i in 1..=12 {
        send(&store, &conv, if i % 2 == 0 { "bob" } else { "alice" }, &format!("m{i}")).await;
        send(&store, &other, "dave", "noise").await;
    }
    let after = |a, limit| store.messages_after(&conv.id, a, limit);
    let p = after(0, 5).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), ((1..=5).collect(), true));
    assert!(p.messages.iter().all(|m| m.conversation_id == conv.id && m.content == format!("m{}", m.seq)));
    let p = after(5, 5).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), ((6..=10).collect(), true));
    let p = after(10, 5).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![11, 12], false));
    let p = after(7, 5).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), ((8..=12).collect(), false), "exactly limit left: no more");
    let p = after(12, 5).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![], false));
    let p = after(0, 500).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), ((1..=12).collect(), false));
    let p = after(11, 1).await.unwrap();
    assert_eq!((seqs(&p), p.has_more), (vec![12], false));
}

async fn case_mark_read(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    // seq: 1 a→b, 2 a→b, 3 b→a, 4 a→b, 5 b→a, 6 a→b, 7 b→a, 8 a→b
    for from in ["alice", "alice", "bob", "alice", "bob", "alice", "bob", "alice"] {
        send(&store, &conv, from, "x").await;
    }
    let c = reload(&store, &conv.id).await;
    assert_eq!((c.unread_of("bob"), c.unread_of("alice")), (5, 3));

    let t0 = now();
    let r = store.mark_read(&conv.id, "bob", Some(4)).await.unwrap();
    assert_eq!(r.up_to_seq, 4);
    assert_eq!(r.updated, 3, "seqs 1, 2, 4 are bob's up to 4");
    assert_eq!(r.unread_count, 2, "6 and 8 stay unread");
    assert!(r.read_at >= t0);
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    use MessageStatus::{Read, Sent};
    assert_eq!(st.values().copied().collect::<Vec<_>>(), [Read, Read, Sent, Read, Sent, Sent, Sent, Sent]);
    let c = reload(&store, &conv.id).await;
    assert_eq!((c.unread_of("bob"), c.unread_of("alice")), (2, 3), "the other participant's unread is untouched");
    assert_eq!(c.last_message.as_ref().map(|m| m.status), Some(Sent));

    // Default: everything.
    let r = store.mark_read(&conv.id, "bob", None).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (8, 2, 0));
    let c = reload(&store, &conv.id).await;
    assert_eq!((c.unread_of("bob"), c.unread_of("alice")), (0, 3));
    let last = c.last_message.expect("lastMessage");
    assert_eq!((last.seq, last.status), (8, Read), "lastMessage reflects the read");
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.values().copied().collect::<Vec<_>>(), [Read, Read, Sent, Read, Sent, Read, Sent, Read]);

    // Beyond last_seq is capped.
    let r = store.mark_read(&conv.id, "alice", Some(1000)).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (8, 3, 0));
    let c = reload(&store, &conv.id).await;
    assert_eq!(c.unread, [0, 0]);
    assert!(all_messages(&store, &conv.id).await.iter().all(|m| m.status == Read));

    // Again: nothing to do.
    let r = store.mark_read(&conv.id, "bob", None).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (8, 0, 0));

    // New messages after a full read are unread again, and a partial read counts what is above.
    for _ in 0..3 {
        send(&store, &conv, "alice", "more").await;
    }
    let r = store.mark_read(&conv.id, "bob", Some(9)).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (9, 1, 2));
    assert_eq!(reload(&store, &conv.id).await.unread_of("bob"), 2);
}

async fn case_mark_delivered(store: Arc<dyn Store>) {
    let conv = conversation(&store, "alice", "bob", None).await;
    // seq: 1-4 a→b, 5 b→a, 6 a→b
    for from in ["alice", "alice", "alice", "alice", "bob", "alice"] {
        send(&store, &conv, from, "x").await;
    }
    store.mark_read(&conv.id, "bob", Some(2)).await.unwrap();
    use MessageStatus::{Delivered, Read, Sent};

    assert_eq!(store.mark_delivered(&conv.id, "bob", 4).await.unwrap().updated, 2, "only 3 and 4 were sent to bob");
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.values().copied().collect::<Vec<_>>(), [Read, Read, Delivered, Delivered, Sent, Sent]);
    let again = store.mark_delivered(&conv.id, "bob", 4).await.unwrap();
    assert_eq!((again.updated, again.changed()), (0, false), "already delivered: nothing changed");
    let past_the_end = store.mark_delivered(&conv.id, "bob", 100).await.unwrap();
    assert_eq!((past_the_end.up_to_seq, past_the_end.updated), (6, 1), "clamped to the last seq");
    assert_eq!(store.mark_delivered(&conv.id, "alice", 6).await.unwrap().updated, 1);
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.values().copied().collect::<Vec<_>>(), [Read, Read, Delivered, Delivered, Delivered, Delivered]);

    // Delivered is still unread.
    let c = reload(&store, &conv.id).await;
    assert_eq!((c.unread_of("bob"), c.unread_of("alice")), (3, 1));
    assert_eq!(c.last_message.map(|m| m.status), Some(Delivered));

    // Read wins over a late delivery receipt.
    store.mark_read(&conv.id, "bob", None).await.unwrap();
    assert_eq!(store.mark_delivered(&conv.id, "bob", 6).await.unwrap().updated, 0);
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.values().copied().collect::<Vec<_>>(), [Read, Read, Read, Read, Delivered, Read]);

    // A receipt beyond the newest message does not cover messages sent after it.
    send(&store, &conv, "alice", "later").await;
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.get(&7), Some(&Sent));
    let r = store.mark_delivered(&conv.id, "bob", 100).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated), (7, 1));
    let st = status_by_seq(&all_messages(&store, &conv.id).await);
    assert_eq!(st.get(&7), Some(&Delivered));
}

async fn case_unread_counts(store: Arc<dyn Store>) {
    let c1 = conversation(&store, "uma", "xena", None).await;
    let c2 = conversation(&store, "yuri", "uma", None).await;
    let c3 = conversation(&store, "uma", "zack", None).await;
    let c4 = conversation(&store, "xena", "yuri", None).await;
    let c5 = conversation(&store, "uma", "xena", Some("job-9")).await;
    for _ in 0..3 {
        send(&store, &c1, "xena", "to uma").await;
    }
    for _ in 0..2 {
        send(&store, &c2, "uma", "to yuri").await;
        send(&store, &c4, "xena", "to yuri").await;
    }
    send(&store, &c3, "zack", "to uma").await;
    store.mark_read(&c3.id, "uma", None).await.unwrap();
    send(&store, &c5, "xena", "job talk").await;

    let sorted = |mut v: Vec<(String, i64)>| {
        v.sort();
        v
    };
    let mut want_uma = vec![(c1.id.clone(), 3), (c5.id.clone(), 1)];
    want_uma.sort();
    assert_eq!(sorted(store.unread_counts("uma").await.unwrap()), want_uma);
    let mut want_yuri = vec![(c2.id.clone(), 2), (c4.id.clone(), 2)];
    want_yuri.sort();
    assert_eq!(sorted(store.unread_counts("yuri").await.unwrap()), want_yuri);
    assert_eq!(store.unread_counts("zack").await.unwrap(), vec![], "zack received nothing");
    assert_eq!(store.unread_counts("xena").await.unwrap(), vec![]);
    assert_eq!(store.unread_counts("nobody").await.unwrap(), vec![]);

    store.mark_read(&c1.id, "uma", None).await.unwrap();
    assert_eq!(store.unread_counts("uma").await.unwrap(), vec![(c5.id.clone(), 1)]);
}

async fn case_list_conversations(store: Arc<dyn Store>) {
    let me = "mmm";
    // Partners sort before and after `me`, so `me` is participants[0] in some and [1] in others.
    let partners: Vec<String> = (0..6).map(|i| if i % 2 == 0 { format!("aa{i}") } else { format!("zz{i}") }).collect();
    let mut active = Vec::new();
    for p in &partners {
        active.push(conversation(&store, me, p, None).await);
    }
    // Idle conversations (no messages), created back to back: their times may tie.
    let mut idle = Vec::new();
    for i in 0..4 {
        idle.push(conversation(&store, &format!("idle{i}"), me, Some("job")).await);
    }
    // Not mine.
    let foreign = conversation(&store, &partners[0], &partners[1], None).await;
    send(&store, &foreign, &partners[0], "not yours").await;

    // Activity strictly after every creation, in a known order.
    let mut last = idle.iter().chain(&active).map(|c| c.updated_at).max().unwrap();
    let order = [2usize, 0, 4, 1, 5, 3];
    let mut sent = BTreeMap::new();
    for (k, &i) in order.iter().enumerate() {
        after_millisecond(last).await;
        let from = if k % 2 == 0 { me } else { partners[i].as_str() };
        let m = send(&store, &active[i], from, &format!("activity {k}")).await;
        last = m.created_at;
        sent.insert(i, m);
    }

    // Most recent activity first: the reverse send order, then the idle ones by (updatedAt, id) desc.
    let mut idle_sorted = idle.clone();
    idle_sorted.sort_by(|x, y| (y.updated_at, &y.id).cmp(&(x.updated_at, &x.id)));
    let expected: Vec<String> =
        order.iter().rev().map(|&i| active[i].id.clone()).chain(idle_sorted.iter().map(|c| c.id.clone())).collect();

    let full = store.list_conversations(me, 100, None).await.unwrap();
    let full_ids: Vec<String> = full.iter().map(|c| c.id.clone()).collect();
    assert_eq!(full_ids, expected, "most recent activity first");
    assert!(!full_ids.contains(&foreign.id));
    for c in &full {
        assert!(c.has_participant(me));
        if let Some((_, m)) = sent.iter().find(|(i, _)| active[**i].id == c.id) {
            assert_eq!(c.last_message.as_ref(), Some(m));
            assert_eq!(c.updated_at, m.created_at, "activity time = last message time");
            assert_eq!(c.last_seq, 1);
        } else {
            assert_eq!(c.last_message, None);
        }
    }
    let unread_mine: i64 = full.iter().map(|c| c.unread_of(me)).sum();
    assert_eq!(unread_mine, 3, "partners sent me 3 messages");

    // Keyset paging walks everything exactly once, for any page size.
    for limit in [1u32, 3, 4, 9, 10, 11] {
        let mut walked = Vec::new();
        let mut cursor: Option<ListCursor> = None;
        for round in 0.. {
            assert!(round <= 20, "limit {limit}: paging does not end");
            let page = store.list_conversations(me, limit, cursor.as_ref()).await.unwrap();
            assert!(page.len() <= limit as usize);
            let Some(tail) = page.last() else { break };
            cursor = Some(ListCursor { updated_at_ms: tail.updated_at.timestamp_millis(), id: tail.id.clone() });
            // The encoded form round-trips (that is what clients send back).
            let enc = cursor.as_ref().unwrap().encode();
            assert_eq!(ListCursor::decode(&enc).as_ref(), cursor.as_ref());
            let short = page.len() < limit as usize;
            walked.extend(page.into_iter().map(|c| c.id));
            if short {
                break;
            }
        }
        assert_eq!(walked, expected, "limit {limit}: keyset paging lost or repeated conversations");
    }

    // New activity moves a conversation to the front.
    after_millisecond(last).await;
    send(&store, &active[2], &partners[2], "back on top").await;
    let top = store.list_conversations(me, 1, None).await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].id, active[2].id);
    assert_eq!(top[0].last_seq, 2);

    assert!(store.list_conversations("nobody", 10, None).await.unwrap().is_empty());
}

async fn case_conversation_partners(store: Arc<dyn Store>) {
    conversation(&store, "uma", "xena", None).await;
    conversation(&store, "xena", "uma", Some("job-1")).await;
    conversation(&store, "xena", "uma", Some("job-2")).await;
    conversation(&store, "yuri", "uma", None).await;
    conversation(&store, "zack", "xena", None).await;
    let partners = |u: &'static str| {
        let store = store.clone();
        async move {
            let mut p = store.conversation_partners(u).await.unwrap();
            p.sort();
            p
        }
    };
    assert_eq!(partners("uma").await, ["xena", "yuri"], "each partner once");
    assert_eq!(partners("xena").await, ["uma", "zack"]);
    assert_eq!(partners("zack").await, ["xena"]);
    assert!(partners("nobody").await.is_empty());
}

async fn case_timestamps(store: Arc<dyn Store>) {
    let t0 = now();
    let (conv, _) = store.find_or_create_conversation("alice", "bob", None).await.unwrap();
    let t1 = now();
    assert!(t0 <= conv.created_at && conv.created_at <= t1);
    for t in [conv.created_at, conv.updated_at] {
        assert_eq!(t.timestamp_subsec_nanos() % 1_000_000, 0, "{t} has sub-millisecond digits");
    }
    let stored = reload(&store, &conv.id).await;
    assert_eq!(stored.created_at, conv.created_at);
    assert_eq!(stored.updated_at, conv.updated_at);

    let mut inserted = Vec::new();
    for i in 0..5 {
        let ins = store.insert_message(new_message(&conv, "alice", &format!("t{i}"), Some(&format!("ts-{i}")))).await;
        let m = ins.unwrap().message;
        assert_eq!(m.created_at.timestamp_subsec_nanos() % 1_000_000, 0, "{} has sub-millisecond digits", m.created_at);
        inserted.push(m);
    }
    assert!(inserted.windows(2).all(|w| w[0].created_at <= w[1].created_at), "createdAt goes backwards");
    // Every read path returns exactly what insert returned (createdAt included).
    let page = store.history(&conv.id, HistoryQuery { before_seq: None, skip: 0, limit: 10 }).await.unwrap();
    assert_eq!(page.messages, inserted);
    assert_eq!(store.messages_after(&conv.id, 0, 10).await.unwrap().messages, inserted);
    let c = reload(&store, &conv.id).await;
    assert_eq!(c.last_message.as_ref(), inserted.last());
    assert_eq!(c.created_at, conv.created_at, "createdAt of a conversation never changes");
    let listed = store.list_conversations("bob", 10, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_message.as_ref(), inserted.last());
    assert_eq!(listed[0].created_at, conv.created_at);
    // A retry returns the original time, not a new one.
    after_millisecond(inserted[0].created_at).await;
    let retry = store.insert_message(new_message(&conv, "alice", "t0", Some("ts-0"))).await.unwrap();
    assert!(!retry.created);
    assert_eq!(retry.message.created_at, inserted[0].created_at);
}

/// The invariants hold when two nodes (two store handles) write one database at once.
async fn case_two_nodes(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let stores = [first, second];
    let pick = |i: usize| stores[i % 2].clone();

    // find_or_create from both nodes and both sides: one conversation.
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, barrier) = (pick(i), barrier.clone());
            tokio::spawn(async move {
                let (a, b) = if i % 4 < 2 { ("alice", "bob") } else { ("bob", "alice") };
                barrier.wait().await;
                store.find_or_create_conversation(a, b, Some("shared")).await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    let mut conv = None;
    for t in tasks {
        let (c, was_created) = t.await.expect("task").expect("find_or_create_conversation");
        ids.insert(c.id.clone());
        created += usize::from(was_created);
        conv = Some(c);
    }
    assert_eq!((ids.len(), created), (1, 1), "two nodes made several conversations: {ids:?}");
    let conv = conv.unwrap();

    // 100 concurrent sends through both nodes from both sides: seq 1..=100.
    let barrier = Arc::new(Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (store, barrier, conv) = (pick(i), barrier.clone(), conv.clone());
            let from = if i % 4 < 2 { "alice" } else { "bob" };
            tokio::spawn(async move {
                barrier.wait().await;
                store.insert_message(new_message(&conv, from, &format!("{from} via node {} #{i}", i % 2), None)).await
            })
        })
        .collect();
    let mut inserted = Vec::new();
    for t in tasks {
        let ins = t.await.expect("task").expect("insert_message");
        assert!(ins.created);
        inserted.push(ins.message);
    }
    inserted.sort_by_key(|m| m.seq);
    assert_eq!(inserted.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>(), "gap or dup");

    // Retries of one clientMessageId through both nodes: one message.
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (store, barrier, conv) = (pick(i), barrier.clone(), conv.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.insert_message(new_message(&conv, "bob", "once", Some("both-nodes"))).await
            })
        })
        .collect();
    let mut retry_ids = HashSet::new();
    let mut retry_created = 0;
    for t in tasks {
        let ins = t.await.expect("task").expect("insert_message retry");
        assert_eq!(ins.message.seq, 101);
        retry_ids.insert(ins.message.id);
        retry_created += usize::from(ins.created);
    }
    assert_eq!((retry_ids.len(), retry_created), (1, 1));

    // Both nodes read the same, complete state.
    for store in &stores {
        let all = all_messages(store, &conv.id).await;
        assert_eq!(all.len(), 101);
        assert_eq!(&all[..100], &inserted[..]);
        let c = reload(store, &conv.id).await;
        assert_eq!(c.last_seq, 101);
        assert_eq!(c.last_message.as_ref().map(|m| m.content.as_str()), Some("once"));
        assert_eq!((c.unread_of("bob"), c.unread_of("alice")), (50, 51));
    }
}

/// Every write that changes a user's conversation list or unread counts gives the user a new
/// view version by the time it returns; reads and writes that change nothing leave it alone.
async fn case_view_versions(store: Arc<dyn Store>) {
    let v = |u: &'static str| {
        let store = store.clone();
        async move { store.view_version(u).await.unwrap() }
    };
    assert_eq!(v("alice").await, 0, "no change yet");
    let conv = conversation(&store, "alice", "bob", None).await;
    let (a1, b1) = (v("alice").await, v("bob").await);
    assert!(a1 != 0 && b1 != 0, "creation changes both lists");
    assert_eq!(v("carol").await, 0, "others are untouched");
    let again = conversation(&store, "alice", "bob", None).await;
    assert_eq!(again.id, conv.id);
    assert_eq!((v("alice").await, v("bob").await), (a1, b1), "finding it changes nothing");

    let m = store.insert_message(new_message(&conv, "alice", "hi", Some("cm-v"))).await.unwrap().message;
    let (a2, b2) = (v("alice").await, v("bob").await);
    assert!(a2 != a1 && b2 != b1, "a message changes both lists");
    // A retry may change them again (MongoDB does: its first attempt may have stopped short).
    assert!(!store.insert_message(new_message(&conv, "alice", "x", Some("cm-v"))).await.unwrap().created);

    let (a3, b3) = (v("alice").await, v("bob").await);
    assert!(store.mark_delivered(&conv.id, "bob", m.seq).await.unwrap().changed());
    let (a4, b4) = (v("alice").await, v("bob").await);
    assert!(a4 != a3 && b4 != b3, "a delivery receipt changes the last message in both lists");
    assert!(!store.mark_delivered(&conv.id, "bob", m.seq).await.unwrap().changed());
    assert_eq!((v("alice").await, v("bob").await), (a4, b4), "a repeated receipt changes nothing");

    store.mark_read(&conv.id, "bob", None).await.unwrap();
    let (a5, b5) = (v("alice").await, v("bob").await);
    assert!(a5 != a4 && b5 != b4, "a read receipt changes both");

    store.bump_view_versions(&["alice".to_owned(), "carol".to_owned()]).await.unwrap();
    assert_ne!(v("alice").await, a5);
    assert_ne!(v("carol").await, 0);
    assert_eq!(v("bob").await, b5);
    let _ = store.unread_counts("bob").await.unwrap();
    let _ = store.list_conversations("bob", 20, None).await.unwrap();
    assert_eq!(v("bob").await, b5, "reads change nothing");
}
