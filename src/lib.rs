//! # jobsphere-chat
//!
//! The real-time chat backend of JobSphere: identical stateless nodes (axum + socketioxide)
//! that behave as one service through Redis, with MongoDB or embedded SQLite as the store.
//!
//! # Layout
//!
//! Layers point one way: `node` (wiring) → transports (`http`, `realtime`) → domain (`chat`)
//! → seams (`store`, `coord`) → backends (SQLite/MongoDB, in-process/Redis). `chat::model`
//! (the records) and `edge` are shared below every layer that uses them.
//!
//! - [`node`]: one node step by step: `build` (config → backends, the one local-vs-Redis
//!   choice), `serve` (`run`), `drain` (the SIGTERM sequence), `background` (upkeep).
//! - [`state`]: `AppState`, the handles given to axum and socketioxide (trait objects only).
//! - [`config`]: environment / CLI configuration.
//! - [`auth`]: JWT verification and minting.
//! - [`http`]: REST routes, extractors, the tower stack, health.
//! - [`realtime`]: Socket.IO engine settings, connect middleware, event handlers, replies.
//! - [`edge`]: what both transports share: the payload cap and the client's address.
//! - [`chat`]: domain records, input rules, typed answers, and the chat service (one file per
//!   feature) that every transport calls and that publishes the server events.
//! - [`store`]: the store trait and its backends, each a folder split the same way: the store
//!   type and its `Store` impl in `mod.rs`, delegating to `reads` and `writes`. `sqlite/`: also
//!   `schema`, `writer` (group commit), `rows`, `checkpoint`; `mongo/`: also `gate` (schema gate
//!   and call deadline), `query/` (every BSON document, by collection), `flow/` (the multi-step
//!   protocols), `migrate`, `connect`.
//! - [`coord`]: coordination by capability, each a trait with its in-process and Redis backends
//!   side by side: `presence/`, `cache/`, `ratelimit/`, `fanout/` (typed `ServerEvent`s:
//!   `socketio` over socketioxide's adapter, `targeted` over per-user sharded Redis channels
//!   that only the nodes holding that user's sockets subscribe to, `memory` recording what was
//!   published for unit tests); `redis` is the shared connection. The
//!   in-process backends keep time on tokio's clock, so unit tests drive them on a paused one.
//! - [`telemetry`]: logs, traces, metrics.
//! - [`error`]: the boundary error type and response envelopes.
//! - [`limits`]: every bound a client can meet: rate budgets by cost class, caps per socket
//!   and per user, the size of a `sync` answer.
//! - [`in_flight`]: counts socket events and REST sends still running, so the drain can wait for them.
//! - [`probe`]: `healthcheck` and `probe`, the commands that check a running node from outside.

pub mod auth;
pub mod chat;
pub mod config;
pub mod coord;
pub mod edge;
pub mod error;
pub mod http;
pub mod in_flight;
pub mod limits;
pub mod node;
pub mod probe;
pub mod realtime;
pub mod state;
pub mod store;
pub mod telemetry;

pub use node::run;
