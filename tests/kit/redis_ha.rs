//! Highly available Redis: Sentinel (a master, a replica, one sentinel with quorum 1) and Redis
//! Cluster (3 masters + 3 replicas made with `redis-cli --cluster create`), real servers on free
//! loopback ports, killed on drop.

use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{
    Killed, free_port,
    redis::{cli, server_args, spawn, until},
};

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
