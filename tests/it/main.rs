//! One integration binary: real nodes, real Redis, real Socket.IO clients (see `harness`).

mod abuse_kit;
mod harness;
mod redis_kit;

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
