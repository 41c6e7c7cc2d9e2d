//! The HTTP server: hyper-util's auto (HTTP/1 and HTTP/2) connection builder, in place of
//! `axum::serve`, for the bounds that one lacks:
//!
//! - a header-read timeout (`CHAT_HEADER_READ_TIMEOUT_SECS`): a client trickling its request
//!   head (slowloris) is cut off;
//! - an idle timeout (`CHAT_IDLE_TIMEOUT_SECS`): a connection with no byte read for that long
//!   is ended, keep-alive and upgraded websockets alike (Socket.IO pings make live clients
//!   answer well within it);
//! - a per-node connection cap (`CHAT_MAX_CONNECTIONS`): one over the cap is closed at once.
//!
//! Every connection's IO is wrapped in [`Guarded`], which also gives it a kill switch
//! ([`ConnHandle`], in each request's extensions and in [`Connections`]): the drain closes
//! connections one by one with it, and a socket whose token expired has its transport closed.
//! A killed connection reads as end-of-stream, so an upgraded websocket ends as
//! `transport close`, which clients retry (a Socket.IO `disconnect` would not be retried).
//! Closes are counted in `chat_http_connections_closed_total{reason}`.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use futures::task::AtomicWaker;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::Semaphore,
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::telemetry::{
    metrics as m,
    netio::{CountingListener, CountingStream},
};

/// The bounds of one node's HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Why the server ended a connection (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Over `CHAT_MAX_CONNECTIONS`: closed before reading anything.
    OverCapacity,
    /// The request head did not arrive within `CHAT_HEADER_READ_TIMEOUT_SECS`.
    HeaderTimeout,
    /// Nothing read for `CHAT_IDLE_TIMEOUT_SECS`.
    IdleTimeout,
    /// Closed by the drain, spread over its window.
    Drain,
    /// The socket on it held a token that expired.
    SessionExpired,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverCapacity => "over_capacity",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Drain => "drain",
            Self::SessionExpired => "session_expired",
        }
    }

    fn count(self) {
        metrics::counter!(m::HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => self.as_str()).increment(1);
    }
}

/// The kill switch of one live connection.
#[derive(Clone)]
pub struct ConnHandle(Arc<Ctl>);

struct Ctl {
    id: u64,
    killed: AtomicBool,
    /// The tasks waiting to read and to write (an upgraded websocket splits them).
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// The Engine.IO session (`sid`) of the last Socket.IO request on this connection.
    session: Mutex<Option<Arc<str>>>,
}

impl ConnHandle {
    /// Ends the connection: its next read sees end-of-stream and writes fail. Counted once.
    pub fn close(&self, reason: CloseReason) {
        if !self.0.killed.swap(true, Ordering::SeqCst) {
            reason.count();
        }
        self.0.read_waker.wake();
        self.0.write_waker.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.0.killed.load(Ordering::SeqCst)
    }

    /// Remembers which Engine.IO session this connection last carried (one per connection,
    /// so bounded by the connection cap).
    pub fn set_session(&self, sid: &str) {
        let mut s = self.0.session.lock().unwrap_or_else(|p| p.into_inner());
        if s.as_deref() != Some(sid) {
            *s = Some(sid.into());
        }
    }

    pub fn session(&self) -> Option<Arc<str>> {
        self.0.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle").field("id", &self.0.id).field("closed", &self.is_closed()).finish()
    }
}

/// The node's live connections (at most `max_connections`), for the drain.
#[derive(Default)]
pub struct Connections {
    live: Mutex<HashMap<u64, ConnHandle>>,
    next_id: AtomicU64,
}

impl Connections {
    fn open(&self) -> ConnHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let h = ConnHandle(Arc::new(Ctl {
            id,
            killed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            session: Mutex::new(None),
        }));
        self.lock().insert(id, h.clone());
        h
    }

    fn forget(&self, h: &ConnHandle) {
        self.lock().remove(&h.0.id);
    }

    /// The connections open now.
    pub fn snapshot(&self) -> Vec<ConnHandle> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConnHandle>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, asks every HTTP
/// connection to finish its request, and returns once they did (upgraded websockets are
/// not waited for: they belong to Socket.IO from then on).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    connections: Arc<Connections>,
    stop: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut listener = CountingListener(listener);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, addr) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            () = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            CloseReason::OverCapacity.count();
            drop(io);
            continue;
        };
        let mut io = io;
        // Chat frames are small and latency-bound: no Nagle delay on any connection.
        if let Err(e) = io.tcp().set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let handle = connections.open();
        let guarded = Guarded::new(io, handle.clone(), limits.idle_timeout);
        let svc = service(app.clone(), addr, handle.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(guarded), svc);
            if let Err(e) = watcher.watch(conn).await {
                if e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout()) {
                    CloseReason::HeaderTimeout.count();
                } else {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
            connections.forget(&handle);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The router as a hyper service, with what `into_make_service_with_connect_info` gave each
/// request (the peer address) plus the connection's kill switch.
fn service(
    app: Router,
    addr: SocketAddr,
    handle: ConnHandle,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        req.extensions_mut().insert(handle.clone());
        app.clone().oneshot(req)
    })
}

/// A connection's IO: ends it when killed, or when nothing was read for `idle`.
pub struct Guarded {
    inner: CountingStream,
    handle: ConnHandle,
    idle: Duration,
    last_read: Instant,
    /// Armed at `last_read + idle`; re-armed lazily when it fires after a later read.
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(inner: CountingStream, handle: ConnHandle, idle: Duration) -> Self {
        let now = Instant::now();
        Self { inner, handle, idle, last_read: now, deadline: Box::pin(tokio::time::sleep_until(now + idle)) }
    }

    /// Whether the idle deadline passed (registers the timer otherwise).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_read + self.idle;
            if Instant::now() >= due {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed by the server")
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.handle.0.read_waker.register(cx.waker());
        if this.handle.is_closed() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.idle_expired(cx) {
                    this.handle.close(CloseReason::IdleTimeout);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.handle.0.write_waker.register(cx.waker());
        if self.handle.is_closed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.handle.0.write_waker.register(cx.waker());
        if self.handle.is_closed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.handle.is_closed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_registered_at_zero() {
        use CloseReason::*;
        let all = [OverCapacity, HeaderTimeout, IdleTimeout, Drain, SessionExpired];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, m::labels::HTTP_CLOSE_REASONS);
    }

    #[test]
    fn a_closed_handle_is_counted_once_and_leaves_the_registry() {
        let c = Connections::default();
        let a = c.open();
        let b = c.open();
        assert_eq!(c.len(), 2);
        a.close(CloseReason::Drain);
        a.close(CloseReason::Drain);
        assert!(a.is_closed() && !b.is_closed());
        c.forget(&a);
        assert_eq!(c.snapshot().len(), 1);
    }
}
