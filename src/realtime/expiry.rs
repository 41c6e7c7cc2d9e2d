//! Session expiry: a socket stays authenticated only as long as its token.
//!
//! Every [`SWEEP_EVERY`] each node looks at its own sockets. One whose token is past
//! `exp + JWT_LEEWAY_SECS` gets `session_expired {reason: "token_expired", expiredAt}`; at the
//! next sweep its transport is closed (the connections it was served on are killed, see
//! `crate::http::server`), so the client sees `transport close` and reconnects, with a fresh
//! token if it has one. The close waits one sweep because a close right behind the event
//! could reach the client first. Counted in `chat_sessions_expired_total`.

use std::{collections::HashSet, time::Duration};

use socketioxide::{SocketIo, adapter::Adapter, extract::SocketRef};
use tokio::task::JoinHandle;

use crate::{
    auth::Identity,
    coord::fanout::{ServerEvent, event::SessionExpired},
    http::server::{CloseReason, ConnHandle},
    state::AppState,
    telemetry::metrics as m,
};

/// How often a node looks for expired sessions (the delay before a socket is told).
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Marks a socket that was told its session expired (closed at the next sweep).
#[derive(Debug, Clone, Copy)]
struct Told;

/// Runs the sweep until the node drains (the drain closes every socket anyway).
pub fn spawn<A: Adapter>(io: SocketIo<A>, state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.is_draining() {
                return;
            }
            sweep(&io, &state);
        }
    })
}

fn sweep<A: Adapter>(io: &SocketIo<A>, state: &AppState) {
    let now = jsonwebtoken::get_current_timestamp();
    let leeway = state.jwt.leeway_secs();
    let mut closing: HashSet<String> = HashSet::new();
    for s in io.local().sockets() {
        let Some(me) = s.extensions.get::<Identity>() else { continue };
        if !me.is_expired(now, leeway) {
            continue;
        }
        if s.extensions.get::<Told>().is_some() {
            close_transport(&s);
            closing.insert(s.id.to_string());
            continue;
        }
        tell(&s, me.expires_at.unwrap_or_default());
    }
    if closing.is_empty() {
        return;
    }
    // Polling sessions (and websockets upgraded from one) moved on to other connections than
    // their handshake's: every connection last used for a closing session goes too.
    for conn in state.connections.snapshot() {
        if conn.session().is_some_and(|sid| closing.contains(&*sid)) {
            conn.close(CloseReason::SessionExpired);
        }
    }
}

fn tell<A: Adapter>(s: &SocketRef<A>, exp: u64) {
    let expired_at = crate::chat::model::rfc3339(&chrono::DateTime::from_timestamp(exp as i64, 0).unwrap_or_default());
    let event = ServerEvent::SessionExpired(SessionExpired { reason: "token_expired", expired_at });
    if let Err(e) = s.emit(event.name(), &event) {
        tracing::debug!(error = %e, "session_expired to a closing socket");
    }
    s.extensions.insert(Told);
    metrics::counter!(m::SESSIONS_EXPIRED_TOTAL).increment(1);
}

fn close_transport<A: Adapter>(s: &SocketRef<A>) {
    if let Some(conn) = s.req_parts().extensions.get::<ConnHandle>() {
        conn.close(CloseReason::SessionExpired);
    }
}
