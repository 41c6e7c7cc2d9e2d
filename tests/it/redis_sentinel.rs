//! `redis-sentinel://` with a real sentinel (quorum 1), a master and a replica:
//! `SENTINEL FAILOVER` under a message stream loses no acknowledged message, and fan-out,
//! presence and rate limits resume by themselves on the new master.

use crate::{
    failover::stream_through_failover,
    harness::Env,
    kit::{redis::cli, redis_ha::Sentinel},
};

#[tokio::test]
async fn sentinel_failover_under_a_message_stream() {
    let s = Sentinel::start().await;
    let env = Env::embedded();
    let url = s.url();
    let n1 = env.node_with("sen-1", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;
    let n2 = env.node_with("sen-2", &["--redis-url", &url, "--rate-limit-window-secs", "86400"]).await;
    assert_eq!(s.current_master(), Some(s.master));

    let replica = s.replica;
    let out =
        stream_through_failover(&n1.base, &n2.base, || s.failover(), || s.current_master() == Some(replica)).await;

    // The state lives on the new master: presence entries and the sender's rate-limit state
    // (written by the sends after the failover) carry TTLs there.
    let p = &env.prefix;
    assert_eq!(cli(s.replica, &[], &["ROLE"]).lines().next(), Some("master"));
    let rl = cli(s.replica, &[], &["--scan", "--pattern", &format!("{p}:rlu:message:*")]);
    assert!(!rl.is_empty(), "rate-limit state on the new master");
    for key in rl.lines() {
        let ttl: i64 = cli(s.replica, &[], &["PTTL", key]).parse().unwrap_or(-3);
        assert!(ttl > 0, "{key} has a TTL on the new master: {ttl}");
    }
    assert!(out.acked.len() > 50, "the stream went on through the failover: {}", out.acked.len());
}
