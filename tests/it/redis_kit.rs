//! Redis topologies for the `redis_*` tests: TLS (certificates made with the openssl CLI),
//! Sentinel (a master, a replica, one sentinel with quorum 1) and Redis Cluster (3 masters +
//! 3 replicas made with `redis-cli --cluster create`), all real servers on free loopback ports,
//! killed on drop. Commands go through `redis-cli`, the reference client.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::harness::{WAIT, free_port};

/// A child process killed (SIGKILL) on drop.
pub struct Killed(pub Option<Child>);

impl Killed {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(program: &str, args: &[String]) -> Killed {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/tools/redis.sh installs it): {e}"));
    Killed(Some(child))
}

/// `redis-cli -p PORT [tls…] ARGS…`, its trimmed stdout (empty on failure).
pub fn cli(port: u16, tls: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `f` holds (each try is a real query; the deadline is the failure).
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn server_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ---- TLS ----

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
pub struct Pki {
    pub dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(st.success(), "openssl {args:?} failed");
}

impl Pki {
    /// A fresh CA named `name` with a server and a client certificate.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj"]);
        let subj = format!("/CN={name}");
        ca.push(&subj);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(d, &ca);
        for (who, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{who}.ext")), ext).expect("write ext");
            let (key, csr, pem, extf) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
            let mut req = vec!["req"];
            req.extend(ec);
            let subj = format!("/CN={who}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &req);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ],
            );
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `redis-cli` arguments for this PKI.
    pub fn cli_args(&self) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ]
    }
}

/// `redis-server` listening only on a TLS port that requires a client certificate.
pub struct TlsRedis {
    pub port: u16,
    _proc: Killed,
    _dir: TempDir,
}

impl TlsRedis {
    pub async fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args = server_args(0, dir.path());
        let p = |f: &str| pki.path(f).display().to_string();
        args.extend([
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]);
        let proc = spawn("redis-server", &args);
        let tls = pki.cli_args();
        until("the TLS redis-server", || cli(port, &tls, &["PING"]) == "PONG").await;
        Self { port, _proc: proc, _dir: dir }
    }
}

// ---- Sentinel ----

pub const MASTER_NAME: &str = "chatmaster";

/// A master, its replica and one sentinel (quorum 1) watching them.
pub struct Sentinel {
    pub master: u16,
    pub replica: u16,
    pub sentinel: u16,
    procs: Vec<Killed>,
    dir: TempDir,
}

impl Sentinel {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (master, replica, sentinel) = (free_port(), free_port(), free_port());
        let mut procs = Vec::new();
        for (port, sub) in [(master, "m"), (replica, "r")] {
            let d = dir.path().join(sub);
            std::fs::create_dir_all(&d).expect("mkdir");
            let mut args = server_args(port, &d);
            if port == replica {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            procs.push(spawn("redis-server", &args));
        }
        until("the replica's link to the master", || {
            cli(replica, &[], &["INFO", "replication"]).contains("master_link_status:up")
        })
        .await;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 2000\nsentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        procs.push(spawn("redis-sentinel", &[conf.display().to_string()]));
        // A failover needs a replica the sentinel knows about (it learns it from INFO).
        until("the sentinel to know the replica", || {
            let r = cli(sentinel, &[], &["SENTINEL", "REPLICAS", MASTER_NAME]);
            r.contains(&replica.to_string()) && !r.contains("s_down") && !r.contains("disconnected")
        })
        .await;
        Self { master, replica, sentinel, procs, dir }
    }

    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/{MASTER_NAME}", self.sentinel)
    }

    /// The port of the master the sentinel names now.
    pub fn current_master(&self) -> Option<u16> {
        let out = cli(self.sentinel, &[], &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    pub fn failover(&self) {
        let out = cli(self.sentinel, &[], &["SENTINEL", "FAILOVER", MASTER_NAME]);
        assert_eq!(out, "OK", "SENTINEL FAILOVER refused");
    }
}

// ---- Redis Cluster ----

/// A free port whose cluster bus port (+10000) is free and valid too (ephemeral ports from
/// the kernel can be above 55535).
fn cluster_port() -> u16 {
    use std::net::TcpListener;
    loop {
        let p = 20_000 + (rand_u16() % 20_000);
        let (a, b) = (TcpListener::bind(("127.0.0.1", p)), TcpListener::bind(("127.0.0.1", p + 10_000)));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() as u16
}

/// Three masters and three replicas, `--cluster-replicas 1`.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    procs: Vec<Killed>,
    dir: TempDir,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..6).map(|_| cluster_port()).collect();
        let mut procs = Vec::new();
        for &port in &ports {
            let d = dir.path().join(port.to_string());
            std::fs::create_dir_all(&d).expect("mkdir");
            let mut args = server_args(port, &d);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .map(String::from),
            );
            procs.push(spawn("redis-server", &args));
        }
        for &port in &ports {
            until("a cluster node", || cli(port, &[], &["PING"]) == "PONG").await;
        }
        let mut create = vec!["--cluster".to_string(), "create".into()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas".into(), "1".into(), "--cluster-yes".into()]);
        let st = Command::new("redis-cli").args(&create).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(st.is_ok_and(|s| s.success()), "redis-cli --cluster create failed");
        let c = Self { ports, procs, dir };
        c.wait_healthy(3).await;
        // A replica that never finished its first sync refuses to stand for election.
        until("every replica in sync", || {
            c.ports.iter().all(|p| {
                let info = cli(*p, &[], &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        })
        .await;
        c
    }

    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{},127.0.0.1:{}", self.ports[0], self.ports[1])
    }

    /// Every live node says `cluster_state:ok` and sees `masters` masters with slots.
    pub async fn wait_healthy(&self, masters: usize) {
        until("the cluster to be healthy", || {
            self.live_ports().into_iter().all(|p| {
                cli(p, &[], &["CLUSTER", "INFO"]).contains("cluster_state:ok") && self.masters_seen_by(p) == masters
            })
        })
        .await;
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports.iter().zip(&self.procs).filter(|(_, k)| k.0.is_some()).map(|(p, _)| *p).collect()
    }

    /// Masters with slots that are not failed, as `port` sees them.
    fn masters_seen_by(&self, port: u16) -> usize {
        cli(port, &[], &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
            })
            .count()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: u16 = cli(port, &[], &["CLUSTER", "KEYSLOT", key]).parse().expect("slot");
        for l in cli(port, &[], &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    let addr = f[1].split('@').next().unwrap_or("");
                    return addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        self.procs[i].kill();
    }

    /// `PTTL key` through any live node (following redirections).
    pub fn pttl(&self, key: &str) -> i64 {
        cli(self.any_port(), &[], &["-c", "PTTL", key]).parse().unwrap_or(-3)
    }

    /// Any live node's port (for `redis-cli -c`).
    pub fn any_port(&self) -> u16 {
        self.live_ports()[0]
    }
}

// ---- A message stream through a failover ----

use serde_json::{Value, json};

use crate::harness::{Api, Sock, ok};

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
