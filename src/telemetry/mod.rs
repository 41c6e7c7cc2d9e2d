//! Logs (pretty or JSON, with trace ids), OpenTelemetry traces over OTLP when configured, and
//! the Prometheus exporter on the metrics port.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

pub mod dropped;
pub mod engineio;
pub mod metered_store;
pub mod metrics;
pub mod netio;
pub mod pubsub_lag;
pub mod runtime;

/// The git revision this binary was built from (see `build.rs`), or `unknown`.
pub const GIT_REVISION: &str = env!("CHAT_GIT_REVISION");

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
    let tracer = match OtlpSettings::from_env(config.otlp_endpoint.as_deref())? {
        Some(settings) => Some(otlp_provider(config, &settings)?),
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

/// OTLP wire protocol (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (port 4317 by convention).
    Grpc,
    /// `http/protobuf`, the OTLP default (port 4318).
    HttpProtobuf,
}

/// What the standard `OTEL_*` variables ask of the span exporter. Endpoint, headers, timeout
/// and compression variables (`OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION}`)
/// are read by the exporter itself; sampler (`OTEL_TRACES_SAMPLER[_ARG]`), batch
/// (`OTEL_BSP_*`) and resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) variables by the
/// SDK. `https://` endpoints use TLS with the system roots (plus `SSL_CERT_FILE`/`SSL_CERT_DIR`);
/// `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` adds a private CA for gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub protocol: OtlpProtocol,
    pub tls: bool,
    pub ca_file: Option<String>,
}

impl OtlpSettings {
    /// `None` when no exporter is wanted: no endpoint variable, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(endpoint: Option<&str>) -> anyhow::Result<Option<Self>> {
        Self::from_lookup(endpoint, |k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(endpoint: Option<&str>, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return Ok(None);
        }
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let Some(effective) = traces_endpoint.or_else(|| endpoint.map(str::to_owned)) else { return Ok(None) };
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) => match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (grpc or http/protobuf)")
                }
            },
        };
        let tls = effective.trim_start().to_ascii_lowercase().starts_with("https://");
        let ca_file = var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE").or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"));
        Ok(Some(Self { protocol, tls, ca_file }))
    }
}

fn otlp_provider(config: &Config, settings: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{SpanExporter, WithTonicConfig};
    // No endpoint or timeout is set in code: code would override the OTEL_* variables. The
    // exporter resolves `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    // `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces` for HTTP) itself.
    // Only a `--otlp-endpoint` flag (no variable) is passed explicitly.
    let flag_endpoint = config.otlp_endpoint.clone().filter(|_| {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    });
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => {
            use opentelemetry_otlp::WithExportConfig;
            let mut b = SpanExporter::builder().with_tonic();
            if let Some(e) = flag_endpoint {
                b = b.with_endpoint(e);
            }
            if settings.tls {
                use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(path) = &settings.ca_file {
                    let pem = std::fs::read(path).with_context(|| format!("reading the OTLP CA certificate {path}"))?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                b = b.with_tls_config(tls);
            }
            b.build()?
        }
        OtlpProtocol::HttpProtobuf => {
            use opentelemetry_otlp::{Protocol, WithExportConfig};
            let mut b = SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
            if let Some(e) = flag_endpoint {
                b = b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
            }
            b.build()?
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", config.node_id()))
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(opentelemetry::KeyValue::new("vcs.ref.head.revision", GIT_REVISION));
    // OTEL_SERVICE_NAME (read by the SDK's detectors) wins over our default.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("jobsphere-chat");
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
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
    ::metrics::gauge!(metrics::NODE_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => GIT_REVISION).set(1.0);
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
    describe_counter!(REDIS_PUBSUB_RECEIVED_TOTAL, "Targeted fan-out messages this node received from Redis");
    describe_counter!(REDIS_ADAPTER_RECEIVED_TOTAL, "Socket.IO Redis adapter messages this node received from Redis");
    describe_counter!(FANOUT_DROPPED_TOTAL, "Targeted fan-out events dropped on this node, by reason");
    describe_counter!(CACHE_REQUESTS_TOTAL, "Cache lookups by cache and result");
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests by method, route and status");
    describe_histogram!(HTTP_REQUEST_DURATION_SECONDS, ::metrics::Unit::Seconds, "HTTP request time");
    describe_counter!(RATE_LIMITED_TOTAL, "Requests refused by rate limits, by kind");
    describe_gauge!(NODE_INFO, "Always 1; labels carry the node, the version and the git revision");
    describe_gauge!(READY, "1 while /readyz answers 200");
    describe_gauge!(SOCKET_TRANSPORT_CONNECTIONS, "Socket.IO connections on this node by current transport");
    describe_gauge!(USERS_ONLINE, "Distinct users with at least one socket on this node");
    describe_counter!(RECEIVED_BYTES_TOTAL, ::metrics::Unit::Bytes, "Bytes read from clients on the public port");
    describe_counter!(SENT_BYTES_TOTAL, ::metrics::Unit::Bytes, "Bytes written to clients on the public port");
    describe_counter!(ENGINEIO_ERRORS_TOTAL, "Engine.IO handshake/session errors answered on /socket.io/, by reason");
    describe_histogram!(
        REDIS_PUBSUB_LAG_SECONDS,
        ::metrics::Unit::Seconds,
        "Round trip of this node's pub/sub probe through Redis"
    );
    describe_counter!(REDIS_PUBSUB_PROBE_LOST_TOTAL, "Pub/sub probes that did not come back in time");
    describe_gauge!(TOKIO_WORKERS, "Tokio runtime worker threads");
    describe_gauge!(TOKIO_ALIVE_TASKS, "Tokio tasks alive");
    describe_gauge!(TOKIO_GLOBAL_QUEUE_DEPTH, "Tasks waiting in the Tokio global queue");
    describe_gauge!(TOKIO_BUSY_RATIO, "Share of worker time spent busy over the last sample interval (0-1)");
    describe_counter!(TOKIO_PARKS_TOTAL, "Times Tokio workers parked (went idle)");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        OtlpSettings::from_lookup(endpoint, |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn otlp_follows_the_standard_variables() {
        assert_eq!(settings(None, &[]).unwrap(), None);
        let http = settings(Some("http://collector:4318"), &[]).unwrap().unwrap();
        assert_eq!(http, OtlpSettings { protocol: OtlpProtocol::HttpProtobuf, tls: false, ca_file: None });
        let grpc =
            settings(Some("https://collector:4317"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap().unwrap();
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        assert!(grpc.tls);
        // The per-signal variables win over the general ones.
        let s = settings(
            Some("http://a:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b/v1/traces"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            OtlpSettings { protocol: OtlpProtocol::HttpProtobuf, tls: true, ca_file: Some("/ca.pem".into()) }
        );
        assert!(settings(None, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x")]).unwrap().is_some());
    }

    #[test]
    fn otlp_can_be_switched_off_and_rejects_unknown_protocols() {
        assert_eq!(settings(Some("http://a"), &[("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert_eq!(settings(Some("http://a"), &[("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        let err = settings(Some("http://a"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(err.to_string().contains("http/json"), "{err}");
    }
}
