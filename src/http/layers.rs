//! The tower stack of the REST routes, ordered on purpose (outermost first):
//! 1. metrics + trace span (sees every response, including the errors of the layers below),
//! 2. (CORS is applied outside this stack, to Socket.IO too: see `node::build`),
//! 3. timeout (REST only: Socket.IO long-polling requests outlive any REST timeout),
//! 4. body limit (64 KiB, surfaced as 413 `payload_too_large` by the JSON extractor).

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderExtractor;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    timeout::TimeoutLayer,
};
use tracing::{Instrument, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{edge::MAX_PAYLOAD, error::ApiError, state::AppState, telemetry::metrics as m};

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub fn rest(router: Router<AppState>) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(observe))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
            .layer(DefaultBodyLimit::max(MAX_PAYLOAD)),
    )
}

pub fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([axum::http::header::AUTHORIZATION, axum::http::header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// One span per request (continuing a W3C `traceparent` if sent), plus HTTP metrics labelled by
/// route template. Unmatched paths share one label so scanners cannot blow up cardinality.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    let span = info_span!("http_request", http.method = %method, http.route = %route, user_id = tracing::field::Empty,
        http.status = tracing::field::Empty, trace_id = tracing::field::Empty);
    let _ = span.set_parent(parent);
    crate::telemetry::record_trace_id(&span);
    let resp = next.run(req).instrument(span.clone()).await;
    let resp = if resp.status() == StatusCode::SERVICE_UNAVAILABLE && resp.headers().get("content-type").is_none() {
        // The timeout layer's empty 503.
        ApiError::Unavailable.into_response()
    } else {
        resp
    };
    let status = resp.status().as_u16().to_string();
    span.record("http.status", status.as_str());
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}
