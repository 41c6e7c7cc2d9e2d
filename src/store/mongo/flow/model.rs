//! The protocols against an in-memory model of the two collections: each `Ops` call is one
//! atomic step (as one MongoDB single-document operation is), callers interleave between
//! steps, and injected faults stop a caller between any two steps (a crashed node, a
//! timeout, a dropped future). The invariants are checked at the end.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use bson::DateTime;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::chat::model::{MessageType, now};

#[derive(Default)]
struct Db {
    convs: HashMap<ObjectId, ConversationDoc>,
    messages: Vec<MessageDoc>,
}

struct Model {
    db: Mutex<Db>,
    rng: Mutex<StdRng>,
    /// Per-mille chance that a step fails (before it runs, or after it ran for inserts).
    fault_per_mille: AtomicU32,
    faults: AtomicU32,
    /// When set, `apply_message` always fails: a node dying right after its insert.
    break_apply: AtomicBool,
    /// Steps (`Ops` method names) that fail every time: a caller stopped right there.
    broken: Mutex<HashSet<&'static str>>,
}

impl Model {
    fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            db: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            fault_per_mille: AtomicU32::new(0),
            faults: AtomicU32::new(0),
            break_apply: AtomicBool::new(false),
            broken: Mutex::default(),
        })
    }

    fn conversation_between(&self, a: &str, b: &str) -> ObjectId {
        let id = ObjectId::new();
        let t = DateTime::from_millis(0);
        self.db.lock().unwrap().convs.insert(
            id,
            ConversationDoc {
                id,
                participants: [a.into(), b.into()],
                user_a: a.into(),
                user_b: b.into(),
                job_id: None,
                last_seq: 0,
                last_message: None,
                unread: [0, 0],
                created_at: t,
                updated_at: t,
            },
        );
        id
    }

    /// Makes step `op` fail until [`Model::repair`].
    fn break_step(&self, op: &'static str) {
        self.broken.lock().unwrap().insert(op);
    }

    fn repair(&self, op: &'static str) {
        self.broken.lock().unwrap().remove(op);
    }

    async fn step(&self, op: &'static str) -> StoreResult<()> {
        tokio::task::yield_now().await;
        if self.broken.lock().unwrap().contains(op) {
            return Err(StoreError::Unavailable(format!("{op} interrupted")));
        }
        let p = self.fault_per_mille.load(Ordering::Relaxed);
        if p > 0 && self.rng.lock().unwrap().random_range(0..1000) < p {
            self.faults.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable("injected".into()));
        }
        Ok(())
    }

    fn conv(&self, id: ObjectId) -> ConversationDoc {
        self.db.lock().unwrap().convs[&id].clone()
    }

    fn messages(&self, id: ObjectId) -> Vec<MessageDoc> {
        let mut v: Vec<_> =
            self.db.lock().unwrap().messages.iter().filter(|m| m.conversation_id == id).cloned().collect();
        v.sort_by_key(|m| m.seq);
        v
    }

    /// Every invariant of the module docs, at rest.
    fn check(&self, id: ObjectId) {
        let msgs = self.messages(id);
        let seqs: Vec<i64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=msgs.len() as i64).collect::<Vec<_>>(), "gap-free, no duplicates");
        let mut keys = HashSet::new();
        for m in &msgs {
            if let Some(c) = &m.client_message_id {
                assert!(keys.insert((m.sender_id.clone(), c.clone())), "duplicate clientMessageId {c}");
            }
        }
        let conv = self.conv(id);
        assert_eq!(conv.last_seq, msgs.len() as i64);
        assert_eq!(conv.last_message.as_ref(), msgs.last(), "lastMessage is the newest, status included");
        for (slot, p) in conv.participants.iter().enumerate() {
            let truth = msgs.iter().filter(|m| &m.receiver_id == p && m.status != MessageStatus::Read).count();
            assert_eq!(conv.unread[slot], truth as i64, "unread of {p}");
        }
    }
}

#[async_trait]
impl Ops for Model {
    async fn conversation(&self, id: ObjectId) -> StoreResult<Option<ConversationDoc>> {
        self.step("conversation").await?;
        Ok(self.db.lock().unwrap().convs.get(&id).cloned())
    }

    async fn message_by_client_id(&self, sender: &str, cmid: &str) -> StoreResult<Option<MessageDoc>> {
        self.step("message_by_client_id").await?;
        let db = self.db.lock().unwrap();
        Ok(db.messages.iter().find(|m| m.sender_id == sender && m.client_message_id.as_deref() == Some(cmid)).cloned())
    }

    async fn try_insert(&self, m: &MessageDoc) -> StoreResult<bool> {
        self.step("try_insert").await?;
        let inserted = {
            let mut db = self.db.lock().unwrap();
            let taken = db.messages.iter().any(|o| {
                o.id == m.id
                    || (o.conversation_id == m.conversation_id && o.seq == m.seq)
                    || (o.sender_id == m.sender_id
                        && o.client_message_id.is_some()
                        && o.client_message_id == m.client_message_id)
            });
            if !taken {
                db.messages.push(m.clone());
            }
            !taken
        };
        // The reply can be lost after the write happened.
        self.step("try_insert.reply").await?;
        Ok(inserted)
    }

    async fn newest_seq(&self, id: ObjectId) -> StoreResult<i64> {
        self.step("newest_seq").await?;
        Ok(self.messages(id).last().map_or(0, |m| m.seq))
    }

    async fn stored_after(&self, id: ObjectId, after: i64, limit: i64) -> StoreResult<Vec<MessageDoc>> {
        self.step("stored_after").await?;
        let mut v: Vec<_> = self.messages(id).into_iter().filter(|m| m.seq > after).collect();
        v.truncate(limit as usize);
        Ok(v)
    }

    async fn apply_message(&self, m: &MessageDoc, slot: Option<usize>) -> StoreResult<Option<ConversationDoc>> {
        self.step("apply_message").await?;
        if self.break_apply.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("node died".into()));
        }
        let mut db = self.db.lock().unwrap();
        let Some(c) = db.convs.get_mut(&m.conversation_id) else { return Ok(None) };
        if c.last_seq != m.seq - 1 {
            return Ok(None);
        }
        c.last_seq = m.seq;
        c.last_message = Some(m.clone());
        c.updated_at = c.updated_at.max(m.created_at);
        if let Some(i) = slot {
            c.unread[i] += 1;
        }
        Ok(Some(c.clone()))
    }

    async fn mark_messages_read(&self, id: ObjectId, reader: &str, up_to: i64) -> StoreResult<u64> {
        self.step("mark_messages_read").await?;
        let mut n = 0;
        for m in self.db.lock().unwrap().messages.iter_mut() {
            if m.conversation_id == id && m.receiver_id == reader && m.status != MessageStatus::Read && m.seq <= up_to {
                m.status = MessageStatus::Read;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn count_unread(&self, id: ObjectId, reader: &str, up_to: i64) -> StoreResult<i64> {
        self.step("count_unread").await?;
        let db = self.db.lock().unwrap();
        Ok(db
            .messages
            .iter()
            .filter(|m| {
                m.conversation_id == id && m.receiver_id == reader && m.status != MessageStatus::Read && m.seq <= up_to
            })
            .count() as i64)
    }

    async fn set_unread(
        &self,
        id: ObjectId,
        watermark: i64,
        slot: usize,
        count: i64,
        last_read: bool,
    ) -> StoreResult<Option<ConversationDoc>> {
        self.step("set_unread").await?;
        let mut db = self.db.lock().unwrap();
        let Some(c) = db.convs.get_mut(&id) else { return Ok(None) };
        if c.last_seq != watermark {
            return Ok(None);
        }
        c.unread[slot] = c.unread[slot].min(count);
        if last_read && let Some(m) = c.last_message.as_mut() {
            m.status = MessageStatus::Read;
        }
        Ok(Some(c.clone()))
    }

    async fn mark_messages_delivered(&self, id: ObjectId, receiver: &str, up_to: i64) -> StoreResult<u64> {
        self.step("mark_messages_delivered").await?;
        let mut n = 0;
        for m in self.db.lock().unwrap().messages.iter_mut() {
            if m.conversation_id == id && m.receiver_id == receiver && m.status == MessageStatus::Sent && m.seq <= up_to
            {
                m.status = MessageStatus::Delivered;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn mark_last_message_delivered(&self, id: ObjectId, receiver: &str, up_to: i64) -> StoreResult<()> {
        self.step("mark_last_message_delivered").await?;
        let mut db = self.db.lock().unwrap();
        if let Some(m) = db.convs.get_mut(&id).and_then(|c| c.last_message.as_mut())
            && m.receiver_id == receiver
            && m.seq <= up_to
            && m.status == MessageStatus::Sent
        {
            m.status = MessageStatus::Delivered;
        }
        Ok(())
    }
}

fn new_message(conv: ObjectId, from: &str, to: &str, cmid: Option<String>) -> NewMessage {
    NewMessage {
        conversation_id: conv.to_hex(),
        sender_id: from.into(),
        receiver_id: to.into(),
        message_type: MessageType::Text,
        content: "hi".into(),
        client_message_id: cmid,
    }
}

/// A whole send as `MongoStore::insert_message` does it: step 1 must succeed, step 2 is
/// best effort (a failure there leaves work for the next catch-up, never a gap).
async fn send(ops: &Model, m: NewMessage) -> StoreResult<(MessageDoc, bool)> {
    match store_message(ops, m, &now()).await? {
        Stored::Created(doc, conv) => {
            let _ = settle(ops, Some(*conv), &doc).await;
            Ok((doc, true))
        }
        Stored::Existing(doc) => {
            let _ = settle(ops, None, &doc).await;
            Ok((doc, false))
        }
    }
}

/// Brings everything to rest with faults off, as the next successful writer would.
async fn quiesce(ops: &Model, id: ObjectId) {
    ops.fault_per_mille.store(0, Ordering::Relaxed);
    ops.break_apply.store(false, Ordering::Relaxed);
    let conv = ops.conv(id);
    catch_up(ops, conv, None).await.unwrap();
}

#[tokio::test]
async fn sequential_sends_number_from_one_and_keep_the_summary() {
    let db = Model::new(1);
    let c = db.conversation_between("a", "b");
    for i in 1..=5 {
        let (m, created) = send(&db, new_message(c, "a", "b", None)).await.unwrap();
        assert_eq!((m.seq, created), (i, true));
    }
    let (m, _) = send(&db, new_message(c, "b", "a", None)).await.unwrap();
    assert_eq!(m.seq, 6);
    assert_eq!(db.conv(c).unread, [1, 5]);
    db.check(c);
}

#[tokio::test]
async fn unknown_or_invalid_conversation_is_not_found() {
    let db = Model::new(2);
    let mut m = new_message(ObjectId::new(), "a", "b", None);
    assert!(matches!(store_message(&*db, m.clone(), &now()).await, Err(StoreError::NotFound)));
    m.conversation_id = "not-an-id".into();
    assert!(matches!(store_message(&*db, m, &now()).await, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn a_retry_returns_the_original_without_taking_a_seq() {
    let db = Model::new(3);
    let c = db.conversation_between("a", "b");
    let (first, created) = send(&db, new_message(c, "a", "b", Some("m1".into()))).await.unwrap();
    assert!(created);
    let (again, created) = send(&db, new_message(c, "a", "b", Some("m1".into()))).await.unwrap();
    assert!(!created);
    assert_eq!(again, first);
    // The same clientMessageId from the other user is another message.
    let (other, created) = send(&db, new_message(c, "b", "a", Some("m1".into()))).await.unwrap();
    assert!(created);
    assert_eq!(other.seq, 2);
    db.check(c);
}

#[tokio::test]
async fn a_node_dying_between_insert_and_summary_leaves_no_gap() {
    let db = Model::new(4);
    let c = db.conversation_between("a", "b");
    send(&db, new_message(c, "a", "b", None)).await.unwrap();
    db.break_apply.store(true, Ordering::Relaxed);
    let (orphan, _) = send(&db, new_message(c, "a", "b", Some("x".into()))).await.unwrap();
    assert_eq!(orphan.seq, 2);
    assert_eq!(db.conv(c).last_seq, 1, "summary not updated: the node died");
    db.break_apply.store(false, Ordering::Relaxed);
    // The next sender runs into seq 2, applies it, then takes 3.
    let (next, _) = send(&db, new_message(c, "b", "a", None)).await.unwrap();
    assert_eq!(next.seq, 3);
    db.check(c);
    assert_eq!(db.conv(c).unread, [1, 2]);
}

#[tokio::test]
async fn a_retry_of_an_orphan_repairs_the_summary() {
    let db = Model::new(5);
    let c = db.conversation_between("a", "b");
    db.break_apply.store(true, Ordering::Relaxed);
    send(&db, new_message(c, "a", "b", Some("m".into()))).await.unwrap();
    db.break_apply.store(false, Ordering::Relaxed);
    let (m, created) = send(&db, new_message(c, "a", "b", Some("m".into()))).await.unwrap();
    assert_eq!((m.seq, created), (1, false));
    db.check(c);
}

#[tokio::test]
async fn reads_and_deliveries_cover_unapplied_messages_and_the_last_message() {
    let db = Model::new(6);
    let c = db.conversation_between("a", "b");
    for _ in 0..3 {
        send(&db, new_message(c, "a", "b", None)).await.unwrap();
    }
    db.break_apply.store(true, Ordering::Relaxed);
    send(&db, new_message(c, "a", "b", None)).await.unwrap();
    db.break_apply.store(false, Ordering::Relaxed);
    // Asking past the summary catches up first, so seq 4 is covered too.
    assert_eq!(mark_delivered(&*db, c, "b", 10).await.unwrap().updated, 4);
    assert_eq!(db.conv(c).last_message.unwrap().status, MessageStatus::Delivered);
    assert_eq!(mark_delivered(&*db, c, "a", 10).await.unwrap().updated, 0, "only messages to the caller");
    let r = mark_read(&*db, c, "b", Some(2), now()).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (2, 2, 2));
    assert_eq!(db.conv(c).last_message.unwrap().status, MessageStatus::Delivered);
    let r = mark_read(&*db, c, "b", None, now()).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated, r.unread_count), (4, 2, 0));
    assert_eq!(db.conv(c).last_message.unwrap().status, MessageStatus::Read);
    // Read is never downgraded.
    assert_eq!(mark_delivered(&*db, c, "b", 10).await.unwrap().updated, 0);
    let r = mark_read(&*db, c, "b", Some(99), now()).await.unwrap();
    assert_eq!((r.up_to_seq, r.updated), (4, 0));
    db.check(c);
    assert!(matches!(mark_read(&*db, ObjectId::new(), "b", None, now()).await, Err(StoreError::NotFound)));
    assert_eq!(mark_delivered(&*db, ObjectId::new(), "b", 3).await.unwrap().updated, 0);
}

/// The interleaving behind the once-flaky concurrent test: a `mark_read` stops after marking
/// the messages and before its guarded summary update (the step fails, the node dies, the
/// call times out). The stored messages are read, the embedded copy is still `sent` and the
/// count too high; the reader's next `mark_read`, whatever `up_to` it asks for, repairs both.
#[tokio::test]
async fn an_interrupted_mark_read_is_repaired_by_the_readers_next_one() {
    for stop_at in ["count_unread", "set_unread"] {
        for next_up_to in [Some(0), Some(1), Some(3), None] {
            let db = Model::new(8);
            let c = db.conversation_between("a", "b");
            for (from, to) in [("a", "b"), ("b", "a"), ("a", "b")] {
                send(&db, new_message(c, from, to, None)).await.unwrap();
            }
            db.break_step(stop_at);
            assert!(mark_read(&*db, c, "b", None, now()).await.is_err(), "{stop_at}");
            db.repair(stop_at);
            let msgs = db.messages(c);
            assert!(msgs.iter().filter(|m| m.receiver_id == "b").all(|m| m.status == MessageStatus::Read));
            let conv = db.conv(c);
            assert_eq!(conv.last_message.unwrap().status, MessageStatus::Sent, "left behind, not ahead");
            assert_eq!(conv.unread, [1, 2], "too high, never too low");
            let r = mark_read(&*db, c, "b", next_up_to, now()).await.unwrap();
            assert_eq!((r.updated, r.unread_count), (0, 0), "{stop_at} then {next_up_to:?}");
            db.check(c);
        }
    }
}

/// `mark_delivered` stopped between its two updates leaves the embedded copy `sent` (behind,
/// never ahead) until the receiver's next receipt reaching it, or a read of everything.
#[tokio::test]
async fn an_interrupted_mark_delivered_is_repaired_by_the_next_receipt_or_read() {
    for next_is_read in [false, true] {
        let db = Model::new(9);
        let c = db.conversation_between("a", "b");
        for _ in 0..2 {
            send(&db, new_message(c, "a", "b", None)).await.unwrap();
        }
        db.break_step("mark_last_message_delivered");
        assert!(mark_delivered(&*db, c, "b", 2).await.is_err());
        db.repair("mark_last_message_delivered");
        assert!(db.messages(c).iter().all(|m| m.status == MessageStatus::Delivered));
        assert_eq!(db.conv(c).last_message.unwrap().status, MessageStatus::Sent);
        if next_is_read {
            let r = mark_read(&*db, c, "b", None, now()).await.unwrap();
            assert_eq!((r.updated, r.unread_count), (2, 0));
        } else {
            assert_eq!(mark_delivered(&*db, c, "b", 2).await.unwrap().updated, 0);
        }
        db.check(c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_retries_create_one_message() {
    for seed in 0..20 {
        let db = Model::new(seed);
        let c = db.conversation_between("a", "b");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { send(&db, new_message(c, "a", "b", Some("same".into()))).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "seed {seed}");
        assert!(results.iter().all(|(m, _)| m == &results[0].0 || m.seq == results[0].0.seq));
        assert_eq!(db.messages(c).len(), 1);
        db.check(c);
    }
}

/// Many senders on both sides, retries of the same clientMessageId racing each other, a
/// reader marking read and delivered all along, and 5% of all steps failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_reads_and_faults_keep_every_invariant() {
    for seed in 0..12 {
        let db = Model::new(seed);
        db.fault_per_mille.store(50, Ordering::Relaxed);
        let c = db.conversation_between("alice", "bob.b");
        let mut tasks = Vec::new();
        for w in 0..6 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let (from, to) = if w % 2 == 0 { ("alice", "bob.b") } else { ("bob.b", "alice") };
                let mut acked: Vec<(String, MessageDoc)> = Vec::new();
                for i in 0..15 {
                    // Workers w and w+2 share ids: concurrent retries of the same send.
                    let cmid = (i % 3 != 0).then(|| format!("{}-{i}", w % 4));
                    for _attempt in 0..50 {
                        if let Ok((m, _)) = send(&db, new_message(c, from, to, cmid.clone())).await {
                            if let Some(id) = &cmid {
                                acked.push((id.clone(), m));
                            }
                            break;
                        }
                    }
                }
                acked
            }));
        }
        for reader in ["alice", "bob.b"] {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let up = if i % 4 == 0 { None } else { Some(i64::from(i)) };
                    let _ = mark_read(&*db, c, reader, up, now()).await;
                    let _ = mark_delivered(&*db, c, reader, i64::from(i) * 2).await;
                }
                Vec::new()
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        assert!(db.faults.load(Ordering::Relaxed) > 0, "faults were injected");
        quiesce(&db, c).await;
        // An interrupted mark_read may leave a count too high (never too low) and the
        // embedded lastMessage `sent` while it is read; the reader's next mark_read, whatever
        // it asks for, settles both.
        for reader in ["alice", "bob.b"] {
            mark_read(&*db, c, reader, Some(0), now()).await.unwrap();
        }
        db.check(c);
        // Every acknowledged send is the stored message for its (sender, clientMessageId).
        let stored = db.messages(c);
        for (cmid, m) in acked {
            let s = stored
                .iter()
                .find(|s| s.sender_id == m.sender_id && s.client_message_id.as_deref() == Some(&cmid))
                .unwrap();
            assert_eq!((s.id, s.seq), (m.id, m.seq), "seed {seed}");
        }
    }
}

/// A burst of 100 sends to one conversation at once (the shared store suite does this on
/// two nodes): all succeed, seqs 1..=100, summary exact, no repair pass needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_concurrent_sends_all_succeed() {
    let db = Model::new(7);
    let c = db.conversation_between("a", "b");
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (db, barrier) = (db.clone(), barrier.clone());
            tokio::spawn(async move {
                let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
                barrier.wait().await;
                send(&db, new_message(c, from, to, None)).await.unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        let (m, created) = t.await.unwrap();
        assert!(created);
        seqs.push(m.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    db.check(c);
    assert_eq!(db.conv(c).unread, [50, 50]);
}

/// Without faults, the summary is exact at rest with no repair pass at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_and_reads_without_faults_are_exact_at_rest() {
    for seed in 0..10 {
        let db = Model::new(seed);
        let c = db.conversation_between("a", "b");
        let mut tasks = Vec::new();
        for w in 0..4 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let (from, to) = if w % 2 == 0 { ("a", "b") } else { ("b", "a") };
                for i in 0..20 {
                    send(&db, new_message(c, from, to, Some(format!("{w}-{i}")))).await.unwrap();
                }
            }));
        }
        for reader in ["a", "b"] {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    mark_read(&*db, c, reader, (i % 3 != 0).then_some(i), now()).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        db.check(c);
        assert_eq!(db.messages(c).len(), 80);
    }
}
