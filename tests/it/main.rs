//! One integration binary: real nodes, real Redis, real Socket.IO clients (see `harness`).

mod harness;
mod redis_kit;

mod cluster;
mod durability;
mod mongo_wire;
mod redis_cluster;
mod redis_keys;
mod redis_sentinel;
mod redis_tls;
mod rest;
mod smoke;
mod socket;
mod store_suite;
