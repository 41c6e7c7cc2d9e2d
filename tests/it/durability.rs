//! Restart durability of the embedded default (the contract): an acknowledged message (a 201)
//! survives `kill -9` and SIGTERM, with the same seq and content, and seq stays gap-free.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::*;

/// `--shutdown-grace-secs` that `Env::args` gives every node.
const GRACE: Duration = Duration::from_secs(10);

/// One acknowledged send, as the 201 described it.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    seq: i64,
    content: String,
    sender: String,
}

impl Ack {
    fn from_message(m: &Value, sender: &str, content: &str) -> Self {
        let ack = Self {
            id: m["_id"].as_str().unwrap_or_else(|| panic!("message without _id: {m}")).to_owned(),
            seq: m["seq"].as_i64().unwrap_or_else(|| panic!("message without seq: {m}")),
            content: m["content"].as_str().unwrap_or_default().to_owned(),
            sender: m["senderId"].as_str().unwrap_or_default().to_owned(),
        };
        assert_eq!((ack.content.as_str(), ack.sender.as_str()), (content, sender), "the 201 echoes the send: {m}");
        ack
    }
}

/// The whole history of a conversation over REST (walking `before`), oldest first.
async fn full_history(api: &Api, conv: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..1000 {
        let path = match before {
            Some(b) => format!("/api/chat/conversations/{conv}/messages?limit=100&before={b}"),
            None => format!("/api/chat/conversations/{conv}/messages?limit=100"),
        };
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "history: {}", r.body);
        let page = r.body["data"]["messages"].as_array().cloned().unwrap_or_default();
        let seqs: Vec<i64> = page.iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "page not oldest-first: {seqs:?}");
        let has_more = r.body["data"]["hasMore"].as_bool().expect("hasMore");
        all.splice(0..0, page);
        if !has_more || seqs.is_empty() {
            return all;
        }
        before = Some(seqs[0]);
    }
    panic!("history paging does not end");
}

/// Asserts: seqs of `history` are exactly 1..=N; every ack is there with its seq, content and
/// sender; every stored message is one this test sent. Returns N.
fn check_history(history: &[Value], acks: &[Ack], attempted: &HashSet<String>) -> i64 {
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
    let n = seqs.len() as i64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "seq must be 1..=N with no gap or duplicate");
    let by_id: BTreeMap<&str, &Value> = history.iter().map(|m| (m["_id"].as_str().expect("_id"), m)).collect();
    assert_eq!(by_id.len(), history.len(), "duplicate message ids in history");
    let mut lost = Vec::new();
    for a in acks {
        match by_id.get(a.id.as_str()) {
            None => lost.push(a.clone()),
            Some(m) => {
                assert_eq!(m["seq"].as_i64(), Some(a.seq), "seq of acknowledged {} changed: {m}", a.id);
                assert_eq!(m["content"].as_str(), Some(a.content.as_str()), "content of {} changed", a.id);
                assert_eq!(m["senderId"].as_str(), Some(a.sender.as_str()), "sender of {} changed", a.id);
            }
        }
    }
    assert!(lost.is_empty(), "{} acknowledged messages lost after restart, e.g. {:?}", lost.len(), &lost[..1]);
    for m in history {
        let content = m["content"].as_str().unwrap_or_default();
        assert!(attempted.contains(content), "history holds a message nobody sent: {m}");
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_message() {
    let env = Env::embedded();
    let mut node = env.process("n1", &[]).await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let conv = alice.conversation_with("bob").await;

    // 200 sends: 2 tasks per user × 50 sequential sends, all 4 tasks at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (user, api) in [("alice", &alice), ("bob", &bob)] {
        for t in 0..2 {
            let (api, conv, user) = (api.clone(), conv.clone(), user.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..50 {
                    let content = format!("kill9 {user} task{t} #{i}");
                    let m = api.send(&conv, &content).await; // asserts the 201
                    acks.push(Ack::from_message(&m, &user, &content));
                }
                acks
            }));
        }
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("sender task"));
    }
    // No grace of any kind: SIGKILL right after the last acknowledgement.
    node.kill9();
    let send_time = started.elapsed();

    assert_eq!(acks.len(), 200);
    let mut acked_seqs: Vec<i64> = acks.iter().map(|a| a.seq).collect();
    acked_seqs.sort_unstable();
    assert_eq!(acked_seqs, (1..=200).collect::<Vec<_>>(), "acknowledged seqs must be 1..=200");
    let attempted: HashSet<String> = acks.iter().map(|a| a.content.clone()).collect();

    let node2 = env.process("n1", &[]).await;
    let alice2 = Api::new(&node2.base, "alice");
    let history = full_history(&alice2, &conv).await;
    let n = check_history(&history, &acks, &attempted);
    assert_eq!(n, 200, "exactly the 200 acknowledged messages");

    // The sequence continues where it stopped.
    let next = Api::new(&node2.base, "bob").send(&conv, "after the crash").await;
    assert_eq!(next["seq"], 201, "next seq after restart: {next}");
    let conv_list = alice2.get("/api/chat/conversations").await;
    assert_eq!(conv_list.status, 200);
    assert_eq!(conv_list.body["data"]["conversations"][0]["lastMessage"]["seq"], 201);
    println!("kill9: 200 acknowledged sends in {send_time:?}, all present after restart");
}

/// One send over REST that tolerates the node going away: `Ok(message)` only on a 201.
async fn try_send(http: &reqwest::Client, base: &str, token: &str, conv: &str, content: &str) -> Result<Value, String> {
    let r = http
        .post(format!("{base}/api/chat/conversations/{conv}/messages"))
        .bearer_auth(token)
        .json(&json!({ "content": content }))
        .timeout(WAIT)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.map_err(|e| format!("{status}, body: {e}"))?;
    if status == 201 { Ok(body["data"]["message"].clone()) } else { Err(format!("{status}: {body}")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_sends_keeps_every_acknowledged_message() {
    let env = Env::embedded();
    let mut node = env.process("n1", &[]).await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;

    // 4 senders stream sends until the node stops answering; every 201 is recorded.
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let term_sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (user, t) in [("alice", 0), ("alice", 1), ("bob", 0), ("bob", 1)] {
        let (base, conv, count_tx, term_sent) = (node.base.clone(), conv.clone(), count_tx.clone(), term_sent.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let token = token(user);
            let (mut acks, mut attempted, mut after_term, mut last_err) = (Vec::new(), Vec::new(), 0usize, None);
            for i in 0..2000 {
                let content = format!("sigterm {user} task{t} #{i}");
                attempted.push(content.clone());
                match try_send(&http, &base, &token, &conv, &content).await {
                    Ok(m) => {
                        acks.push(Ack::from_message(&m, user, &content));
                        after_term += usize::from(term_sent.load(std::sync::atomic::Ordering::SeqCst));
                        count_tx.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                }
            }
            (acks, attempted, after_term, last_err)
        }));
    }
    drop(count_tx);

    // SIGTERM once the stream is flowing (≥ 40 acknowledgements), not after a fixed sleep.
    tokio::time::timeout(WAIT, count_rx.wait_for(|n| *n >= 40))
        .await
        .expect("senders did not get 40 acknowledgements")
        .expect("senders stopped early");
    term_sent.store(true, std::sync::atomic::Ordering::SeqCst);
    let t0 = Instant::now();
    let status = node.sigterm().await.expect("exit status");
    let exit_time = t0.elapsed();

    let mut acks = Vec::new();
    let mut attempted = HashSet::new();
    let mut acked_after_term = 0;
    let mut errors = Vec::new();
    for t in tasks {
        let (a, at, after, err) = tokio::time::timeout(WAIT, t).await.expect("sender task hangs").expect("sender");
        acks.extend(a);
        attempted.extend(at);
        acked_after_term += after;
        errors.extend(err);
    }
    assert!(status.success(), "node exit status after SIGTERM: {status:?}");
    assert!(exit_time <= GRACE + Duration::from_secs(1), "exit took {exit_time:?}, grace is {GRACE:?}");
    assert_eq!(errors.len(), 4, "every sender stops only when the node is gone: {errors:?}");
    let mut acked_seqs: Vec<i64> = acks.iter().map(|a| a.seq).collect();
    acked_seqs.sort_unstable();
    acked_seqs.dedup();
    assert_eq!(acked_seqs.len(), acks.len(), "two acknowledgements with the same seq");

    let node2 = env.process("n1", &[]).await;
    let bob = Api::new(&node2.base, "bob");
    let history = full_history(&bob, &conv).await;
    let n = check_history(&history, &acks, &attempted);
    assert!(n >= acks.len() as i64);
    let next = bob.send(&conv, "after the restart").await;
    assert_eq!(next["seq"], n + 1, "next seq after restart: {next}");
    println!(
        "sigterm: {} acknowledged ({} after SIGTERM), {} stored, exit {status:?} in {exit_time:?}; sender errors: {errors:?}",
        acks.len(),
        acked_after_term,
        n
    );
}
