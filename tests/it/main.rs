//! One integration binary: real nodes, real Redis, real Socket.IO clients (see `harness`).

// The kit the benches share; not every helper is used here.
#[allow(dead_code)]
#[path = "../kit/mod.rs"]
mod kit;

mod abuse_kit;
mod failover;
mod harness;
mod sock;

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
mod rest;
mod smoke;
mod socket;
mod store_suite;
