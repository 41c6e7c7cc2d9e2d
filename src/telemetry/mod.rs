//! Logs (pretty or JSON, with trace ids), OpenTelemetry traces over OTLP when configured, and
//! the Prometheus exporter on the metrics port.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

pub mod dropped;
pub mod metered_store;
pub mod metrics;

/// Keeps the tracer provider alive; `shutdown` flushes spans.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Sets up logs and traces. Call once per process.
pub fn init_tracing(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let tracer = match &config.otlp_endpoint {
        Some(_) => Some(otlp_provider(config)?),
        None => None,
    };
    let otel_layer = tracer
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("jobsphere-chat")).with_filter(filter()).boxed());
    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    // Each layer has its own filter: RUST_LOG must not hide the adapter's drop warnings from
    // the layer that counts them.
    let dropped = dropped::DroppedMessages.with_filter(
        tracing_subscriber::filter::Targets::new().with_target("socketioxide_redis", tracing::Level::WARN),
    );
    tracing_subscriber::registry().with(fmt_layer.with_filter(filter())).with(otel_layer).with(dropped).try_init()?;
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    Ok(Telemetry { tracer })
}

fn otlp_provider(config: &Config) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let endpoint = config.otlp_endpoint.clone().unwrap_or_default();
    // The OTLP default protocol is http/protobuf (port 4318); grpc when asked for.
    let grpc = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p == "grpc");
    let exporter = if grpc {
        SpanExporter::builder().with_tonic().with_endpoint(endpoint).with_timeout(Duration::from_secs(5)).build()?
    } else {
        let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        SpanExporter::builder().with_http().with_endpoint(endpoint).with_timeout(Duration::from_secs(5)).build()?
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("jobsphere-chat")
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", config.node_id()))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Installs the global Prometheus recorder serving `/metrics` on `CHAT_METRICS_ADDR`.
/// Must run inside the Tokio runtime.
pub fn init_metrics(config: &Config) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(config.metrics_addr)
        .add_global_label("node", config.node_id())
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), metrics::LATENCY_BUCKETS)?
        .install()?;
    describe();
    ::metrics::gauge!(metrics::NODE_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(())
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    use metrics::*;
    describe_gauge!(SOCKET_CONNECTIONS, "Socket.IO connections open on this node");
    describe_counter!(SOCKET_CONNECTS_TOTAL, "Socket.IO connections accepted");
    describe_counter!(SOCKET_DISCONNECTS_TOTAL, "Socket.IO disconnections by reason");
    describe_counter!(CONNECTION_ERRORS_TOTAL, "Socket.IO connections refused by reason");
    describe_counter!(MESSAGES_TOTAL, "Messages persisted by type");
    describe_counter!(EVENTS_TOTAL, "Socket events handled");
    describe_counter!(EVENT_ERRORS_TOTAL, "Socket events answered with an error");
    describe_histogram!(
        MESSAGE_LATENCY_SECONDS,
        ::metrics::Unit::Seconds,
        "From receiving a send to handing it to fan-out"
    );
    describe_histogram!(EVENT_DURATION_SECONDS, ::metrics::Unit::Seconds, "Socket event handling time");
    describe_histogram!(DB_QUERY_DURATION_SECONDS, ::metrics::Unit::Seconds, "Store call time by op");
    describe_counter!(DB_ERRORS_TOTAL, "Failed store calls by op");
    describe_gauge!(DB_POOL_CONNECTIONS, "Store connections by state");
    describe_histogram!(REDIS_COMMAND_DURATION_SECONDS, ::metrics::Unit::Seconds, "Redis command time by op");
    describe_counter!(REDIS_ERRORS_TOTAL, "Failed Redis commands by op");
    describe_counter!(REDIS_PUBSUB_LAGGED_TOTAL, "Pub/sub messages dropped because a receiver lagged");
    describe_counter!(CACHE_REQUESTS_TOTAL, "Cache lookups by cache and result");
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests by method, route and status");
    describe_histogram!(HTTP_REQUEST_DURATION_SECONDS, ::metrics::Unit::Seconds, "HTTP request time");
    describe_counter!(RATE_LIMITED_TOTAL, "Requests refused by rate limits, by kind");
    describe_gauge!(NODE_INFO, "Always 1; labels carry the node and version");
    describe_gauge!(READY, "1 while /readyz answers 200");
}

/// Puts the OpenTelemetry trace id on `span` (field `trace_id`), so JSON log lines inside it
/// carry the id of the trace they belong to. No-op without an exporter (no valid trace id).
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let ctx = span.context();
    let id = ctx.span().span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}
