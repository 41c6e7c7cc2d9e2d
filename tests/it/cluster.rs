//! Cluster mode: several nodes and one real `redis-server` behave as one service.

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
    // alice on n1 (sending) and n2; bob on n2 and n3; carol (a stranger) on n3.
    let a1 = Sock::connect(&nodes[0].base, "alice").await;
    let a2 = Sock::connect(&nodes[1].base, "alice").await;
    let b2 = Sock::connect(&nodes[1].base, "bob").await;
    let b3 = Sock::connect(&nodes[2].base, "bob").await;
    let c3 = Sock::connect(&nodes[2].base, "carol").await;
    for i in 0..5 {
        let ack = a1.ack("send_message", json!({ "conversationId": conv, "content": format!("m{i}") })).await;
        let seq = ok(&ack)["message"]["seq"].clone();
        assert_eq!(a1.next("message_delivered").await["message"]["seq"], seq);
        for s in [&a1, &a2, &b2, &b3] {
            assert_eq!(s.next("new_message").await["message"]["seq"], seq);
        }
    }
    // (This client runs each callback as its own task, so the order of the sending socket's
    // events is checked with socket.io-client in tests/ops/lb_clients.cjs.)
    // n1 published all five before its sentinels, on the same Redis channel: once the sentinels
    // are in everywhere, a late cross-node duplicate would be too.
    let all = [(&a1, "alice"), (&a2, "alice"), (&b2, "bob"), (&b3, "bob"), (&c3, "carol")];
    settle(&nodes[0].base, &all).await;
    for s in [&a1, &a2, &b2, &b3] {
        assert_eq!(s.count("new_message").await, 0, "a socket received a message twice");
    }
    for s in [&a1, &a2, &b2, &b3, &c3] {
        assert_eq!(s.count("message_delivered").await, 0, "one message_delivered, to the sending socket only");
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

/// bob's receipt on n2 reaches alice's devices on n1 and n3 once each, and no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_delivered_reaches_the_senders_devices_on_other_nodes() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let a1 = Sock::connect(&nodes[0].base, "alice").await;
    let a3 = Sock::connect(&nodes[2].base, "alice").await;
    let b2 = Sock::connect(&nodes[1].base, "bob").await;
    let c1 = Sock::connect(&nodes[0].base, "carol").await;
    for i in 0..2 {
        let ack = a1.ack("send_message", json!({ "conversationId": conv, "content": format!("m{i}") })).await;
        ok(&ack);
    }
    let d = b2.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": 2 })).await;
    assert_eq!(ok(&d)["updated"], 2, "{d}");
    for s in [&a1, &a3] {
        assert_eq!(s.next("messages_delivered").await, json!({ "conversationId": conv, "upToSeq": 2 }));
    }
    settle(&nodes[1].base, &[(&a1, "alice"), (&a3, "alice"), (&b2, "bob"), (&c1, "carol")]).await;
    for (name, s) in [("a1", &a1), ("a3", &a3), ("b2 (the reader)", &b2), ("c1 (a stranger)", &c1)] {
        assert_eq!(s.count("messages_delivered").await, 0, "{name}: messages_delivered once, to the sender only");
    }
    let h = Api::new(&nodes[2].base, "alice").get(&format!("/api/chat/conversations/{conv}/messages")).await;
    let statuses: Vec<&Value> =
        h.body["data"]["messages"].as_array().expect("messages").iter().map(|m| &m["status"]).collect();
    assert_eq!(statuses, [&json!("delivered"), &json!("delivered")], "{}", h.body);
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
    // n3 published the offline: after its sentinel, exactly two user_status events overall.
    settle(&nodes[2].base, &[(&bob, "bob")]).await;
    assert_eq!(bob.count("user_status").await, 0);
}

/// The presence TTL the presence tests inject (the smallest allowed; the default is 60 s).
const PRESENCE_TTL: Duration = Duration::from_secs(2);

fn ttl_flags() -> [String; 2] {
    ["--presence-ttl-secs".into(), PRESENCE_TTL.as_secs().to_string()]
}

/// kill -9 of the node holding a user's only socket: partners hear "offline" once its
/// heartbeat expired (not before: it was refreshed up to TTL/3 before the kill), awaited as
/// the event itself and bounded by a few TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_users_go_offline_within_the_ttl() {
    let env = Env::cluster().await;
    let ttl = ttl_flags();
    let ttl: Vec<&str> = ttl.iter().map(String::as_str).collect();
    let survivor = env.node_with("n1", &ttl).await;
    let mut doomed = env.process("n2", &ttl).await;
    Api::new(&survivor.base, "alice").conversation_with("bob").await;
    let bob = Sock::connect(&survivor.base, "bob").await;
    let _alice = Sock::connect(&doomed.base, "alice").await;
    assert_eq!(bob.next("user_status").await["online"], true);
    let killed_at = tokio::time::Instant::now();
    doomed.kill9();
    let st = tokio::time::timeout(PRESENCE_TTL * 4, bob.next("user_status"))
        .await
        .unwrap_or_else(|_| panic!("no offline within 4×TTL of the kill"));
    let took = killed_at.elapsed();
    assert_eq!((st["userId"].clone(), st["online"].clone()), (json!("alice"), json!(false)));
    assert!(took >= PRESENCE_TTL * 2 / 3, "offline after {took:?}: before the heartbeat could have expired");
    let s = Api::new(&survivor.base, "bob").get("/api/chat/users/status?ids=alice").await;
    assert_eq!(s.body["data"]["statuses"][0]["online"], false);
}

/// A user whose node lives is kept online past the TTL by the node's refresh: over several
/// TTLs, every status read on another node says online and the partner hears no offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_kept_alive_past_the_ttl_by_refresh() {
    let env = Env::cluster().await;
    let ttl = ttl_flags();
    let ttl: Vec<&str> = ttl.iter().map(String::as_str).collect();
    let n1 = env.node_with("n1", &ttl).await;
    let n2 = env.node_with("n2", &ttl).await;
    Api::new(&n1.base, "alice").conversation_with("bob").await;
    let bob = Sock::connect(&n1.base, "bob").await;
    let _alice = Sock::connect(&n2.base, "alice").await;
    assert_eq!(bob.next("user_status").await["online"], true);
    let since = tokio::time::Instant::now();
    let api = Api::new(&n1.base, "bob");
    let mut reads = 0;
    // The scenario is time passing: three TTLs, read every TTL/4.
    while since.elapsed() < PRESENCE_TTL * 3 {
        let s = api.get("/api/chat/users/status?ids=alice").await;
        assert_eq!(s.body["data"]["statuses"][0]["online"], true, "offline after {:?}: {}", since.elapsed(), s.body);
        reads += 1;
        tokio::time::sleep(PRESENCE_TTL / 4).await;
    }
    assert!(reads >= 8, "only {reads} reads");
    settle(&n2.base, &[(&bob, "bob")]).await;
    assert_eq!(bob.count("user_status").await, 0, "no offline (and no second online) while alice's node lives");
}

/// Both users create their conversation at once through different nodes, many times over:
/// one conversation each time, the same id for both, exactly one 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_different_nodes_yield_one_conversation() {
    let env = Env::cluster().await;
    let nodes = three_nodes(&env).await;
    for round in 0..10 {
        let (a, b) = (format!("ca{round}"), format!("cb{round}"));
        let alice = Api::new(&nodes[round % 3].base, &a);
        let bob = Api::new(&nodes[(round + 1) % 3].base, &b);
        let (ra, rb) = tokio::join!(
            alice.post("/api/chat/conversations", json!({ "participantId": b })),
            bob.post("/api/chat/conversations", json!({ "participantId": a })),
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "round {round}: one creates, the other finds: {} {}", ra.body, rb.body);
        assert_eq!(ra.body["data"]["_id"], rb.body["data"]["_id"], "round {round}: one conversation");
        let listed = Api::new(&nodes[2].base, &a).get("/api/chat/conversations").await;
        assert_eq!(listed.body["data"]["conversations"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    }
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
            // bob's node drained: the client sees a transport close (any end of the session
            // ends this wait; a namespace disconnect would say "io server disconnect" and the
            // client would not reconnect) and reconnects to a survivor, as behind the LB.
            // Either way the client reconnects by itself; what must never come is a namespace
            // disconnect. A transport error is accepted too: the process exits right after its
            // drain, and a close frame that races the exit can reach the client as a reset.
            let (name, why) = bob.next_of(&["close", "error"]).await;
            assert!(
                matches!((name.as_str(), why.as_str()), ("close", Some("transport close")) | ("error", Some(_))),
                "bob's session ended with {name}: {why:?}"
            );
            bob_node = (k + 1) % 3;
            bob_moves += 1;
            bob = Sock::connect(&procs[bob_node].base, "bob").await;
            // Catch-up: everything after what bob had, gap-free, at least up to every message
            // acknowledged before the sync was asked.
            let acked_before = acked.lock().unwrap().iter().map(|(seq, _)| *seq).max().unwrap_or(0);
            let from = bob_seen;
            loop {
                let q = json!({ "conversations": [{ "conversationId": conv, "afterSeq": bob_seen }] });
                let s = bob.ack("sync", q).await;
                let c = &ok(&s)["conversations"][0];
                let seqs: Vec<i64> =
                    c["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
                assert_eq!(seqs, (bob_seen + 1..=bob_seen + seqs.len() as i64).collect::<Vec<_>>(), "sync gap");
                bob_seen = seqs.last().copied().unwrap_or(bob_seen);
                if c["hasMore"] != true {
                    break;
                }
            }
            assert!(
                bob_seen >= acked_before,
                "sync from {from} stopped at {bob_seen}, {acked_before} was acknowledged"
            );
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
