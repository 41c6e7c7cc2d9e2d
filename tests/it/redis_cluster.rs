//! `redis-cluster://` on a real Redis Cluster (3 masters + 3 replicas on loopback): messages
//! cross nodes, and a killed master whose replica is promoted under a message stream loses no
//! acknowledged message; fan-out, presence and rate limits resume by themselves.

use crate::{
    failover::stream_through_failover,
    harness::Env,
    kit::{redis::cli, redis_ha::RedisCluster},
};

#[tokio::test]
async fn a_master_killed_under_a_message_stream_is_replaced_by_its_replica() {
    let mut c = RedisCluster::start().await;
    let env = Env::embedded();
    let url = c.url();
    let n1 = env.node_with("rc-1", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;
    let n2 = env.node_with("rc-2", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;

    // Kill the shard every node listens on: the adapter's request channel.
    let channel = format!("{}-socket.io-request#/#", env.prefix);
    let victim = c.master_of(&channel);
    let ports = c.ports.clone();
    let cell = std::cell::RefCell::new(&mut c);
    let out = stream_through_failover(
        &n1.base,
        &n2.base,
        || cell.borrow_mut().kill(victim),
        || {
            // Promoted: the live nodes agree the cluster is whole again, with a new master for
            // the channel's slot.
            let c = cell.borrow();
            ports
                .iter()
                .filter(|p| **p != victim)
                .all(|p| cli(*p, &[], &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && c.master_of(&channel) != victim
        },
    )
    .await;
    let c = cell.into_inner();
    assert_ne!(c.master_of(&channel), victim);

    // The sender's rate-limit state lives in the cluster with its TTL (written after the
    // promotion by every send that was acknowledged).
    let rl = jobsphere_chat::coord::redis::keys::rate(&env.prefix, "message", &out.alice);
    assert!(c.pttl(&rl) > 0, "{rl} has a TTL: {}", c.pttl(&rl));
    assert!(out.acked.len() > 50, "the stream went on through the failover: {}", out.acked.len());
}

/// Every Redis-backed feature on Redis Cluster (a script over keys of two slots would fail
/// with CROSSSLOT), then the key audit on every master.
#[tokio::test]
async fn every_feature_runs_on_redis_cluster_and_every_key_has_a_ttl_or_an_owner() {
    let c = RedisCluster::start().await;
    let env = Env::embedded();
    let url = c.url();
    let n1 = env.node_with("rck-1", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;
    let n2 = env.node_with("rck-2", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;
    crate::redis_keys::workload(&n1.base, &n2.base).await;
    let seen = crate::redis_keys::audit(&c.ports, &env.prefix);
    assert!(seen >= 10, "keys written across the shards: {seen}");
}
