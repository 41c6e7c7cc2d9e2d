//! Targeted fan-out (docs/redis.md): per-user sharded channels that only the nodes holding the
//! user's sockets subscribe to, subscribed before the socket is told it is connected and
//! re-subscribed after the subscriber connection comes back; profiles are read-your-writes.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jobsphere_chat::coord::redis::keys;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    harness::*,
    kit::{
        redis::{cli, until},
        redis_ha::RedisCluster,
    },
};

fn channel(env: &Env, user: &str) -> String {
    keys::user_events(&env.prefix, user)
}

/// `PUBSUB SHARDNUMSUB channel` on the server at `port`: how many connections subscribe.
fn numsub(port: u16, channel: &str) -> i64 {
    let out = cli(port, &[], &["PUBSUB", "SHARDNUMSUB", channel]);
    out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(-1)
}

fn redis_port(env: &Env) -> u16 {
    env.redis.as_ref().expect("cluster env").port
}

async fn wait_numsub(port: u16, channel: &str, n: i64) {
    until(&format!("{channel} subscribed by {n}"), || numsub(port, channel) == n).await;
}

/// A counter (no labels) of a node process.
async fn counter(p: &Proc, name: &str) -> f64 {
    let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", p.metrics_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    body.lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// `chat_redis_pubsub_received_total` of a node process.
async fn received_total(p: &Proc) -> f64 {
    counter(p, "chat_redis_pubsub_received_total").await
}

/// `chat_redis_adapter_received_total` of a node process.
async fn adapter_received_total(p: &Proc) -> f64 {
    counter(p, "chat_redis_adapter_received_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sockets_of_one_user_on_three_nodes_get_each_message_once_and_subscriptions_follow_them() {
    let env = Env::cluster().await;
    let port = redis_port(&env);
    let nodes = [env.node("f1").await, env.node("f2").await, env.node("f3").await];
    let alice = Api::new(&nodes[0].base, "alice");
    let conv = alice.conversation_with("bob").await;
    let bob_channel = channel(&env, "bob");
    let mut bobs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        bobs.push(Sock::connect(&n.base, "bob").await);
        // Subscribed by the time the client saw `connect`.
        assert_eq!(numsub(port, &bob_channel), i as i64 + 1);
    }
    for i in 0..5 {
        let m = alice.send(&conv, &format!("m{i}")).await;
        for b in &bobs {
            assert_eq!(b.next("new_message").await["message"]["seq"], m["seq"]);
        }
    }
    // Barrier on the same path: a last message, then nothing else may be left over.
    let last = alice.send(&conv, "last").await;
    for b in &bobs {
        assert_eq!(b.next("new_message").await["message"]["seq"], last["seq"]);
        assert_eq!(b.count("new_message").await, 0, "a socket received a message twice");
    }
    // Subscriptions follow the sockets: 3 → 2 → 1 → 0.
    for left in (0..3).rev() {
        bobs.pop().expect("a socket").disconnect().await;
        wait_numsub(port, &bob_channel, left).await;
    }
}

/// Targeted: a node with no recipient receives nothing (its own counter, read over /metrics
/// of a real process, moves only for the barrier message meant for its socket). Adapter mode,
/// same layout: every node subscribes to the one request channel, the bystander included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bystander_node_receives_nothing_in_targeted_mode_and_everything_in_adapter_mode() {
    let env = Env::cluster().await;
    let port = redis_port(&env);
    let p = [env.process("b1", &[]).await, env.process("b2", &[]).await, env.process("b3", &[]).await];
    let conv = Api::new(&p[0].base, "alice").conversation_with("bob").await;
    let carol_conv = Api::new(&p[0].base, "dave").conversation_with("carol").await;
    let bob = Sock::connect(&p[1].base, "bob").await;
    let carol = Sock::connect(&p[2].base, "carol").await;
    assert_eq!(numsub(port, &channel(&env, "bob")), 1);
    assert_eq!(numsub(port, &channel(&env, "carol")), 1);
    let (before_bob, before_bystander) = (received_total(&p[1]).await, received_total(&p[2]).await);
    let alice = Api::new(&p[0].base, "alice");
    for i in 0..20 {
        let m = alice.send(&conv, &format!("m{i}")).await;
        assert_eq!(bob.next("new_message").await["message"]["seq"], m["seq"]);
    }
    // Barrier through the bystander's own subscription.
    Api::new(&p[0].base, "dave").send(&carol_conv, "sentinel").await;
    assert_eq!(carol.next("new_message").await["message"]["content"], "sentinel");
    assert_eq!(received_total(&p[2]).await - before_bystander, 1.0, "the bystander received only the sentinel");
    assert_eq!(received_total(&p[1]).await - before_bob, 20.0, "bob's node received each message once");
    assert_eq!(carol.count("new_message").await, 0);

    // Adapter mode: the bystander is subscribed to the channel that carries every broadcast.
    let env = Env::cluster().await;
    let port = redis_port(&env);
    let flags = ["--fanout", "adapter"];
    let a = [env.process("a1", &flags).await, env.process("a2", &flags).await, env.process("a3", &flags).await];
    let conv = Api::new(&a[0].base, "alice").conversation_with("bob").await;
    let bob = Sock::connect(&a[1].base, "bob").await;
    let request = format!("{}-socket.io-request#/#", env.prefix);
    assert_eq!(numsub(port, &request), 3, "every node, the bystander too, receives every broadcast");
    assert_eq!(numsub(port, &channel(&env, "bob")), 0, "no user channels in adapter mode");
    let bystander_before = adapter_received_total(&a[2]).await;
    let alice = Api::new(&a[0].base, "alice");
    for i in 0..10 {
        let m = alice.send(&conv, &format!("via the adapter {i}")).await;
        assert_eq!(bob.next("new_message").await["message"]["seq"], m["seq"]);
    }
    // The bystander receives every broadcast too (at least the ten `new_message`s; the sender's
    // other events ride the same channel). A counter cannot be awaited: poll it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = adapter_received_total(&a[2]).await - bystander_before;
    while got < 10.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = adapter_received_total(&a[2]).await - bystander_before;
    }
    assert!(got >= 10.0, "the bystander's adapter subscriber received {got} of at least 10 broadcasts");
    assert_eq!(received_total(&a[2]).await, 0.0, "no user channels in adapter mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_cross_nodes_on_the_user_channels() {
    let env = Env::cluster().await;
    let nodes = [env.node("t1").await, env.node("t2").await];
    let conv = Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let a = Sock::connect(&nodes[0].base, "alice").await;
    let b = Sock::connect(&nodes[1].base, "bob").await;
    let b_other = Sock::connect(&nodes[1].base, "bob").await;
    ok(&b.ack("join_conversation", json!({ "conversationId": conv })).await);

    ok(&a.ack("typing_start", json!({ "conversationId": conv })).await);
    assert_eq!(b.next("user_typing").await, json!({ "conversationId": conv, "userId": "alice", "isTyping": true }));
    ok(&a.ack("typing_stop", json!({ "conversationId": conv })).await);
    assert_eq!(b.next("user_typing").await["isTyping"], false);

    let m = ok(&a.ack("send_message", json!({ "conversationId": conv, "content": "hi" })).await)["message"].clone();
    assert_eq!(b.next("new_message").await["message"]["seq"], m["seq"]);
    ok(&b.ack("mark_as_delivered", json!({ "conversationId": conv, "upToSeq": m["seq"] })).await);
    let d = a.next("messages_delivered").await;
    assert_eq!((d["conversationId"].as_str(), &d["upToSeq"]), (Some(conv.as_str()), &m["seq"]));
    ok(&b.ack("mark_as_read", json!({ "conversationId": conv })).await);
    let r = a.next("messages_read").await;
    assert_eq!((r["readerId"].as_str(), &r["upToSeq"]), (Some("bob"), &m["seq"]));
    // Typing went only to the socket that joined; barrier: bob's other socket got the message.
    assert_eq!(b_other.next("new_message").await["message"]["seq"], m["seq"]);
    assert_eq!(b_other.count("user_typing").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_the_subscriber_connections_are_killed() {
    let env = Env::cluster().await;
    let port = redis_port(&env);
    let nodes = [env.node("k1").await, env.node("k2").await];
    let alice = Api::new(&nodes[0].base, "alice");
    let conv = alice.conversation_with("bob").await;
    let bob = Sock::connect(&nodes[1].base, "bob").await;
    let m = alice.send(&conv, "before").await;
    assert_eq!(bob.next("new_message").await["message"]["seq"], m["seq"]);

    for round in 0..2 {
        let killed: i64 = cli(port, &[], &["CLIENT", "KILL", "TYPE", "pubsub"]).parse().unwrap_or(0);
        assert!(killed >= 2, "round {round}: killed {killed} pub/sub connections");
        // The node's own list is subscribed again on the new connection.
        wait_numsub(port, &channel(&env, "bob"), 1).await;
        let m = alice.send(&conv, &format!("after kill {round}")).await;
        assert_eq!(bob.next("new_message").await["message"]["seq"], m["seq"]);
    }
}

/// Messages sent while a user's first socket connects: each one sent after the client saw
/// `connect` arrives live, and `sync` from before the connect returns every other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_racing_the_first_connect_is_delivered_live_or_by_sync() {
    let env = Env::cluster().await;
    let nodes = [env.node("r1").await, env.node("r2").await];
    for round in 0..6 {
        let bob = format!("bob{round}");
        let alice = Api::new(&nodes[0].base, "alice");
        let conv = alice.conversation_with(&bob).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (progress, mut sent_so_far) = tokio::sync::watch::channel(0usize);
        let sender = {
            let (alice, conv, stop) = (alice.clone(), conv.clone(), stop.clone());
            tokio::spawn(async move {
                // (seq, when the send started), until 10 more after the connect.
                let mut sent = Vec::new();
                let mut after = 0;
                while after < 10 && sent.len() < 2_000 {
                    let started = Instant::now();
                    let m = alice.send(&conv, &format!("race {}", sent.len())).await;
                    sent.push((m["seq"].as_i64().expect("seq"), started));
                    progress.send_replace(sent.len());
                    if stop.load(Ordering::SeqCst) {
                        after += 1;
                    }
                }
                sent
            })
        };
        // Connect in the middle of the stream (a different point each round).
        sent_so_far.wait_for(|n| *n > round * 3).await.expect("sender alive");
        let sock = Sock::connect(&nodes[1].base, &bob).await;
        let connected = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let sent = sender.await.expect("sender");
        let last = sent.last().expect("sent").0;
        let mut live = BTreeSet::new();
        while !live.contains(&last) {
            let m = sock.next("new_message").await;
            assert!(live.insert(m["message"]["seq"].as_i64().expect("seq")), "a message arrived twice: {m}");
        }
        for (seq, started) in &sent {
            if *started > connected {
                assert!(live.contains(seq), "round {round}: seq {seq} was sent after connect and never arrived");
            }
        }
        let sync = ok(&sock.ack("sync", json!({ "conversations": [{ "conversationId": conv, "afterSeq": 0 }] })).await)
            .clone();
        let synced: BTreeSet<i64> = sync["conversations"][0]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["seq"].as_i64().expect("seq"))
            .collect();
        let all: BTreeSet<i64> = live.union(&synced).copied().collect();
        assert_eq!(all, (1..=last).collect::<BTreeSet<_>>(), "round {round}: a gap");
        sock.disconnect().await;
    }
}

/// A token with a new name and avatar: once the connect (or the request) carrying it is
/// answered, the partner's list shows it on every node, although both nodes had cached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_profile_shows_in_the_partners_list_on_every_node() {
    let env = Env::cluster().await;
    let nodes = [env.node("p1").await, env.node("p2").await];
    Api::new(&nodes[0].base, "alice").conversation_with("bob").await;
    let bobs: Vec<Api> = nodes.iter().map(|n| Api::new(&n.base, "bob")).collect();
    let name_of_alice = |list: &Value| -> (Value, Value) {
        let parts = list["data"]["conversations"][0]["participants"].as_array().expect("participants").clone();
        let a = parts.into_iter().find(|p| p["_id"] == "alice").expect("alice");
        (a["name"].clone(), a["avatar"].clone())
    };
    for b in &bobs {
        assert_eq!(name_of_alice(&b.get("/api/chat/conversations").await.body).0, "User alice");
    }

    // A socket connect with the new profile, on node 1.
    let mut renamed = user("alice");
    renamed.name = "Alice Renamed".into();
    renamed.avatar = Some("https://example.com/a.png".into());
    let t = jwt().sign(&renamed, Duration::from_secs(3600)).expect("sign");
    let sock = Sock::try_connect(&nodes[0].base, SockOpts { auth: Some(json!({ "token": t })), ..Default::default() })
        .await
        .expect("connect");
    for b in &bobs {
        let (name, avatar) = name_of_alice(&b.get("/api/chat/conversations").await.body);
        assert_eq!((name.as_str(), avatar.as_str()), (Some("Alice Renamed"), Some("https://example.com/a.png")));
    }
    sock.disconnect().await;

    // A REST request with another name, on node 2.
    renamed.name = "Alice Again".into();
    let t = jwt().sign(&renamed, Duration::from_secs(3600)).expect("sign");
    let r = Api::with_token(&nodes[1].base, Some(t)).get("/api/chat/conversations").await;
    assert_eq!(r.status, 200);
    for b in &bobs {
        assert_eq!(name_of_alice(&b.get("/api/chat/conversations").await.body).0, "Alice Again");
    }
}

/// Sharded pub/sub on a real Redis Cluster: the user's channel lives on the master of the
/// user's slot, subscribed by exactly the nodes holding the user's sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_fan_out_runs_on_redis_cluster_slots() {
    let c = RedisCluster::start().await;
    let env = Env::embedded();
    let url = c.url();
    let n = [env.node_with("fc-1", &["--redis-url", &url]).await, env.node_with("fc-2", &["--redis-url", &url]).await];
    let alice = Api::new(&n[0].base, "alice");
    let conv = alice.conversation_with("bob").await;
    let bobs = [Sock::connect(&n[0].base, "bob").await, Sock::connect(&n[1].base, "bob").await];
    let ch = channel(&env, "bob");
    let owner = c.master_of(&ch);
    assert_eq!(owner, c.master_of(&keys::presence(&env.prefix, "bob")), "the channel shares the user's slot");
    assert_eq!(numsub(owner, &ch), 2);
    for i in 0..5 {
        let m = alice.send(&conv, &format!("c{i}")).await;
        for b in &bobs {
            assert_eq!(b.next("new_message").await["message"]["seq"], m["seq"]);
        }
    }
    let last = alice.send(&conv, "last").await;
    for b in &bobs {
        assert_eq!(b.next("new_message").await["message"]["seq"], last["seq"]);
        assert_eq!(b.count("new_message").await, 0, "exactly once on the cluster too");
    }
}

/// `CLIENT LIST`: connection id -> its number of sharded subscriptions (`ssub`).
fn sharded_subscribers(port: u16, auth: &[String]) -> std::collections::BTreeMap<String, String> {
    cli(port, auth, &["CLIENT", "LIST"])
        .lines()
        .filter_map(|l| {
            let field = |k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).map(str::to_owned);
            Some((field("id=")?, field("ssub=")?))
        })
        .collect()
}

/// `GET /readyz` of a node, bounded like a probe: (status, body).
async fn readyz(base: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/readyz answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Only the targeted fan-out's subscriber is down (every other connection of the node stays
/// up and Redis answers PING): the node's sockets miss events meanwhile, so `/readyz` is 503
/// until that connection is back, then 200, and delivery resumes on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_only_the_fan_out_subscriber_is_down() {
    let env = Env::cluster().await;
    let port = redis_port(&env);
    let nodes = [env.node("s1").await, env.node("s2").await];
    let alice = Api::new(&nodes[0].base, "alice");
    let conv = alice.conversation_with("bob").await;
    // The connection whose sharded subscriptions went up when bob connected to node 2 is node
    // 2's fan-out subscriber (the adapter and the lag probe subscribe to their own channels).
    let before = sharded_subscribers(port, &[]);
    let bob = Sock::connect(&nodes[1].base, "bob").await;
    let after = sharded_subscribers(port, &[]);
    let ids: Vec<&String> =
        after.iter().filter(|(id, n)| *n != "0" && before.get(*id) != Some(n)).map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 1, "one connection subscribed to bob's channel: {before:?} -> {after:?}");
    assert_eq!(readyz(&nodes[1].base).await.0, 200);

    // New connections cannot log in (the default user is off; the test keeps an admin user),
    // so the killed subscriber cannot come back; the node's other connections stay logged in.
    let admin = ["--user", "admin", "--pass", "admin-pw", "--no-auth-warning"].map(String::from);
    assert_eq!(cli(port, &[], &["ACL", "SETUSER", "admin", "on", ">admin-pw", "~*", "&*", "+@all"]), "OK");
    assert_eq!(cli(port, &admin, &["ACL", "SETUSER", "default", "off"]), "OK");
    assert_eq!(cli(port, &admin, &["CLIENT", "KILL", "ID", ids[0]]), "1", "killed node 2's fan-out subscriber");

    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = readyz(&nodes[1].base).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status} with the fan-out subscriber down: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((&body["checks"]["redis"], &body["checks"]["store"]), (&json!(false), &json!(true)), "{body}");
    // Still down a moment later (not a blip of the reconnect), while node 1 stays ready.
    for _ in 0..5 {
        assert_eq!(readyz(&nodes[1].base).await.0, 503);
        assert_eq!(readyz(&nodes[0].base).await.0, 200, "node 1 kept all its connections");
    }

    assert_eq!(cli(port, &admin, &["ACL", "SETUSER", "default", "on"]), "OK");
    let deadline = Instant::now() + WAIT;
    while readyz(&nodes[1].base).await.0 != 200 {
        assert!(Instant::now() < deadline, "node 2 never ready again after its subscriber could reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_numsub(port, &channel(&env, "bob"), 1).await;
    let m = alice.send(&conv, "after the subscriber is back").await;
    assert_eq!(bob.next("new_message").await["message"]["seq"], m["seq"]);
}
