//! How a handler answers: through the client's ack when it asked for one, otherwise failures go
//! out as an `error` event `{code, message, event}`.

use std::{convert::Infallible, sync::Arc};

use serde::Serialize;
use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, SocketRef},
    handler::FromMessageParts,
    socket::Socket,
};
use socketioxide_core::Value;

use crate::{
    coord::fanout::{ServerEvent, event::EventError},
    error::{ApiError, ack_success},
    telemetry::metrics as m,
};

pub struct Reply<A: Adapter> {
    ack: AckSender<A>,
    socket: SocketRef<A>,
    wants_ack: bool,
}

impl<A: Adapter> FromMessageParts<A> for Reply<A> {
    type Error = Infallible;
    fn from_message_parts(s: &Arc<Socket<A>>, v: &mut Value, ack_id: &Option<i64>) -> Result<Self, Infallible> {
        Ok(Self {
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            socket: SocketRef::from_message_parts(s, v, ack_id)?,
            wants_ack: ack_id.is_some(),
        })
    }
}

impl<A: Adapter> Reply<A> {
    pub fn success<T: Serialize>(self, data: T) {
        if self.wants_ack
            && let Err(e) = self.ack.send(&ack_success(data))
        {
            tracing::debug!(error = %e, "ack not sent (socket gone)");
        }
    }

    pub fn error(self, err: &ApiError, event: &'static str) {
        self.error_as(err, event, event);
    }

    /// Like [`Self::error`], for an event whose client-given `name` must not become a metric
    /// label (unknown events are counted under `label`, but the `error` event names them).
    pub fn error_as(self, err: &ApiError, label: &'static str, name: &str) {
        metrics::counter!(m::EVENT_ERRORS_TOTAL, "event" => label, "code" => err.code()).increment(1);
        if self.wants_ack {
            if let Err(e) = self.ack.send(&err.to_ack()) {
                tracing::debug!(error = %e, "error ack not sent (socket gone)");
            }
        } else {
            let body = ServerEvent::Error(EventError { code: err.code(), message: err.to_string(), event: name });
            if let Err(e) = self.socket.emit(body.name(), &body) {
                tracing::debug!(error = %e, "error event not sent (socket gone)");
            }
        }
    }
}
