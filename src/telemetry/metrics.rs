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
pub const CACHE_REQUESTS_TOTAL: &str = "chat_cache_requests_total";
pub const HTTP_REQUESTS_TOTAL: &str = "chat_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "chat_http_request_duration_seconds";
pub const RATE_LIMITED_TOTAL: &str = "chat_rate_limited_total";
pub const NODE_INFO: &str = "chat_node_info";
pub const READY: &str = "chat_ready";

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
