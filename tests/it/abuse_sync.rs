//! `sync` answers are bounded: repeated entries count once, the whole ack is capped in messages
//! and bytes, and `hasMore` lets the client page through everything; `sync` has its own budget.

use serde_json::{Value, json};

use crate::{
    abuse_kit::Bystanders,
    harness::{Api, Env, Sock, err_code, ok, unique},
};

/// `jobsphere_chat::limits::SYNC_MAX_BYTES`, plus the envelope.
const MAX_ACK_BYTES: usize = 1024 * 1024 + 64 * 1024;

async fn fill(api: &Api, conv: &str, n: usize, size: usize) {
    let body = "x".repeat(size);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (api, conv, body) = (api.clone(), conv.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move { api.send(&conv, &format!("{i:04}{body}")).await }));
        if tasks.len() == 16 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn sync_dedupes_entries_and_caps_the_ack_in_bytes() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let by = Bystanders::new(&node.base).await;
    let (a, b) = (unique("mallory"), unique("peer"));
    let api = Api::new(&node.base, &a);
    let conv = api.conversation_with(&b).await;
    // 400 messages of ~4 KB: about 1.6 MB of content, 3.2 MB at the worst escaping estimate.
    fill(&api, &conv, 400, 3990).await;
    let sock = Sock::connect(&node.base, &a).await;

    // The measured attack: 100 copies of one entry. Answered once.
    let entries: Vec<Value> = (0..100).map(|_| json!({ "conversationId": conv, "afterSeq": 350 })).collect();
    let ack = sock.ack("sync", json!({ "conversations": entries })).await;
    let convs = ok(&ack)["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1, "repeated entries count once");
    assert_eq!(convs[0]["messages"].as_array().unwrap().len(), 50);
    assert_eq!(convs[0]["hasMore"], false);

    // Everything from the start, while the bystanders talk: capped in bytes, hasMore set, and
    // paging by the last seq returns every message exactly once.
    let mut after = 0;
    let mut seqs = Vec::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let ack = sock.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": after }] })).await;
        let size = ack.to_string().len();
        assert!(size <= MAX_ACK_BYTES, "ack of {size} bytes");
        let c = &ok(&ack)["conversations"][0];
        let msgs = c["messages"].as_array().unwrap();
        assert!(!msgs.is_empty() || c["hasMore"] == false, "progress on every round");
        seqs.extend(msgs.iter().map(|m| m["seq"].as_i64().unwrap()));
        if rounds == 1 {
            assert!(msgs.len() < 400 && c["hasMore"] == true, "the first answer is cut short: {}", msgs.len());
            by.still_fine("during large syncs").await;
        }
        if c["hasMore"] == false {
            break;
        }
        after = *seqs.last().unwrap();
    }
    assert_eq!(seqs, (1..=400).collect::<Vec<i64>>());
    assert!(rounds >= 3, "{rounds} rounds for ~3 MB");
    by.still_fine("after the syncs").await;
}

#[tokio::test]
async fn sync_has_its_own_budget() {
    let env = Env::embedded();
    let node = env.node_with("n1", &["--rate-limits", "sync=3/60s"]).await;
    let by = Bystanders::new(&node.base).await;
    let a = unique("mallory");
    let conv = Api::new(&node.base, &a).conversation_with(&unique("peer")).await;
    let sock = Sock::connect(&node.base, &a).await;
    let req = json!({ "conversations": [{ "conversationId": conv, "afterSeq": 0 }] });
    for _ in 0..3 {
        ok(&sock.ack("sync", req.clone()).await);
    }
    let ack = sock.ack("sync", req).await;
    err_code(&ack, "rate_limited");
    assert!(ack["retryAfterMs"].as_u64().unwrap() > 1000, "{ack}");
    by.still_fine("with a user over the sync budget").await;
}
