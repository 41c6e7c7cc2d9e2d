//! # jobsphere-chat
//!
//! The real-time chat backend of JobSphere: identical stateless nodes (axum + socketioxide)
//! that behave as one service through Redis, with MongoDB or embedded SQLite as the store.
//!
//! # Layout
//! - [`config`]: environment / CLI configuration (DESIGN §2).
//! - [`app`]: wiring and the node's lifecycle (`run`, graceful drain).
//! - [`auth`]: JWT verification and minting (DESIGN §3).
//! - [`http`]: REST routes, extractors, the tower stack, health (DESIGN §4).
//! - [`realtime`]: Socket.IO namespace, connect middleware, event handlers, fan-out (DESIGN §6).
//! - [`chat`]: domain records, input rules and the chat service all transports call.
//! - [`store`]: the store trait and its SQLite and MongoDB backends (DESIGN §5).
//! - [`coord`]: presence, caches and rate limits: traits and in-process implementations.
//! - [`cluster`]: the Redis implementations and the Redis adapter setup (cluster mode).
//! - [`telemetry`]: logs, traces, metrics (DESIGN §8).
//! - [`error`]: the boundary error type and response envelopes.
//! - [`lifecycle`]: work-in-flight accounting for the graceful drain.
//! - [`probe`]: `healthcheck` and `probe`, the commands that check a running node from outside.

pub mod app;
pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod coord;
pub mod error;
pub mod http;
pub mod lifecycle;
pub mod probe;
pub mod realtime;
pub mod store;
pub mod telemetry;

pub use app::run;
