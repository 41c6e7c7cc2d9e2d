//! A message stream through a Redis failover (Sentinel or Redis Cluster, see the `redis_*`
//! tests): what a client acknowledged must survive it, and fan-out and presence must resume.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Sock, WAIT, ok};

/// Sends `id` (as content and clientMessageId) until acknowledged, retrying the same id on
/// `unavailable` like a client does: a retry never duplicates (the id is unique per sender).
pub async fn send_until_acked(sock: &Sock, conversation: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let ack = sock
            .ack("send_message", json!({ "conversationId": conversation, "content": id, "clientMessageId": id }))
            .await;
        if ack["status"] == "success" {
            return ack["data"]["message"].clone();
        }
        assert_eq!(ack["code"], "unavailable", "only an outage may refuse a send: {ack}");
        assert!(tokio::time::Instant::now() < deadline, "{id} never acknowledged");
        // The client's retry backoff.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a failover test checks afterwards.
#[allow(dead_code)]
pub struct StreamOutcome {
    pub acked: Vec<String>,
    pub conversation: String,
    /// The sender (its rate-limit state is written by every send).
    pub alice: String,
}

/// Alice (on `a`) streams messages to Bob (on `b`); `failover` is started after 20 acks and
/// the stream goes on until `completed` holds, then 20 more. Then: fan-out resumed (Bob gets
/// every one of 10 further messages live), nothing acknowledged is missing (history and Bob's
/// `sync` hold every acked message, `seq` 1..n), and presence works (Carol connecting on `b`
/// is online for Alice on `a`).
pub async fn stream_through_failover(
    a: &str,
    b: &str,
    failover: impl FnOnce(),
    completed: impl Fn() -> bool,
) -> StreamOutcome {
    let (alice, bob, carol) =
        (crate::harness::unique("alice"), crate::harness::unique("bob"), crate::harness::unique("carol"));
    let conversation = Api::new(a, &alice).conversation_with(&bob).await;
    let sa = Sock::connect(a, &alice).await;
    let sb = Sock::connect(b, &bob).await;
    let mut acked = Vec::new();
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("m{n}")
    };
    for _ in 0..20 {
        let id = next_id();
        send_until_acked(&sa, &conversation, &id).await;
        acked.push(id);
    }
    failover();
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while !completed() {
        assert!(tokio::time::Instant::now() < deadline, "the failover never completed");
        let id = next_id();
        send_until_acked(&sa, &conversation, &id).await;
        acked.push(id);
    }
    for _ in 0..20 {
        let id = next_id();
        send_until_acked(&sa, &conversation, &id).await;
        acked.push(id);
    }

    // Fan-out resumes by itself: probes until one reaches Bob live, then every further one must.
    let resume_deadline = tokio::time::Instant::now() + WAIT * 2;
    'resume: loop {
        assert!(tokio::time::Instant::now() < resume_deadline, "fan-out to Bob never resumed");
        let id = next_id();
        send_until_acked(&sa, &conversation, &id).await;
        acked.push(id.clone());
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(m) = tokio::time::timeout_at(until, sb.next("new_message")).await {
            if m["message"]["content"] == id.as_str() {
                break 'resume;
            }
        }
    }
    for _ in 0..10 {
        let id = next_id();
        send_until_acked(&sa, &conversation, &id).await;
        acked.push(id.clone());
        loop {
            let m = sb.next("new_message").await;
            if m["message"]["content"] == id.as_str() {
                break;
            }
        }
    }

    // Nothing acknowledged is lost: history and sync.
    let api_b = Api::new(b, &bob);
    let mut msgs: Vec<Value> = Vec::new();
    let mut before = String::new();
    loop {
        let page = api_b.get(&format!("/api/chat/conversations/{conversation}/messages?limit=100{before}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mut batch = page.body["data"]["messages"].as_array().expect("messages").clone();
        let Some(first) = batch.first().and_then(|m| m["seq"].as_u64()) else { break };
        batch.append(&mut msgs);
        msgs = batch;
        if page.body["data"]["hasMore"] != true {
            break;
        }
        before = format!("&before={first}");
    }
    let contents: Vec<&str> = msgs.iter().filter_map(|m| m["content"].as_str()).collect();
    for id in &acked {
        assert!(contents.contains(&id.as_str()), "acknowledged {id} is missing from the history");
    }
    let seqs: Vec<u64> = msgs.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>(), "seq 1..n without gaps or duplicates");
    let sync = sb.ack("sync", json!({ "conversations": [{ "conversationId": conversation, "afterSeq": 0 }] })).await;
    let synced = ok(&sync).to_string();
    for id in &acked {
        assert!(synced.contains(&format!("\"{id}\"")), "sync misses {id}");
    }

    // Presence resumes: a new socket on `b` is online for a reader on `a`.
    let sc = Sock::connect(b, &carol).await;
    let status = sa.ack("get_online_status", json!({ "userIds": [carol] })).await;
    assert_eq!(ok(&status)["statuses"][0]["online"], true, "presence after the failover: {status}");
    sc.disconnect().await;
    sa.disconnect().await;
    sb.disconnect().await;
    StreamOutcome { acked, conversation, alice }
}
