//! One integration binary: real nodes, real Redis, real Socket.IO clients (see `harness`).

mod harness;

mod cluster;
mod durability;
mod mongo_wire;
mod rest;
mod smoke;
mod socket;
mod store_suite;
