//! Cluster mode (issue 3): several nodes and one real `redis-server` behave as one service.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Three nodes on one Redis and one shared SQLite file.
async fn three_nodes(env: &Env) -> Vec<Node> {
    vec![env.node("n1").await, env.node("n2").await, env.node("n3").await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_three_nodes_each_get_a_message_exactly_once() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    // alice on n1; bob on n2 and n3; carol (a stranger) on n3.
    let a1 = Sock::connect(&nodes[0].base, "alice").await;
    let b2 = Sock::connect(&nodes[1].base, "bob").await;
    let b3 = Sock::connect(&nodes[2].base, "bob").await;
    let c3 = Sock::connect(&nodes[2].base, "carol").await;
    for i in 0..5 {
        let ack = a1.ack("send_message", json!({ "conversationId": conv, "content": format!("m{i}") })).await;
        let seq = ok(&ack)["message"]["seq"].clone();
        for s in [&a1, &b2, &b3] {
            assert_eq!(s.next("new_message").await["message"]["seq"], seq);
        }
    }
    // Barrier: every broadcast reached n3 before this ack (b3 on n3 got all five).
    ok(&c3.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    for s in [&a1, &b2, &b3] {
        assert_eq!(s.count("new_message").await, 0, "a socket received a message twice");
    }
    assert_eq!(c3.count("new_message").await, 0, "a stranger received a message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_different_nodes_keep_seq_gap_free() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let mut tasks = Vec::new();
    for (i, user) in ["alice", "bob", "alice"].into_iter().enumerate() {
        let api = Api::new(&nodes[i].base, user);
        let conv = conv.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..30 {
                seqs.push(api.send(&conv, &format!("{user}-{i}-{j}")).await["seq"].as_i64().unwrap());
            }
            seqs
        }));
    }
    let mut all: Vec<i64> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=90).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_an_ack_see_the_write_on_every_node() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let bobs: Vec<Api> = nodes.iter().map(|n| Api::new(&n.base, "bob")).collect();
    let alice = Sock::connect(&nodes[0].base, "alice").await;
    for round in 1..=5i64 {
        // Warm every node's view of bob's caches, then write on node 1 …
        for b in &bobs {
            b.get("/api/chat/unread").await;
            b.get("/api/chat/conversations").await;
        }
        let ack = alice.ack("send_message", json!({ "conversationId": conv, "content": format!("r{round}") })).await;
        let seq = ok(&ack)["message"]["seq"].clone();
        // … and read on every node right after the ack.
        for b in &bobs {
            let u = b.get("/api/chat/unread").await;
            assert_eq!(u.body["data"]["total"], round, "stale unread on {}", b.base);
            let l = b.get("/api/chat/conversations").await;
            assert_eq!(l.body["data"]["conversations"][0]["lastMessage"]["seq"], seq, "stale list on {}", b.base);
        }
    }
    // Reading is read-your-writes too.
    let r = bobs[1].post(&format!("/api/chat/conversations/{conv}/read"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for b in &bobs {
        assert_eq!(b.get("/api/chat/unread").await.body["data"]["total"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_shared_by_all_nodes() {
    let env = Env::cluster().await;
    let flags = ["--rate-limit-messages", "6", "--rate-limit-window-secs", "60"];
    let nodes = [env.node_with("n1", &flags).await, env.node_with("n2", &flags).await];
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let path = format!("/api/chat/conversations/{conv}/messages");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let api = Api::new(&nodes[i % 2].base, "alice");
        statuses.push(api.post(&path, json!({ "content": "x" })).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 6, "{statuses:?}");
    assert_eq!(statuses[6..], [429, 429]);
    // bob's budget is his own.
    assert_eq!(Api::new(&nodes[1].base, "bob").post(&path, json!({ "content": "y" })).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let bob = Sock::connect(&nodes[0].base, "bob").await;
    let a2 = Sock::connect(&nodes[1].base, "alice").await;
    let st = bob.next("user_status").await;
    assert_eq!((st["userId"].clone(), st["online"].clone()), (json!("alice"), json!(true)));
    // A second device on another node: still one "online", no new event.
    let a3 = Sock::connect(&nodes[2].base, "alice").await;
    let s = bob.ack("get_online_status", json!({ "userIds": ["alice"] })).await;
    assert_eq!(ok(&s)["statuses"][0]["online"], true);
    a2.disconnect().await;
    // Still online through n3.
    let s = Api::new(&nodes[1].base, "bob").get("/api/chat/users/status?ids=alice").await;
    assert_eq!(s.body["data"]["statuses"][0]["online"], true, "{}", s.body);
    a3.disconnect().await;
    let st = bob.next("user_status").await;
    assert_eq!(st["online"], false);
    assert!(st["lastSeen"].is_string());
    // Barrier then: exactly two user_status events overall.
    ok(&bob.ack("get_online_status", json!({ "userIds": ["alice"] })).await);
    assert_eq!(bob.count("user_status").await, 0);
}

/// kill -9 of the node holding a user's only socket: partners hear "offline" within ~2×TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_users_go_offline_within_the_ttl() {
    let env = Env::cluster().await;
    let ttl = ["--presence-ttl-secs", "2"];
    let survivor = env.node_with("n1", &ttl).await;
    let mut doomed = env.process("n2", &ttl).await;
    Api::new(&survivor.base, "alice").conversation_with("bob").await;
    let bob = Sock::connect(&survivor.base, "bob").await;
    let _alice = Sock::connect(&doomed.base, "alice").await;
    assert_eq!(bob.next("user_status").await["online"], true);
    let killed_at = tokio::time::Instant::now();
    doomed.kill9();
    let st = bob.next("user_status").await;
    let took = killed_at.elapsed();
    assert_eq!((st["userId"].clone(), st["online"].clone()), (json!("alice"), json!(false)));
    assert!(took <= Duration::from_secs(5), "offline after {took:?}, more than ~2×TTL");
    let s = Api::new(&survivor.base, "bob").get("/api/chat/users/status?ids=alice").await;
    assert_eq!(s.body["data"]["statuses"][0]["online"], false);
}

fn message_seq(ack: &Value) -> i64 {
    ok(ack)["message"]["seq"].as_i64().expect("seq")
}

/// Redis stopped mid-traffic → `unavailable` quickly, not-ready; restarted → full recovery,
/// including cross-node delivery (the adapter's subscriptions are restored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_then_recovery() {
    let mut env = Env::cluster().await;
    let n1 = env.node("n1").await;
    let n2 = env.node("n2").await;
    let conv = Api::new(&n1.base, "alice").conversation_with("bob").await;
    let alice = Sock::connect(&n1.base, "alice").await;
    let bob = Sock::connect(&n2.base, "bob").await;
    let seq = message_seq(&alice.ack("send_message", json!({ "conversationId": conv, "content": "before" })).await);
    assert_eq!(bob.next("new_message").await["message"]["seq"], seq);

    env.redis.as_mut().unwrap().stop().await;
    let started = tokio::time::Instant::now();
    let ack = alice.ack("send_message", json!({ "conversationId": conv, "content": "during" })).await;
    assert_eq!(ack["code"], "unavailable", "{ack}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/readyz", n1.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(http.get(format!("{}/healthz", n1.base)).send().await.unwrap().status(), 200);

    env.redis.as_mut().unwrap().restart().await;
    // Recovery: readiness comes back by itself …
    for n in [&n1, &n2] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while http.get(format!("{}/readyz", n.base)).send().await.unwrap().status() != 200 {
            assert!(tokio::time::Instant::now() < deadline, "{} never ready again", n.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // … and cross-node delivery works again, both ways.
    let deadline = tokio::time::Instant::now() + WAIT;
    let seq = loop {
        let ack = alice.ack("send_message", json!({ "conversationId": conv, "content": "after" })).await;
        if ack["status"] == "success" {
            break message_seq(&ack);
        }
        assert!(tokio::time::Instant::now() < deadline, "sending never recovered: {ack}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got = loop {
        let m = bob.next("new_message").await;
        if m["message"]["seq"].as_i64() == Some(seq) {
            break m;
        }
    };
    assert_eq!(got["message"]["content"], "after");
    let back = message_seq(&bob.ack("send_message", json!({ "conversationId": conv, "content": "reply" })).await);
    loop {
        if alice.next("new_message").await["message"]["seq"].as_i64() == Some(back) {
            break;
        }
    }
}

/// Rolling SIGTERM of each node in turn under a message stream: every acknowledged message is
/// in history (gap-free), each node exits cleanly, and a client whose node drains is told by a
/// transport close (so it reconnects) and catches up with `sync` on a survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_sigterm_loses_no_acknowledged_message() {
    use std::sync::{Arc, Mutex};
    let env = Env::cluster().await;
    let flags = ["--drain-delay-secs", "1", "--shutdown-grace-secs", "10"];
    let mut procs = [env.process("p1", &flags).await, env.process("p2", &flags).await, env.process("p3", &flags).await];
    let bases = Arc::new(Mutex::new(procs.iter().map(|p| p.base.clone()).collect::<Vec<_>>()));
    let conv = Api::new(&procs[0].base, "alice").conversation_with("bob").await;

    // The stream: one send at a time, each retried on another node with the same
    // clientMessageId until acknowledged (what a client behind a load balancer does).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let sender = {
        let (bases, stop, acked, conv) = (bases.clone(), stop.clone(), acked.clone(), conv.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cmid = format!("m{i}");
                let path = format!("/api/chat/conversations/{conv}/messages");
                for attempt in 0.. {
                    let base = {
                        let b = bases.lock().unwrap();
                        b[(i as usize + attempt) % b.len()].clone()
                    };
                    let api = Api::new(&base, "alice");
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        api.try_post(&path, json!({ "content": format!("c{i}"), "clientMessageId": cmid })),
                    )
                    .await;
                    if let Ok(Some(r)) = sent
                        && (r.status == 201 || r.status == 200)
                    {
                        let m = &r.body["data"]["message"];
                        acked
                            .lock()
                            .unwrap()
                            .push((m["seq"].as_i64().unwrap(), m["content"].as_str().unwrap().to_owned()));
                        break;
                    }
                    assert!(attempt < 200, "message {i} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                i += 1;
            }
        })
    };

    let mut bob = Sock::connect(&procs[0].base, "bob").await;
    let (mut bob_node, mut bob_seen, mut bob_moves) = (0usize, 0i64, 0);
    for k in 0..3 {
        let before = acked.lock().unwrap().len();
        let status = procs[k].sigterm().await.expect("exit status");
        assert!(status.success(), "node {k} exited with {status:?}");
        if k == bob_node {
            // bob's node drained: the client sees a transport close, not a namespace disconnect,
            // and reconnects to a survivor (what the load balancer does for it).
            let (name, why) = bob.next_of(&["close"]).await;
            assert_eq!(name, "close", "{why}");
            bob_node = (k + 1) % 3;
            bob_moves += 1;
            bob = Sock::connect(&procs[bob_node].base, "bob").await;
            let s =
                bob.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": bob_seen }] })).await;
            let msgs = ok(&s)["conversations"][0]["messages"].as_array().unwrap().clone();
            bob_seen = msgs.last().map_or(bob_seen, |m| m["seq"].as_i64().unwrap());
        }
        let restarted = env.process(&format!("p{}", k + 1), &flags).await;
        bases.lock().unwrap()[k] = restarted.base.clone();
        procs[k] = restarted;
        // Traffic kept flowing through the roll.
        let deadline = tokio::time::Instant::now() + WAIT;
        while acked.lock().unwrap().len() < before + 5 {
            assert!(tokio::time::Instant::now() < deadline, "stream stalled after node {k}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();
    assert!(bob_moves >= 2, "bob should have followed the roll");

    let acked = acked.lock().unwrap().clone();
    let api = Api::new(&procs[2].base, "bob");
    let mut history = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        let r = api.get(&format!("/api/chat/conversations/{conv}/messages?limit=100{q}")).await;
        let page = r.body["data"]["messages"].as_array().unwrap().clone();
        before = page.first().map(|m| m["seq"].as_i64().unwrap());
        history.splice(0..0, page);
        if r.body["data"]["hasMore"] != true {
            break;
        }
    }
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "history has a gap");
    for (seq, content) in &acked {
        let m = &history[(*seq - 1) as usize];
        assert_eq!(m["content"], content.as_str(), "acknowledged message {seq} lost or changed");
    }
    assert_eq!(acked.len(), history.len(), "every stored message was acknowledged exactly once");
    // bob, reconnected to a survivor, still gets live messages.
    let a = Api::new(&procs[(bob_node + 1) % 3].base, "alice");
    let last = a.send(&conv, "after the roll").await;
    loop {
        if bob.next("new_message").await["message"]["_id"] == last["_id"] {
            break;
        }
    }
}
