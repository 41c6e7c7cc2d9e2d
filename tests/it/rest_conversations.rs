//! REST API: creating and listing conversations.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// POST /api/chat/conversations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conversation_is_201_then_200_with_participant_objects() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    // bob registers (his token's claims become his user record) and has a live socket.
    data(&bob.get("/api/chat/unread").await, 200);
    let bob_sock = Sock::connect(&node.base, "bob").await;
    wait_status(&alice, "bob", |s| s["online"] == true).await;

    let r = alice.post("/api/chat/conversations", json!({ "participantId": "bob" })).await;
    let c = data(&r, 201);
    let id = c["_id"].as_str().expect("_id").to_owned();
    assert_eq!(id.len(), 24, "ObjectId-shaped id: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c["jobId"], Value::Null);
    assert_eq!(c["lastMessage"], Value::Null);
    assert_eq!(c["unreadCount"], 0);
    assert_millis_utc(&c["createdAt"]);
    assert_millis_utc(&c["updatedAt"]);
    let parts = c["participants"].as_array().expect("participants array");
    assert_eq!(parts.len(), 2, "{c}");
    let ids: HashSet<&str> = parts.iter().map(|p| p["_id"].as_str().expect("participant _id")).collect();
    assert_eq!(ids, HashSet::from(["alice", "bob"]));
    for p in parts {
        for k in ["_id", "name", "avatar", "role", "online"] {
            assert!(p.as_object().unwrap().contains_key(k), "participant lacks {k}: {p}");
        }
        let who = p["_id"].as_str().unwrap();
        assert_eq!(p["name"], format!("User {who}"), "{p}");
        assert_eq!(p["role"], "customer", "{p}");
        assert_eq!(p["online"], who == "bob", "only bob has a socket: {p}");
    }

    // Again, from either side: the same conversation, 200.
    let again = data(&alice.post("/api/chat/conversations", json!({ "participantId": "bob" })).await, 200);
    assert_eq!(again["_id"], id);
    let reverse = data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice" })).await, 200);
    assert_eq!(reverse["_id"], id);
    let explicit_null =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": null })).await, 200);
    assert_eq!(explicit_null["_id"], id);

    // Another job: another conversation; repeats find it.
    let job =
        data(&alice.post("/api/chat/conversations", json!({ "participantId": "bob", "jobId": "job-42" })).await, 201);
    assert_ne!(job["_id"], id);
    assert_eq!(job["jobId"], "job-42");
    let job2 =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": "job-42" })).await, 200);
    assert_eq!(job2["_id"], job["_id"]);
    let other_job =
        data(&bob.post("/api/chat/conversations", json!({ "participantId": "alice", "jobId": "job-43" })).await, 201);
    assert_ne!(other_job["_id"], job["_id"]);
    assert_ne!(other_job["_id"], id);

    // A user the server never saw still gets an object participant.
    let ghost = data(&alice.post("/api/chat/conversations", json!({ "participantId": "ghost-7" })).await, 201);
    let g = ghost["participants"].as_array().unwrap().iter().find(|p| p["_id"] == "ghost-7").cloned().unwrap();
    assert!(g["name"].is_string(), "{g}");
    assert_eq!(g["online"], false);

    bob_sock.disconnect().await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conversation_rejects_bad_input() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let p = "/api/chat/conversations";

    assert_validation(&alice.post(p, json!({ "participantId": "alice" })).await, "participantId");
    for bad in ["a b", "", " ", "bob\n", "{\"$gt\":\"\"}", "ü-user", "a/b", "a#b"] {
        assert_validation(&alice.post(p, json!({ "participantId": bad })).await, "participantId");
    }
    assert_validation(&alice.post(p, json!({ "participantId": "x".repeat(200) })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": "x".repeat(129) })).await, "participantId");
    // The upper bound itself is fine.
    data(&alice.post(p, json!({ "participantId": "y".repeat(128) })).await, 201);

    assert_validation(&alice.post(p, json!({})).await, "participantId");
    assert_validation(&alice.post(p, json!({ "jobId": "j1" })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": 5 })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": null })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": ["bob"] })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": { "$ne": null } })).await, "participantId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "jobId": "a b" })).await, "jobId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "jobId": 7 })).await, "jobId");
    assert_validation(&alice.post(p, json!({ "participantId": "bob", "isAdmin": true })).await, "isAdmin");
    assert_error(&alice.raw(Method::POST, p, b"{\"participantId\":".to_vec()).await, 400, "validation");
    assert_error(&alice.raw(Method::POST, p, Vec::new()).await, 400, "validation");

    // None of that created anything.
    let list = data(&alice.get(p).await, 200);
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "only the 128-char one: {list}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_from_both_sides_yield_one_conversation() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (api, other) = if i % 2 == 0 { (alice.clone(), "bob") } else { (bob.clone(), "alice") };
        tasks.push(tokio::spawn(async move {
            let r = api.post("/api/chat/conversations", json!({ "participantId": other, "jobId": "job-c" })).await;
            (r.status, r.body)
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert!(status == 200 || status == 201, "{status} {body}");
        if status == 201 {
            created += 1;
        }
        ids.insert(body["data"]["_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one conversation, got {ids:?}");
    assert_eq!(created, 1, "exactly one 201");
    for api in [&alice, &bob] {
        let list = data(&api.get("/api/chat/conversations").await, 200);
        let convs = list["conversations"].as_array().unwrap();
        assert_eq!(convs.len(), 1, "{list}");
        assert!(ids.contains(convs[0]["_id"].as_str().unwrap()));
    }
    node.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// GET /api/chat/conversations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_by_activity_with_my_unread_and_last_message() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let bob = Api::new(&node.base, "bob");
    let carol = Api::new(&node.base, "carol");

    assert_eq!(
        data(&alice.get("/api/chat/conversations").await, 200),
        json!({ "conversations": [], "nextCursor": null })
    );

    let c_bob = alice.conversation_with("bob").await;
    let c_carol = alice.conversation_with("carol").await;
    let c_dave = data(&alice.post("/api/chat/conversations", json!({ "participantId": "dave" })).await, 201)["_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Newest created first while nothing was sent.
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_dave.as_str(), c_carol.as_str(), c_bob.as_str()]);

    // Activity in the oldest conversation moves it to the top.
    let latest = assert_millis_utc(&find_conv(&list, &c_dave)["updatedAt"]);
    after_millis(latest.timestamp_millis()).await;
    bob.send(&c_bob, "one").await;
    let m2 = bob.send(&c_bob, "two").await;
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_bob.as_str(), c_dave.as_str(), c_carol.as_str()]);
    let top = find_conv(&list, &c_bob);
    assert_eq!(top["unreadCount"], 2, "alice's own count: {top}");
    assert_eq!(top["lastMessage"]["_id"], m2["_id"]);
    assert_eq!(top["lastMessage"]["content"], "two");
    assert_eq!(top["lastMessage"]["seq"], 2);
    assert_eq!(top["updatedAt"], m2["createdAt"], "activity time is the last message's: {top}");
    assert_eq!(find_conv(&list, &c_carol)["unreadCount"], 0);
    assert_eq!(find_conv(&list, &c_carol)["lastMessage"], Value::Null);

    // The sender's own count is 0; the same conversation seen by bob.
    let bl = data(&bob.get("/api/chat/conversations").await, 200);
    assert_eq!(bl["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(find_conv(&bl, &c_bob)["unreadCount"], 0);
    assert_eq!(find_conv(&bl, &c_bob)["lastMessage"]["_id"], m2["_id"]);

    // Then carol's conversation becomes the most recent.
    let top_ms = assert_millis_utc(&top["updatedAt"]).timestamp_millis();
    after_millis(top_ms).await;
    let m3 = carol.send(&c_carol, "hey").await;
    let list = data(&alice.get("/api/chat/conversations").await, 200);
    let order: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![c_carol.as_str(), c_bob.as_str(), c_dave.as_str()]);
    assert_eq!(find_conv(&list, &c_carol)["lastMessage"]["_id"], m3["_id"]);
    assert_eq!(find_conv(&list, &c_carol)["unreadCount"], 1);
    assert_eq!(find_conv(&list, &c_bob)["unreadCount"], 2);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paging_walks_every_conversation_once() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let mut all = HashSet::new();
    for i in 0..7 {
        let id = alice.conversation_with(&format!("peer{i}")).await;
        if i % 3 == 0 {
            Api::new(&node.base, &format!("peer{i}")).send(&id, "ping").await;
        }
        all.insert(id);
    }
    for limit in [1usize, 2, 3, 7, 100] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut last_key: Option<(DateTime<Utc>, String)> = None;
        for page in 0.. {
            assert!(page <= 8, "paging does not end (limit {limit})");
            let path = match &cursor {
                Some(c) => format!("/api/chat/conversations?limit={limit}&cursor={}", enc(c)),
                None => format!("/api/chat/conversations?limit={limit}"),
            };
            let d = data(&alice.get(&path).await, 200);
            let convs = d["conversations"].as_array().unwrap();
            assert!(convs.len() <= limit, "page longer than limit {limit}: {d}");
            for c in convs {
                let key = (assert_millis_utc(&c["updatedAt"]), c["_id"].as_str().unwrap().to_owned());
                if let Some(prev) = &last_key {
                    assert!(
                        &key < prev,
                        "not strictly descending by (updatedAt, _id) across pages: {key:?} after {prev:?}"
                    );
                }
                last_key = Some(key);
                seen.push(c["_id"].as_str().unwrap().to_owned());
            }
            match d["nextCursor"].as_str() {
                Some(c) => {
                    assert_eq!(convs.len(), limit, "a cursor only after a full page");
                    cursor = Some(c.to_owned());
                }
                None => {
                    assert!(d["nextCursor"].is_null(), "{d}");
                    break;
                }
            }
        }
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}: {seen:?}");
        assert_eq!(unique, all, "limit {limit} missed conversations");
    }
    // Default limit returns everything here and no cursor.
    let d = data(&alice.get("/api/chat/conversations").await, 200);
    assert_eq!(d["conversations"].as_array().unwrap().len(), 7);
    assert_eq!(d["nextCursor"], Value::Null);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rejects_bad_limit_and_cursor() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    alice.conversation_with("bob").await;
    for q in ["limit=0", "limit=1000", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "limit=99999999999999999999"]
    {
        let r = alice.get(&format!("/api/chat/conversations?{q}")).await;
        assert_validation(&r, "limit");
    }
    for c in [
        "garbage",
        "123",
        "_",
        "abc_65a1b2c3d4e5f60718293a4b",
        "1_short",
        "1_{\"$gt\":\"\"}",
        "1_zza1b2c3d4e5f60718293a4b",
    ] {
        let r = alice.get(&format!("/api/chat/conversations?cursor={}", enc(c))).await;
        assert_validation(&r, "cursor");
    }
    // Bounds are accepted; an empty cursor means the first page.
    data(&alice.get("/api/chat/conversations?limit=1").await, 200);
    data(&alice.get("/api/chat/conversations?limit=100").await, 200);
    let d = data(&alice.get("/api/chat/conversations?cursor=").await, 200);
    assert_eq!(d["conversations"].as_array().unwrap().len(), 1);
    node.stop().await.unwrap();
}
