//! Redis memory is bounded: after a workload that touches every Redis-backed feature, every key
//! under the node's prefix has a TTL or is one of the owned keys (`keys::must_expire`), and
//! every key carries a Redis Cluster hash tag. The same workload runs on Redis Cluster in
//! `redis_cluster` (a script over keys of different slots would fail there with CROSSSLOT).
//!
//! `memory_figures` (ignored; run it by name) prints Redis memory per online user and per
//! cached conversation list for load/RESULTS.md.

use serde_json::json;

use crate::{
    harness::{Api, Env, Sock, ok, unique},
    kit::redis::cli,
};

/// Everything that writes to Redis: presence (connect, disconnect → last seen), messages
/// (rate limits, cache invalidation), cached lists and unread counts, typing, receipts, sync,
/// status reads. `a` and `b` are two nodes of one cluster.
pub async fn workload(a: &str, b: &str) {
    let (alice, bob, carol) = (unique("alice"), unique("bob"), unique("carol"));
    let api_a = Api::new(a, &alice);
    let api_b = Api::new(b, &bob);
    let c1 = api_a.conversation_with(&bob).await;
    let c2 = api_a.conversation_with(&carol).await;
    let sa = Sock::connect(a, &alice).await;
    let sb = Sock::connect(b, &bob).await;
    ok(&sa.ack("join_conversation", json!({ "conversationId": c1 })).await);
    ok(&sb.ack("join_conversation", json!({ "conversationId": c1 })).await);
    for i in 0..5 {
        ok(&sa.ack("send_message", json!({ "conversationId": c1, "content": format!("hi {i}") })).await);
        sb.next("new_message").await;
    }
    api_b.send(&c1, "over rest").await;
    api_a.send(&c2, "to carol").await;
    ok(&sa.ack("typing_start", json!({ "conversationId": c1 })).await);
    sb.next("user_typing").await;
    ok(&sb.ack("mark_as_delivered", json!({ "conversationId": c1, "upToSeq": 5 })).await);
    ok(&sb.ack("mark_as_read", json!({ "conversationId": c1 })).await);
    ok(&sa.ack("get_online_status", json!({ "userIds": [bob, carol] })).await);
    ok(&sb.ack("sync", json!({ "conversations": [{ "conversationId": c1, "afterSeq": 0 }] })).await);
    for api in [&api_a, &api_b] {
        assert_eq!(api.get("/api/chat/conversations?limit=20").await.status, 200);
        assert_eq!(api.get("/api/chat/unread").await.status, 200);
    }
    assert_eq!(api_a.get(&format!("/api/chat/users/status?ids={bob},{carol}")).await.status, 200);
    // Carol comes and goes: her last-seen time is written.
    let sc = Sock::connect(b, &carol).await;
    sa.next("user_status").await;
    sc.disconnect().await;
    loop {
        let s = sa.next("user_status").await;
        if s["userId"] == carol.as_str() && s["online"] == false {
            break;
        }
    }
    sa.disconnect().await;
    sb.disconnect().await;
}

/// Every key under `prefix` on the servers `ports`: a TTL or owned, and a hash tag.
pub fn audit(ports: &[u16], prefix: &str) -> usize {
    let mut seen = 0;
    for &port in ports {
        for key in cli(port, &[], &["--scan", "--pattern", &format!("{prefix}*")]).lines() {
            seen += 1;
            assert!(key.contains('{') && key.contains('}'), "{key} has no hash tag");
            // `-c`: a Redis Cluster replica answers MOVED; follow it to the master.
            let ttl: i64 = cli(port, &[], &["-c", "PTTL", key]).parse().unwrap_or(-3);
            let owned = !jobsphere_chat::coord::redis::keys::must_expire(prefix, key);
            assert!(ttl > 0 || (ttl == -1 && owned) || ttl == -2, "{key} has no TTL and no owner (PTTL {ttl})");
        }
    }
    seen
}

#[tokio::test]
async fn every_key_has_a_ttl_or_an_owner() {
    let env = Env::cluster().await;
    // A day-long window keeps the senders' rate-limit state around long enough to be audited.
    let long = ["--rate-limit-window-secs", "86400"];
    let n1 = env.node_with("keys-1", &long).await;
    let n2 = env.node_with("keys-2", &long).await;
    workload(&n1.base, &n2.base).await;
    let port = env.redis.as_ref().expect("redis").port;
    let seen = audit(&[port], &env.prefix);
    // presence ×3, lastseen, cached lists/unread, rate limits, heartbeats, node sets.
    assert!(seen >= 10, "the workload wrote the keys it should: {seen}");
    let kinds = cli(port, &[], &["--scan", "--pattern", &format!("{}*", env.prefix)]);
    for part in [":presence:", ":lastseen:", ":cache:", ":rlu:", ":{nodes}:heartbeat", ":{nodes}:users:"] {
        assert!(kinds.contains(part), "no {part} key after the workload:\n{kinds}");
    }
}

/// Redis memory per online user and per cached conversation list (prints; asserts nothing
/// about size). `cargo nextest run --run-ignored only -E 'test(/memory_figures/)' --no-capture`
#[tokio::test]
#[ignore = "a measurement: run by name"]
async fn memory_figures() {
    const USERS: usize = 200;
    const CONVERSATIONS: usize = 20;
    let env = Env::cluster().await;
    let port = env.redis.as_ref().expect("redis").port;
    let n1 = env.node("mem-1").await;
    let used = || -> i64 {
        cli(port, &[], &["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let usage = |key: &str| -> i64 { cli(port, &[], &["MEMORY", "USAGE", key, "SAMPLES", "0"]).parse().unwrap_or(0) };
    let before = used();
    let ids: Vec<String> = (0..USERS).map(|_| unique("u")).collect();
    let mut socks = Vec::new();
    for id in &ids {
        socks.push(Sock::connect(&n1.base, id).await);
    }
    let after = used();
    let k = &jobsphere_chat::coord::redis::keys::presence(&env.prefix, &ids[0]);
    let set = jobsphere_chat::coord::redis::keys::node_users(&env.prefix, "mem-1");
    println!(
        "online users: {USERS}; used_memory delta {} B/user; presence zset {} B/user; node set {} B total ({} B/user)",
        (after - before) / USERS as i64,
        usage(k),
        usage(&set),
        usage(&set) / USERS as i64
    );

    // One user with CONVERSATIONS conversations, each with a last message: the cached list.
    let me = unique("lister");
    let api = Api::new(&n1.base, &me);
    for other in ids.iter().take(CONVERSATIONS) {
        let c = api.conversation_with(other).await;
        api.send(&c, "a last message of ordinary length, about a job and a date").await;
    }
    let before = used();
    assert_eq!(api.get(&format!("/api/chat/conversations?limit={CONVERSATIONS}")).await.status, 200);
    assert_eq!(api.get("/api/chat/unread").await.status, 200);
    let after = used();
    let lists = cli(port, &[], &["--scan", "--pattern", &format!("{}:cache:{{u:{me}}}:*", env.prefix)]);
    for key in lists.lines() {
        let len: i64 = cli(port, &[], &["STRLEN", key]).parse().unwrap_or(0);
        println!("cached {key}: MEMORY USAGE {} B, value {len} B", usage(key));
    }
    println!("list of {CONVERSATIONS} conversations + unread: used_memory delta {} B", after - before);
    for s in socks {
        s.disconnect().await;
    }
}
