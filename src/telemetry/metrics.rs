//! Metric names (a contract for dashboards and alerts), buckets and small helpers.
//! Labels are bounded: route templates, event names, op names; never ids.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

pub const SOCKET_CONNECTIONS: &str = "chat_socket_connections";
pub const SOCKET_CONNECTS_TOTAL: &str = "chat_socket_connects_total";
pub const SOCKET_DISCONNECTS_TOTAL: &str = "chat_socket_disconnects_total";
pub const CONNECTION_ERRORS_TOTAL: &str = "chat_connection_errors_total";
pub const MESSAGES_TOTAL: &str = "chat_messages_total";
pub const EVENTS_TOTAL: &str = "chat_events_total";
pub const EVENT_ERRORS_TOTAL: &str = "chat_event_errors_total";
pub const MESSAGE_LATENCY_SECONDS: &str = "chat_message_latency_seconds";
pub const EVENT_DURATION_SECONDS: &str = "chat_event_duration_seconds";
pub const DB_QUERY_DURATION_SECONDS: &str = "chat_db_query_duration_seconds";
pub const DB_ERRORS_TOTAL: &str = "chat_db_errors_total";
pub const DB_POOL_CONNECTIONS: &str = "chat_db_pool_connections";
pub const REDIS_COMMAND_DURATION_SECONDS: &str = "chat_redis_command_duration_seconds";
pub const REDIS_ERRORS_TOTAL: &str = "chat_redis_errors_total";
pub const REDIS_PUBSUB_LAGGED_TOTAL: &str = "chat_redis_pubsub_lagged_total";
pub const REDIS_PUBSUB_RECEIVED_TOTAL: &str = "chat_redis_pubsub_received_total";
pub const REDIS_ADAPTER_RECEIVED_TOTAL: &str = "chat_redis_adapter_received_total";
pub const FANOUT_DROPPED_TOTAL: &str = "chat_fanout_dropped_total";
pub const CACHE_REQUESTS_TOTAL: &str = "chat_cache_requests_total";
pub const HTTP_REQUESTS_TOTAL: &str = "chat_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "chat_http_request_duration_seconds";
pub const RATE_LIMITED_TOTAL: &str = "chat_rate_limited_total";
pub const NODE_INFO: &str = "chat_node_info";
pub const READY: &str = "chat_ready";
pub const SOCKET_TRANSPORT_CONNECTIONS: &str = "chat_socket_transport_connections";
pub const USERS_ONLINE: &str = "chat_users_online";
pub const RECEIVED_BYTES_TOTAL: &str = "chat_network_received_bytes_total";
pub const SENT_BYTES_TOTAL: &str = "chat_network_sent_bytes_total";
pub const ENGINEIO_ERRORS_TOTAL: &str = "chat_engineio_errors_total";
pub const REDIS_PUBSUB_LAG_SECONDS: &str = "chat_redis_pubsub_lag_seconds";
pub const REDIS_PUBSUB_PROBE_LOST_TOTAL: &str = "chat_redis_pubsub_probes_lost_total";
pub const TOKIO_WORKERS: &str = "chat_tokio_workers";
pub const TOKIO_ALIVE_TASKS: &str = "chat_tokio_alive_tasks";
pub const TOKIO_GLOBAL_QUEUE_DEPTH: &str = "chat_tokio_global_queue_depth";
pub const TOKIO_BUSY_RATIO: &str = "chat_tokio_worker_busy_ratio";
pub const TOKIO_PARKS_TOTAL: &str = "chat_tokio_worker_parks_total";
pub const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "chat_http_connections_closed_total";
pub const SESSIONS_EXPIRED_TOTAL: &str = "chat_sessions_expired_total";

/// Label values of the counters that are created at 0 when the node starts (see [`register_zeros`]).
pub mod labels {
    /// `chat_connection_errors_total{reason}` (the connect middleware's refusals).
    /// (Load is never a reason: over-budget handshakes get HTTP 429, see `chat_rate_limited_total`.)
    pub const CONNECTION_ERROR_REASONS: &[&str] = &["unauthorized", "too_many_sockets"];
    /// `chat_socket_disconnects_total{reason}`.
    pub const DISCONNECT_REASONS: &[&str] = &[
        "transport_close",
        "multiple_polling",
        "parse_error",
        "transport_error",
        "heartbeat_timeout",
        "client_disconnect",
        "server_disconnect",
        "closing_server",
    ];
    /// Codes of `chat_event_errors_total` that mean the server failed (alerts watch these).
    pub const SERVER_ERROR_CODES: &[&str] = &["unavailable", "internal"];
    /// Every code an event can fail with.
    pub const EVENT_ERROR_CODES: &[&str] =
        &["validation", "unauthorized", "forbidden", "not_found", "rate_limited", "unavailable", "internal"];
    /// `chat_engineio_errors_total{reason}`: Engine.IO answers of 4xx/5xx on `/socket.io/`.
    pub const ENGINEIO_ERROR_REASONS: &[&str] = &[
        "unknown_session",
        "unknown_transport",
        "bad_handshake_method",
        "bad_request",
        "unsupported_protocol",
        "bad_packet",
        "payload_too_large",
        "internal",
        "other",
    ];
    /// `chat_db_errors_total{op}`: every store call of the metered store, plus the MongoDB
    /// backend's own background op.
    pub const DB_OPS: &[&str] = &[
        "migrate",
        "ping",
        "upsert_user",
        "get_users",
        "find_or_create_conversation",
        "get_conversation",
        "list_conversations",
        "conversation_partners",
        "insert_message",
        "history",
        "messages_after",
        "mark_read",
        "mark_delivered",
        "unread_counts",
        "view_version",
        "bump_view_versions",
        "settle_conversation",
    ];
    /// `chat_redis_errors_total{op}` (cluster mode).
    pub const REDIS_OPS: &[&str] = &[
        "cache_get",
        "cache_put",
        "presence_add",
        "presence_leave",
        "presence_reap",
        "presence_refresh",
        "presence_remove",
        "presence_status",
        "rate_limit",
        "pubsub_probe",
    ];
    /// `chat_rate_limited_total{kind}`: every budget of `crate::limits` plus the caps counted
    /// with it (a unit test there keeps the two lists equal).
    pub const RATE_LIMIT_KINDS: &[&str] = &[
        "message",
        "connection",
        "typing",
        "receipt",
        "presence",
        "sync",
        "join",
        "create",
        "read",
        "in_flight",
        "sockets_per_user",
    ];
    /// `chat_http_connections_closed_total{reason}` (`crate::http::server::CloseReason`).
    pub const HTTP_CLOSE_REASONS: &[&str] =
        &["over_capacity", "header_timeout", "idle_timeout", "drain", "session_expired"];
    /// `chat_fanout_dropped_total{reason}`: events of the targeted fan-out that reached this node
    /// and no socket (`lagged`: the bounded receive queue was full; `decode`: not ours; `emit`:
    /// the local emit failed) or could not subscribe (`subscriptions_full`).
    pub const FANOUT_DROP_REASONS: &[&str] = &["lagged", "decode", "emit", "subscriptions_full"];
    /// `chat_cache_requests_total{cache}` (the `error` result is created at 0).
    pub const CACHES: &[&str] = &["conversations", "unread"];
    /// `chat_socket_transport_connections{transport}`.
    pub const TRANSPORTS: &[&str] = &["websocket", "polling"];
}

/// Creates every failure counter at 0 for its known labels, so that `rate()` and `increase()`
/// see the first failures after a start instead of a series that appears with its first value
/// (which they treat as no change). `events` are the socket events the node handles.
pub fn register_zeros(events: &[&'static str], cluster: bool) {
    use labels::*;
    for r in CONNECTION_ERROR_REASONS {
        metrics::counter!(CONNECTION_ERRORS_TOTAL, "reason" => *r).absolute(0);
    }
    for r in DISCONNECT_REASONS {
        metrics::counter!(SOCKET_DISCONNECTS_TOTAL, "reason" => *r).absolute(0);
    }
    metrics::counter!(SOCKET_CONNECTS_TOTAL).absolute(0);
    for e in events {
        metrics::counter!(EVENTS_TOTAL, "event" => *e).absolute(0);
        for c in EVENT_ERROR_CODES {
            metrics::counter!(EVENT_ERRORS_TOTAL, "event" => *e, "code" => *c).absolute(0);
        }
    }
    for r in ENGINEIO_ERROR_REASONS {
        metrics::counter!(ENGINEIO_ERRORS_TOTAL, "reason" => *r).absolute(0);
    }
    for op in DB_OPS {
        metrics::counter!(DB_ERRORS_TOTAL, "op" => *op).absolute(0);
    }
    if cluster {
        for op in REDIS_OPS {
            metrics::counter!(REDIS_ERRORS_TOTAL, "op" => *op).absolute(0);
        }
        metrics::counter!(REDIS_PUBSUB_LAGGED_TOTAL).absolute(0);
        metrics::counter!(REDIS_PUBSUB_PROBE_LOST_TOTAL).absolute(0);
        metrics::counter!(REDIS_PUBSUB_RECEIVED_TOTAL).absolute(0);
        metrics::counter!(REDIS_ADAPTER_RECEIVED_TOTAL).absolute(0);
        for r in FANOUT_DROP_REASONS {
            metrics::counter!(FANOUT_DROPPED_TOTAL, "reason" => *r).absolute(0);
        }
    }
    for k in RATE_LIMIT_KINDS {
        metrics::counter!(RATE_LIMITED_TOTAL, "kind" => *k).absolute(0);
    }
    for c in CACHES {
        metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => *c, "result" => "error").absolute(0);
    }
    for t in TRANSPORTS {
        metrics::gauge!(SOCKET_TRANSPORT_CONNECTIONS, "transport" => *t).set(0.0);
    }
    for r in HTTP_CLOSE_REASONS {
        metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => *r).absolute(0);
    }
    metrics::counter!(SESSIONS_EXPIRED_TOTAL).absolute(0);
    metrics::gauge!(SOCKET_CONNECTIONS).increment(0.0);
    metrics::gauge!(USERS_ONLINE).set(0.0);
}

/// Chat latencies: sub-millisecond (in-process) to seconds (outages).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub fn record_message_latency(d: Duration) {
    metrics::histogram!(MESSAGE_LATENCY_SECONDS).record(d.as_secs_f64());
}

/// Times a store call and counts its failure.
pub async fn db_op<T, E, F: Future<Output = Result<T, E>>>(op: &'static str, f: F) -> Result<T, E> {
    let start = Instant::now();
    let res = f.await;
    metrics::histogram!(DB_QUERY_DURATION_SECONDS, "op" => op).record(start.elapsed().as_secs_f64());
    if res.is_err() {
        metrics::counter!(DB_ERRORS_TOTAL, "op" => op).increment(1);
    }
    res
}

/// Times a Redis command (as a child span too) and counts its failure.
pub async fn redis_op<T, E, F: Future<Output = Result<T, E>>>(op: &'static str, f: F) -> Result<T, E> {
    use tracing::Instrument;
    let start = Instant::now();
    let res = f.instrument(tracing::info_span!("redis", op, db.system = "redis")).await;
    metrics::histogram!(REDIS_COMMAND_DURATION_SECONDS, "op" => op).record(start.elapsed().as_secs_f64());
    if res.is_err() {
        metrics::counter!(REDIS_ERRORS_TOTAL, "op" => op).increment(1);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::labels;

    /// Every `op` literal passed to `redis_op(..)` / the metered store / a direct
    /// `chat_db_errors_total` increment in `src/` must be one of the labels created at 0.
    #[test]
    fn every_op_in_the_sources_is_registered_at_zero() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut sources = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut sources);
        let literals_after = |marker: &str| -> Vec<String> {
            sources
                .iter()
                .flat_map(|s| s.split(marker).skip(1))
                .filter_map(|rest| rest.trim_start().strip_prefix('"'))
                .map(|rest| rest.split('"').next().unwrap_or("").to_owned())
                .filter(|op| !op.is_empty() && op.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .collect()
        };
        let redis = literals_after("redis_op(");
        assert!(redis.iter().any(|op| op == "presence_refresh"), "multi-line calls are found too: {redis:?}");
        assert!(redis.len() >= 10, "found only {redis:?}");
        for op in redis {
            assert!(labels::REDIS_OPS.contains(&op.as_str()), "redis op {op} is not in labels::REDIS_OPS");
        }
        let db = literals_after("timed!(self,").into_iter().chain(literals_after("DB_ERRORS_TOTAL, \"op\" =>"));
        let db: Vec<String> = db.collect();
        assert!(db.len() >= 14, "found only {db:?}");
        for op in db {
            assert!(labels::DB_OPS.contains(&op.as_str()), "store op {op} is not in labels::DB_OPS");
        }
    }
}
