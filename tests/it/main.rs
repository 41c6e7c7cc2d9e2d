//! One integration binary: real nodes, real Redis, real Socket.IO clients (see `harness`).

// The kit the benches share; not every helper is used here.
#[allow(dead_code)]
#[path = "../kit/mod.rs"]
mod kit;

mod abuse_kit;
mod failover;
mod harness;
mod rest_util;
mod sock;
mod socket_util;

mod abuse_binary;
mod abuse_connect;
mod abuse_rate;
mod abuse_sync;
mod cluster;
mod durability;
mod fanout;
mod harden;
mod lifecycle;
mod mongo_wire;
mod redis_cluster;
mod redis_keys;
mod redis_leases;
mod redis_sentinel;
mod redis_tls;
mod rest_auth;
mod rest_conversations;
mod rest_errors;
mod rest_limits;
mod rest_messages;
mod rest_read;
mod smoke;
mod socket_auth;
mod socket_limits;
mod socket_messaging;
mod socket_presence;
mod socket_receipts;
mod socket_typing;
mod store_suite;
