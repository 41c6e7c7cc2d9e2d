//! The MongoDB store against a scripted MongoDB wire peer: a TCP server on a loopback port that
//! speaks OP_MSG (the MongoDB wire protocol's only message format since 3.6), answers the
//! driver's `hello`/`isMaster` handshake as the primary of a one-member replica set, and
//! answers every other command with the next reply scripted for that command name (or a
//! default). The scripted replies are the documents a real server sends — duplicate key
//! errors with `keyPattern`/`keyValue`, `NotWritablePrimary`, write concern errors,
//! `failCommand`-style errors with `errorLabels` — so error classification, the driver's own
//! retries and the commands the store sends are tested through the official driver on real
//! bytes, without a `mongod`. Written from the wire protocol documentation; BSON via `bson`.
//!
//! What it cannot show (a real server's planner, replication, elections) is listed in
//! docs/mongodb.md as the first-replica-set checklist.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bson::{Bson, DateTime, Document, doc, oid::ObjectId};
use jobsphere_chat::{
    chat::model::{MessageType, Role, User},
    store::{
        NewMessage, Store, StoreError,
        mongo::{IndexState, MongoSettings},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use crate::harness::{WAIT, free_port};

const OP_MSG: i32 = 2013;
/// OP_MSG flag bits: a CRC-32C checksum follows the sections; no reply is expected.
const CHECKSUM_PRESENT: u32 = 1;
const MORE_TO_COME: u32 = 1 << 1;

#[derive(Default)]
struct Script {
    replies: HashMap<String, VecDeque<Document>>,
    received: Vec<Document>,
}

/// The scripted peer. Dropping it closes the port and every connection.
struct FakeMongo {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _server: JoinSet<()>,
}

impl FakeMongo {
    async fn start() -> Self {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the fake MongoDB");
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let mut server = JoinSet::new();
        let s = script.clone();
        server.spawn(async move {
            // The connections live as long as the accept loop: dropping the peer ends both.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, addr, s.clone()));
            }
        });
        Self { addr, script, _server: server }
    }

    /// A URI to this peer as a one-member replica set, checked every 500 ms (the minimum).
    fn uri(&self, extra: &str) -> String {
        uri_for(self.addr.port(), extra)
    }

    /// The next `command` gets `reply` (replies queue up in order).
    fn script(&self, command: &str, reply: Document) {
        self.script.lock().unwrap().replies.entry(command.to_owned()).or_default().push_back(reply);
    }

    fn clear_script(&self) {
        self.script.lock().unwrap().replies.clear();
    }

    /// Every non-handshake command received, in order.
    fn received(&self) -> Vec<Document> {
        self.script.lock().unwrap().received.clone()
    }

    fn received_named(&self, command: &str) -> Vec<Document> {
        self.received().into_iter().filter(|c| name_of(c) == command).collect()
    }

    fn forget_received(&self) {
        self.script.lock().unwrap().received.clear();
    }
}

fn uri_for(port: u16, extra: &str) -> String {
    format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=2000{extra}")
}

fn name_of(command: &Document) -> String {
    command.keys().next().cloned().unwrap_or_default()
}

/// One connection: read OP_MSG requests, answer each (unless it says no reply is wanted).
async fn serve(mut stream: TcpStream, addr: SocketAddr, script: Arc<Mutex<Script>>) {
    let mut reply_id = 1_i32;
    while let Ok((request_id, flags, command)) = read_op_msg(&mut stream).await {
        let reply = answer(&command, addr, &script);
        if flags & MORE_TO_COME != 0 {
            continue;
        }
        reply_id += 1;
        if write_op_msg(&mut stream, reply_id, request_id, &reply).await.is_err() {
            return;
        }
    }
}

/// OP_MSG: a 16-byte header (length, requestID, responseTo, opCode), flag bits, then sections:
/// kind 0 is the command body (one BSON document), kind 1 a document sequence (size,
/// identifier, documents) that belongs to the body under that identifier (`documents` of an
/// `insert`, `updates` of an `update`).
async fn read_op_msg(stream: &mut TcpStream) -> std::io::Result<(i32, u32, Document)> {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await?;
    let word = |i: usize| i32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    let (length, request_id, op_code) = (word(0), word(4), word(12));
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    if op_code != OP_MSG {
        return Err(invalid("only OP_MSG is spoken here"));
    }
    let mut rest = vec![0u8; usize::try_from(length).map_err(|_| invalid("length"))? - 16];
    stream.read_exact(&mut rest).await?;
    let flags = u32::from_le_bytes(rest[0..4].try_into().unwrap());
    let end = rest.len() - if flags & CHECKSUM_PRESENT != 0 { 4 } else { 0 };
    let mut at = 4;
    let mut body = Document::new();
    let mut sequences = Vec::new();
    let doc_len = |b: &[u8]| i32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    while at < end {
        let kind = rest[at];
        at += 1;
        match kind {
            0 => {
                let n = doc_len(&rest[at..]);
                body = Document::from_reader(&rest[at..at + n]).map_err(|_| invalid("body"))?;
                at += n;
            }
            1 => {
                let size = doc_len(&rest[at..]);
                let stop = at + size;
                let mut p = at + 4;
                let nul = rest[p..].iter().position(|b| *b == 0).ok_or_else(|| invalid("identifier"))?;
                let identifier = String::from_utf8_lossy(&rest[p..p + nul]).into_owned();
                p += nul + 1;
                let mut docs = Vec::new();
                while p < stop {
                    let n = doc_len(&rest[p..]);
                    docs.push(Bson::Document(Document::from_reader(&rest[p..p + n]).map_err(|_| invalid("doc"))?));
                    p += n;
                }
                sequences.push((identifier, docs));
                at = stop;
            }
            _ => return Err(invalid("unknown section kind")),
        }
    }
    for (identifier, docs) in sequences {
        body.insert(identifier, docs);
    }
    Ok((request_id, flags, body))
}

async fn write_op_msg(stream: &mut TcpStream, id: i32, response_to: i32, reply: &Document) -> std::io::Result<()> {
    let mut doc = Vec::new();
    reply.to_writer(&mut doc).expect("reply to BSON");
    let length = 16 + 4 + 1 + doc.len();
    let mut out = Vec::with_capacity(length);
    for word in [length as i32, id, response_to, OP_MSG] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&doc);
    stream.write_all(&out).await
}

fn answer(command: &Document, addr: SocketAddr, script: &Mutex<Script>) -> Document {
    let name = name_of(command);
    if ["hello", "isMaster", "ismaster"].contains(&name.as_str()) {
        return hello(addr);
    }
    let mut s = script.lock().unwrap();
    s.received.push(command.clone());
    if let Some(reply) = s.replies.get_mut(&name).and_then(VecDeque::pop_front) {
        return reply;
    }
    default_reply(&name, command)
}

/// The handshake reply of the primary of replica set `rs0` whose only member is this peer.
/// No `topologyVersion`, so the driver polls instead of streaming; no compressors.
fn hello(addr: SocketAddr) -> Document {
    let me = addr.to_string();
    doc! {
        "helloOk": true,
        "isWritablePrimary": true,
        "ismaster": true,
        "setName": "rs0",
        "setVersion": 1,
        "electionId": ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]),
        "hosts": [&me],
        "primary": &me,
        "me": &me,
        "maxBsonObjectSize": 16_777_216,
        "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000,
        "localTime": DateTime::now(),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": 1,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "readOnly": false,
        "ok": 1.0,
    }
}

fn namespace(command: &Document) -> String {
    let db = command.get_str("$db").unwrap_or("test");
    let coll = command.iter().next().and_then(|(_, v)| v.as_str()).unwrap_or("");
    format!("{db}.{coll}")
}

fn cursor(command: &Document, batch: Vec<Document>) -> Document {
    doc! { "cursor": { "id": 0_i64, "ns": namespace(command), "firstBatch": batch }, "ok": 1.0 }
}

/// What a server answers on an empty database.
fn default_reply(name: &str, command: &Document) -> Document {
    match name {
        "listIndexes" => doc! {
            "ok": 0.0, "errmsg": format!("ns does not exist: {}", namespace(command)),
            "code": 26, "codeName": "NamespaceNotFound",
        },
        "find" | "aggregate" => cursor(command, Vec::new()),
        "insert" => doc! { "n": command.get_array("documents").map_or(0, |d| d.len() as i32), "ok": 1.0 },
        "update" => doc! { "n": 1, "nModified": 1, "ok": 1.0 },
        "findAndModify" => {
            doc! { "lastErrorObject": { "n": 0, "updatedExisting": false }, "value": Bson::Null, "ok": 1.0 }
        }
        "distinct" => doc! { "values": [], "ok": 1.0 },
        "createIndexes" => {
            doc! { "numIndexesBefore": 1, "numIndexesAfter": 2, "createdCollectionAutomatically": true, "ok": 1.0 }
        }
        "ping" | "endSessions" | "killCursors" => doc! { "ok": 1.0 },
        other => {
            doc! { "ok": 0.0, "errmsg": format!("no such command: '{other}'"), "code": 59, "codeName": "CommandNotFound" }
        }
    }
}

// ---- replies as a real server sends them ----------------------------------------------------

fn duplicate_key_write_error(index: &str, key_pattern: Document, key_value: Document) -> Document {
    doc! {
        "n": 0,
        "writeErrors": [ {
            "index": 0,
            "code": 11000,
            "errmsg": format!("E11000 duplicate key error collection: wire.messages index: {index} dup key: {key_value}"),
            "keyPattern": key_pattern,
            "keyValue": key_value,
        } ],
        "ok": 1.0,
    }
}

fn command_error(code: i32, code_name: &str, labels: &[&str]) -> Document {
    let mut d = doc! { "ok": 0.0, "errmsg": format!("{code_name} (scripted)"), "code": code, "codeName": code_name };
    if !labels.is_empty() {
        d.insert("errorLabels", labels.iter().map(|l| Bson::from(*l)).collect::<Vec<_>>());
    }
    d
}

/// The shape of an error injected by the server's `failCommand` fail point.
fn fail_command(code: i32, labels: &[&str]) -> Document {
    let mut d = command_error(code, "ShutdownInProgress", labels);
    d.insert("errmsg", "Failing command via 'failCommand' failpoint");
    d
}

fn write_concern_error(code: i32, code_name: &str, errmsg: &str) -> Document {
    doc! {
        "n": 1, "nModified": 1,
        "writeConcernError": {
            "code": code, "codeName": code_name, "errmsg": errmsg,
            "errInfo": { "writeConcern": { "w": "majority", "wtimeout": 3000, "provenance": "clientSupplied" } },
        },
        "ok": 1.0,
    }
}

fn conversation(id: ObjectId, last_seq: i64) -> Document {
    doc! {
        "_id": id, "participants": ["alice", "bob"], "userA": "alice", "userB": "bob", "jobId": Bson::Null,
        "lastSeq": last_seq, "lastMessage": Bson::Null, "unread": [0_i64, 0_i64],
        "createdAt": DateTime::from_millis(1_000), "updatedAt": DateTime::from_millis(1_000),
    }
}

fn message(conv: ObjectId, seq: i64, client_message_id: Option<&str>) -> Document {
    doc! {
        "_id": ObjectId::new(), "conversationId": conv, "seq": seq, "senderId": "alice", "receiverId": "bob",
        "messageType": "text", "content": format!("m{seq}"), "status": "sent",
        "clientMessageId": client_message_id, "createdAt": DateTime::from_millis(2_000),
    }
}

fn new_message(conv: ObjectId, client_message_id: Option<&str>) -> NewMessage {
    NewMessage {
        conversation_id: conv.to_hex(),
        sender_id: "alice".into(),
        receiver_id: "bob".into(),
        message_type: MessageType::Text,
        content: "hello".into(),
        client_message_id: client_message_id.map(str::to_owned),
    }
}

fn user() -> User {
    User { id: "alice".into(), name: "Alice".into(), email: None, role: Role::Customer, avatar: None }
}

const DEADLINE: Duration = Duration::from_secs(3);

/// A migrated store on the peer, through a URI that asks for every weak setting there is.
async fn store_on(peer: &FakeMongo) -> Arc<dyn Store> {
    let uri =
        peer.uri("&w=1&journal=false&readPreference=secondaryPreferred&readConcernLevel=local&socketTimeoutMS=60000");
    let settings = MongoSettings::new(uri, "wire").with_timeout(DEADLINE);
    let store = jobsphere_chat::store::mongo::connect(&settings).await.expect("connect");
    store.migrate().await.expect("migrate on an empty database");
    peer.forget_received();
    store
}

// ---- tests ----------------------------------------------------------------------------------

/// Whatever the URI says, every command carries the store's deadline and concerns.
#[tokio::test]
async fn mongo_wire_commands_carry_the_deadline_and_the_enforced_concerns() {
    let peer = FakeMongo::start().await;
    let store = store_on(&peer).await;
    let conv = ObjectId::new();
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(conv, 2)]));
    assert_eq!(store.mark_delivered(&conv.to_hex(), "bob", 2).await.unwrap().updated, 1);
    store.upsert_user(&user()).await.unwrap();
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(conv, 0)]));
    peer.script("findAndModify", doc! { "lastErrorObject": { "n": 1 }, "value": conversation(conv, 1), "ok": 1.0 });
    let ins = store.insert_message(new_message(conv, Some("c-1"))).await.unwrap();
    assert_eq!((ins.message.seq, ins.created), (1, true));
    assert!(store.get_conversation(&ObjectId::new().to_hex()).await.unwrap().is_none());

    let ms = DEADLINE.as_millis() as i64;
    let received = peer.received();
    for name in ["find", "update", "insert", "findAndModify"] {
        assert!(received.iter().any(|c| name_of(c) == name), "no {name} sent: {received:?}");
    }
    for c in &received {
        let name = name_of(c);
        // Single-document updates stay the driver's retryable writes, bounded by wtimeout (ops.rs).
        let multi =
            c.get_array("updates").is_ok_and(|u| u[0].as_document().is_some_and(|d| d.get_bool("multi") == Ok(true)));
        if matches!(name.as_str(), "find" | "findAndModify" | "aggregate" | "distinct" | "ping") || multi {
            assert_eq!(
                c.get("maxTimeMS").and_then(Bson::as_i64).or_else(|| c.get_i32("maxTimeMS").ok().map(i64::from)),
                Some(ms),
                "{c}"
            );
        }
        if matches!(name.as_str(), "find" | "aggregate" | "distinct") {
            assert_eq!(c.get_document("readConcern").unwrap(), &doc! { "level": "majority" }, "{c}");
        }
        if matches!(name.as_str(), "update" | "insert" | "findAndModify") {
            let wc = c.get_document("writeConcern").unwrap_or_else(|_| panic!("no write concern: {c}"));
            assert_eq!(wc.get_str("w"), Ok("majority"), "{c}");
            assert_eq!(wc.get_bool("j"), Ok(true), "{c}");
            let wt = wc.get("wtimeout").and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)));
            assert_eq!(wt, Some(ms), "{c}");
        }
    }
    // The dedup look-up states the partial index's filter (the insert above was not refused,
    // so look it up through a retry below).
    peer.forget_received();
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(conv, 1)]));
    peer.script(
        "insert",
        duplicate_key_write_error(
            "messages_sender_client_id",
            doc! { "senderId": 1, "clientMessageId": 1 },
            doc! { "senderId": "alice", "clientMessageId": "c-1" },
        ),
    );
    let original = message(conv, 1, Some("c-1"));
    peer.script("find", cursor(&doc! { "find": "messages", "$db": "wire" }, vec![original.clone()]));
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(conv, 1)]));
    let again = store.insert_message(new_message(conv, Some("c-1"))).await.unwrap();
    assert!(!again.created, "a retry returns the original");
    assert_eq!(again.message.id, original.get_object_id("_id").unwrap().to_hex());
    let lookup = peer.received_named("find").into_iter().find(|c| c.get_str("find") == Ok("messages")).unwrap();
    assert_eq!(
        lookup.get_document("filter").unwrap(),
        &doc! { "senderId": "alice", "clientMessageId": { "$eq": "c-1", "$type": "string" } }
    );
}

/// A duplicate key on the seq index, as the server sends it, is a lost race: the sender reads
/// the newest seq, takes the next one, and applies its predecessor before its own message.
#[tokio::test]
async fn mongo_wire_duplicate_seq_on_insert_is_a_lost_race() {
    let peer = FakeMongo::start().await;
    let store = store_on(&peer).await;
    let conv = ObjectId::new();
    let find = |coll: &str, batch| cursor(&doc! { "find": coll, "$db": "wire" }, batch);
    peer.script("find", find("conversations", vec![conversation(conv, 2)]));
    peer.script(
        "insert",
        duplicate_key_write_error(
            "messages_conversation_seq",
            doc! { "conversationId": 1, "seq": 1 },
            doc! { "conversationId": conv, "seq": 3_i64 },
        ),
    );
    peer.script("find", find("messages", vec![doc! { "seq": 3_i64 }]));
    peer.script("find", find("messages", vec![message(conv, 3, None), message(conv, 4, None)]));
    for seq in [3, 4] {
        peer.script(
            "findAndModify",
            doc! { "lastErrorObject": { "n": 1 }, "value": conversation(conv, seq), "ok": 1.0 },
        );
    }
    let ins = store.insert_message(new_message(conv, None)).await.unwrap();
    assert_eq!((ins.message.seq, ins.created), (4, true));
    let seqs: Vec<i64> = peer
        .received_named("insert")
        .iter()
        .map(|c| c.get_array("documents").unwrap()[0].as_document().unwrap().get_i64("seq").unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    let guards: Vec<i64> = peer
        .received_named("findAndModify")
        .iter()
        .map(|c| c.get_document("query").unwrap().get_i64("lastSeq").unwrap())
        .collect();
    assert_eq!(guards, [2, 3], "applied in seq order, each exactly once");
}

/// `findAndModify` reports a duplicate key as a command error with `keyPattern`/`keyValue`;
/// for an upsert that means another node created the conversation, which is then read.
#[tokio::test]
async fn mongo_wire_duplicate_key_on_find_and_modify_reads_the_winner() {
    let peer = FakeMongo::start().await;
    let store = store_on(&peer).await;
    let winner = ObjectId::new();
    let mut dup = command_error(11000, "DuplicateKey", &[]);
    dup.insert(
        "errmsg",
        "E11000 duplicate key error collection: wire.conversations index: conversations_pair_job dup key: \
         { userA: \"alice\", userB: \"bob\", jobId: null }",
    );
    dup.insert("keyPattern", doc! { "userA": 1, "userB": 1, "jobId": 1 });
    dup.insert("keyValue", doc! { "userA": "alice", "userB": "bob", "jobId": Bson::Null });
    peer.script("findAndModify", dup);
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(winner, 0)]));
    let (conv, created) = store.find_or_create_conversation("bob", "alice", None).await.unwrap();
    assert_eq!((conv.id, created), (winner.to_hex(), false));
}

fn class(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound => "not_found",
        StoreError::Conflict(_) => "conflict",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Internal(_) => "internal",
    }
}

/// Read errors, each replied twice (the driver retries a retryable read once).
#[tokio::test]
async fn mongo_wire_read_errors_are_classified() {
    let peer = FakeMongo::start().await;
    let store = store_on(&peer).await;
    for (code, name, want) in [
        (10107, "NotWritablePrimary", "unavailable"),
        (13435, "NotPrimaryNoSecondaryOk", "unavailable"),
        (11600, "InterruptedAtShutdown", "unavailable"),
        (11601, "Interrupted", "unavailable"),
        (24, "LockTimeout", "unavailable"),
        (46, "LockBusy", "unavailable"),
        (8000, "AtlasError", "unavailable"),
        (50, "MaxTimeMSExpired", "unavailable"),
        (134, "ReadConcernMajorityNotAvailableYet", "unavailable"),
        (2, "BadValue", "internal"),
    ] {
        peer.clear_script();
        for _ in 0..2 {
            peer.script("find", command_error(code, name, &[]));
        }
        let e = store.get_conversation(&ObjectId::new().to_hex()).await.unwrap_err();
        assert_eq!(class(&e), want, "{code} {name}: {e}");
    }
}

/// Write errors and the driver's retryable-write behaviour on the labels a server sends.
#[tokio::test]
async fn mongo_wire_write_errors_and_labels_are_classified() {
    let peer = FakeMongo::start().await;
    let store = store_on(&peer).await;
    // A failCommand-style error labelled RetryableWriteError is retried once by the driver:
    // once is absorbed, twice is `unavailable`.
    peer.script("update", fail_command(91, &["RetryableWriteError"]));
    store.upsert_user(&user()).await.expect("retried by the driver");
    assert_eq!(peer.received_named("update").len(), 2, "the driver retried the write");
    for _ in 0..2 {
        peer.script("update", fail_command(91, &["RetryableWriteError"]));
    }
    assert_eq!(class(&store.upsert_user(&user()).await.unwrap_err()), "unavailable");
    peer.clear_script();
    for _ in 0..2 {
        peer.script("update", command_error(10107, "NotWritablePrimary", &["RetryableWriteError"]));
    }
    assert_eq!(class(&store.upsert_user(&user()).await.unwrap_err()), "unavailable");
    peer.clear_script();
    peer.script("update", command_error(112, "WriteConflict", &["TransientTransactionError"]));
    assert_eq!(class(&store.upsert_user(&user()).await.unwrap_err()), "unavailable");
    // Write concern errors: the write is not known to be durable.
    for (code, name, msg) in [
        (64, "WriteConcernFailed", "waiting for replication timed out"),
        (100, "UnsatisfiableWriteConcern", "Not enough data-bearing nodes"),
    ] {
        peer.clear_script();
        peer.script("update", write_concern_error(code, name, msg));
        assert_eq!(class(&store.upsert_user(&user()).await.unwrap_err()), "unavailable", "{name}");
    }
    // A multi-document update goes out as an `update` command: its write concern error is
    // found in the `ok: 1` reply.
    peer.clear_script();
    let conv = ObjectId::new();
    peer.script("find", cursor(&doc! { "find": "conversations", "$db": "wire" }, vec![conversation(conv, 3)]));
    peer.script("update", write_concern_error(64, "WriteConcernFailed", "waiting for replication timed out"));
    assert_eq!(class(&store.mark_delivered(&conv.to_hex(), "bob", 3).await.unwrap_err()), "unavailable");
    // A user upsert that keeps hitting a duplicate key (concurrent first logins, each retried)
    // gives up as a conflict.
    peer.clear_script();
    for _ in 0..3 {
        peer.script("update", duplicate_key_write_error("_id_", doc! { "_id": 1 }, doc! { "_id": "alice" }));
    }
    assert_eq!(class(&store.upsert_user(&user()).await.unwrap_err()), "conflict");
}

fn index(name: &str, key: Document, extra: Document) -> Document {
    let mut d = doc! { "v": 2, "key": key, "name": name };
    d.extend(extra);
    d
}

/// An existing database (another service's indexes and documents): the dry-run lists what
/// migrate would do, and migrate refuses before building anything.
#[tokio::test]
async fn mongo_wire_migrate_on_an_existing_database_refuses_before_building() {
    let peer = FakeMongo::start().await;
    let settings = MongoSettings::new(peer.uri(""), "jobsphere").with_timeout(DEADLINE);
    let list = |batch| cursor(&doc! { "listIndexes": "conversations", "$db": "jobsphere" }, batch);
    let script_existing = || {
        peer.script(
            "listIndexes",
            list(vec![
                index("_id_", doc! { "_id": 1 }, doc! {}),
                index("pair", doc! { "userA": 1, "userB": 1, "jobId": 1 }, doc! { "unique": true }),
            ]),
        );
        peer.script(
            "listIndexes",
            list(vec![
                index("_id_", doc! { "_id": 1 }, doc! {}),
                index("messages_sender", doc! { "senderId": 1 }, doc! {}),
            ]),
        );
        peer.script(
            "find",
            cursor(&doc! { "find": "users", "$db": "jobsphere" }, vec![doc! { "_id": ObjectId::new() }]),
        );
    };
    script_existing();
    let plan = jobsphere_chat::store::mongo::plan(&settings).await.unwrap();
    let state = |n: &str| plan.indexes.iter().find(|i| i.name == n).unwrap().state.clone();
    assert!(matches!(state("conversations_pair_job"), IndexState::Conflict(w) if w.contains("\"pair\"")), "{plan}");
    assert_eq!(state("messages_sender"), IndexState::Present);
    assert_eq!(state("messages_conversation_seq"), IndexState::Create);
    assert_eq!(plan.foreign.len(), 1, "{plan}");
    assert!(!plan.is_buildable());
    assert!(plan.to_string().contains("would create"), "{plan}");

    let store = jobsphere_chat::store::mongo::connect(&settings).await.unwrap();
    script_existing();
    let err = store.migrate().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(class(&err), "internal", "not transient: the node must not wait for it");
    assert!(text.contains("nothing was built") && text.contains("MONGODB_COLLECTION_PREFIX"), "{text}");
    assert!(peer.received_named("createIndexes").is_empty(), "refused before any build");
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))), "never ready on a refused schema");
}

/// A unique index that existing documents already break: reported with the way forward.
#[tokio::test]
async fn mongo_wire_an_unbuildable_unique_index_is_explained() {
    let peer = FakeMongo::start().await;
    let settings = MongoSettings::new(peer.uri(""), "jobsphere").with_prefix("chat_").with_timeout(DEADLINE);
    let store = jobsphere_chat::store::mongo::connect(&settings).await.unwrap();
    let mut dup = command_error(11000, "DuplicateKey", &[]);
    dup.insert(
        "errmsg",
        "Index build failed: 5b1c…: Collection jobsphere.chat_conversations ( 8f2e… ) :: caused by :: E11000 \
         duplicate key error collection: jobsphere.chat_conversations index: conversations_pair_job dup key: \
         { userA: \"a\", userB: \"b\", jobId: null }",
    );
    dup.insert("keyPattern", doc! { "userA": 1, "userB": 1, "jobId": 1 });
    dup.insert("keyValue", doc! { "userA": "a", "userB": "b", "jobId": Bson::Null });
    peer.script("createIndexes", dup);
    let text = store.migrate().await.unwrap_err().to_string();
    assert!(text.contains("chat_conversations.conversations_pair_job") && text.contains("cannot be built"), "{text}");
    assert!(text.contains("MONGODB_DB"), "{text}");
    let lists: Vec<_> =
        peer.received_named("listIndexes").iter().map(|c| c.get_str("listIndexes").unwrap().to_owned()).collect();
    assert_eq!(lists, ["chat_conversations", "chat_messages"], "the prefix names every collection");
}

/// Something that is not MongoDB on `port`: accepts, answers a line of HTTP and hangs up.
async fn not_mongo_on(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the impostor");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        }
    })
}

/// MongoDB unreachable (a closed port, then an open port where something else answers), then
/// there: `unavailable` each time at first, then the store migrates itself and serves, with no
/// restart.
#[tokio::test]
async fn mongo_wire_unreachable_then_back() {
    let port = free_port();
    let settings = MongoSettings::new(uri_for(port, ""), "wire").with_timeout(DEADLINE);
    let store = jobsphere_chat::store::mongo::connect(&settings).await.expect("no round trip at connect");
    assert_eq!(class(&store.migrate().await.unwrap_err()), "unavailable");
    assert_eq!(class(&store.ping().await.unwrap_err()), "unavailable");
    assert_eq!(class(&store.get_conversation(&ObjectId::new().to_hex()).await.unwrap_err()), "unavailable");

    let impostor = not_mongo_on(port).await;
    assert_eq!(class(&store.ping().await.unwrap_err()), "unavailable", "an open port that is not MongoDB");
    assert_eq!(class(&store.get_conversation(&ObjectId::new().to_hex()).await.unwrap_err()), "unavailable");
    impostor.abort();
    let _ = impostor.await; // the listener is closed once the task is gone

    let peer = FakeMongo::start_on(port).await;
    let started = Instant::now();
    // Readiness probes ping; each failed one also retries the migration in the background.
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) => assert!(started.elapsed() < WAIT, "still not ready: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer.received_named("createIndexes").len(), 7, "migrated before serving");
    assert!(store.get_conversation(&ObjectId::new().to_hex()).await.unwrap().is_none());
}

/// A whole node started while MongoDB is down: up but not ready, ready once MongoDB answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_wire_a_node_starts_not_ready_and_becomes_ready() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let uri = uri_for(port, "");
    let argv = [
        "jobsphere-chat",
        "--mongodb-uri",
        &uri,
        "--mongodb-db",
        "wire",
        "--jwt-secret",
        crate::harness::SECRET,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--drain-delay-secs",
        "0",
    ];
    let config = jobsphere_chat::config::Config::from_args_only(argv).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(jobsphere_chat::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let readyz = || async { http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()) };
    let started = Instant::now();
    // Up (answering) but not ready.
    let first = loop {
        if let Ok(code) = readyz().await {
            break code;
        }
        assert!(started.elapsed() < WAIT, "node never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first, 503);
    let peer = FakeMongo::start_on(port).await;
    loop {
        if readyz().await.ok() == Some(200) {
            break;
        }
        assert!(started.elapsed() < WAIT * 2, "node never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer.received_named("createIndexes").len(), 7);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, node).await.expect("node stops").unwrap().unwrap();
}
