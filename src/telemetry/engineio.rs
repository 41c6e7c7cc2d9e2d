//! Engine.IO handshake and session errors, counted at the HTTP layer: engineioxide answers them
//! itself (a 400 with a JSON body naming the Engine.IO error code, or a bare status) and exposes
//! no hook. "Session ID unknown" is the sign of broken load-balancer stickiness for long-polling
//! (a poll lands on a node that never saw the handshake), so it must be visible.

use axum::{
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::metrics as m;

/// Bodies of engineioxide's error answers are tens of bytes; anything larger is not one.
const MAX_ERROR_BODY: usize = 1024;

/// Counts Engine.IO error answers on `path_prefix` (`/socket.io/`) by reason.
pub async fn count_errors(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(crate::realtime::SOCKET_IO_PATH) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status != StatusCode::BAD_REQUEST || !is_json {
        metrics::counter!(m::ENGINEIO_ERRORS_TOTAL, "reason" => reason_of_status(status)).increment(1);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(_) => {
            metrics::counter!(m::ENGINEIO_ERRORS_TOTAL, "reason" => "other").increment(1);
            return Response::from_parts(parts, Body::empty());
        }
    };
    metrics::counter!(m::ENGINEIO_ERRORS_TOTAL, "reason" => reason_of_body(&bytes)).increment(1);
    Response::from_parts(parts, Body::from(bytes))
}

fn reason_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_packet",
        413 => "payload_too_large",
        500..=599 => "internal",
        _ => "other",
    }
}

/// The Engine.IO error code in `{"code":"N","message":…}` (protocol v4 error codes).
fn reason_of_body(body: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct EioError {
        code: serde_json::Value,
    }
    let code = serde_json::from_slice::<EioError>(body).ok().map(|e| match e.code {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    match code.as_deref() {
        Some("0") => "unknown_transport",
        Some("1") => "unknown_session",
        Some("2") => "bad_handshake_method",
        Some("3") => "bad_request",
        Some("5") => "unsupported_protocol",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engineio_error_bodies_map_to_reasons() {
        assert_eq!(reason_of_body(br#"{"code":"1","message":"Session ID unknown"}"#), "unknown_session");
        assert_eq!(reason_of_body(br#"{"code":"0","message":"Transport unknown"}"#), "unknown_transport");
        assert_eq!(reason_of_body(br#"{"code":"5","message":"Unsupported protocol version"}"#), "unsupported_protocol");
        assert_eq!(reason_of_body(br#"{"code":3,"message":"Bad request"}"#), "bad_request");
        assert_eq!(reason_of_body(b"garbage"), "other");
        assert_eq!(reason_of_status(StatusCode::PAYLOAD_TOO_LARGE), "payload_too_large");
        assert_eq!(reason_of_status(StatusCode::BAD_REQUEST), "bad_packet");
    }

    #[test]
    fn every_reason_is_registered_at_zero() {
        let all = m::labels::ENGINEIO_ERROR_REASONS;
        for r in ["unknown_transport", "unknown_session", "bad_handshake_method", "bad_request", "unsupported_protocol"]
        {
            assert!(all.contains(&r), "{r}");
        }
        for s in [400, 413, 500, 404] {
            assert!(all.contains(&reason_of_status(StatusCode::from_u16(s).unwrap())));
        }
    }
}
