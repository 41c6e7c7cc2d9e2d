//! Every Redis key and channel name of cluster mode, in one place, designed for Redis Cluster
//! slots: keys that one script or one `MGET` touches share a hash tag, so they live in the same
//! slot on every topology (standalone and Sentinel ignore the tags).
//!
//! | key | type | slot tag | TTL / owner |
//! |---|---|---|---|
//! | `P:presence:{u:USER}` | zset node → expiry ms | user | `PEXPIRE` = presence TTL, re-armed by refreshes |
//! | `P:lastseen:{u:USER}` | string ms | user | 30 days |
//! | `P:cache:{u:USER}:KIND:VARIANT` | string `VERSION\nJSON` | user | the kind's TTL (60 s / 30 s) |
//! | `P:rlu:KIND:{KEY}` | string (GCRA TAT, µs) | subject | until the budget is full again |
//! | `P:{nodes}:heartbeat` | zset node → expiry ms | nodes | owned: one member per node, removed by the reaper |
//! | `P:{nodes}:users:NODE` | set of users | nodes | `PEXPIRE` 10 × TTL, re-armed by refreshes; deleted by the reaper |
//!
//! Channels (sharded pub/sub, `SPUBLISH`/`SSUBSCRIBE`, so each lives on its slot's shard):
//! `P:ev:{u:USER}` (the user's events, subscribed by the nodes holding a socket of the user,
//! see `coord::fanout::targeted`; in the user's slot), `P:probe:NODE` (the pub/sub lag probe,
//! see `telemetry::pubsub_lag`) and socketioxide's `P-socket.io-request#/#…` /
//! `P-socket.io-response#/#…`.
//!
//! The prefix `P` may not contain `{` or `}` (checked in `Config::validate`): it would move the
//! hash tags.

/// The user's presence zset (`{u:…}` slot).
pub fn presence(p: &str, user: &str) -> String {
    format!("{p}:presence:{{u:{user}}}")
}

/// The user's last-seen time (`{u:…}` slot, with [`presence`]).
pub fn last_seen(p: &str, user: &str) -> String {
    format!("{p}:lastseen:{{u:{user}}}")
}

/// One cached view of the user (`{u:…}` slot, with [`presence`]).
pub fn cached(p: &str, user: &str, kind: &str, variant: &str) -> String {
    format!("{p}:cache:{{u:{user}}}:{kind}:{variant}")
}

/// GCRA state of one rate-limited subject (a user or a client address).
pub fn rate(p: &str, kind: &str, subject: &str) -> String {
    format!("{p}:rlu:{kind}:{{{subject}}}")
}

/// Heartbeats of every node (`{nodes}` slot).
pub fn heartbeats(p: &str) -> String {
    format!("{p}:{{nodes}}:heartbeat")
}

/// The users one node holds (`{nodes}` slot, with [`heartbeats`]).
pub fn node_users(p: &str, node: &str) -> String {
    format!("{p}:{{nodes}}:users:{node}")
}

/// The channel of one user's server events (`{u:…}` slot, with the user's keys).
pub fn user_events(p: &str, user: &str) -> String {
    format!("{p}:ev:{{u:{user}}}")
}

/// The user a [`user_events`] channel belongs to.
pub fn user_of_events<'a>(p: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(p)?.strip_prefix(":ev:{u:")?.strip_suffix('}')
}

/// The pub/sub lag probe channel of one node.
pub fn probe_channel(p: &str, node: &str) -> String {
    format!("{p}:probe:{node}")
}

/// The channel prefix of socketioxide's Redis adapter.
pub fn adapter_prefix(p: &str) -> String {
    format!("{p}-socket.io")
}

/// Whether `key` is one of ours (under prefix `p`) that must carry a TTL; the rest are owned
/// (deleted by the code that made them). Used by the key audit test.
pub fn must_expire(p: &str, key: &str) -> bool {
    key != heartbeats(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes (the first non-empty `{…}`).
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("a hash tag");
        let close = key[open + 1..].find('}').expect("closed") + open + 1;
        &key[open + 1..close]
    }

    #[test]
    fn keys_of_one_operation_share_a_slot() {
        let u = "auth0|abc.def@x";
        assert_eq!(tag(&presence("p", u)), tag(&last_seen("p", u)));
        assert_eq!(tag(&cached("p", u, "conversations", "20:")), tag(&presence("p", u)));
        assert_eq!(tag(&heartbeats("p")), tag(&node_users("p", "node-1")));
        assert_eq!(tag(&rate("p", "message", u)), u);
        assert_ne!(tag(&presence("p", "a")), tag(&presence("p", "b")));
        assert_eq!(tag(&user_events("p", u)), tag(&presence("p", u)));
    }

    #[test]
    fn a_user_events_channel_names_its_user() {
        for u in ["bob", "auth0|a}b", ""] {
            assert_eq!(user_of_events("p", &user_events("p", u)), Some(u));
        }
        assert_eq!(user_of_events("p", &probe_channel("p", "n")), None);
        assert_eq!(user_of_events("q", &user_events("p", "bob")), None);
    }
}
