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
//! the Socket.IO connections one by one with it, spread over its window
//! ([`Connections::close_realtime_over`]), and a socket whose token expired has its transport
//! closed.
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
    /// Whether it carried a Socket.IO request (a websocket, or polls): the drain closes these.
    realtime: AtomicBool,
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

    /// Marks the connection as carrying Socket.IO (see [`Connections::close_realtime_over`]).
    pub fn mark_realtime(&self) {
        if !self.0.realtime.load(Ordering::Relaxed) {
            self.0.realtime.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_realtime(&self) -> bool {
        self.0.realtime.load(Ordering::Relaxed)
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
            realtime: AtomicBool::new(false),
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

    /// The open connections that carried Socket.IO, oldest first.
    pub fn realtime(&self) -> Vec<ConnHandle> {
        let mut v: Vec<ConnHandle> = self.lock().values().filter(|c| c.is_realtime()).cloned().collect();
        v.sort_unstable_by_key(|c| c.0.id);
        v
    }

    /// Closes the Socket.IO connections open now one after the other, evenly over `window`
    /// (the first at once, the last at about `window`), then any that began to carry
    /// Socket.IO meanwhile. Each client sees `transport close` and reconnects (elsewhere, as
    /// a draining node accepts nothing): spread out, a node's clients come back at about
    /// `count / window` per second instead of all at once, which the connection throttle of
    /// the other nodes (per user, or per address behind a NAT) lets through. Plain HTTP
    /// connections are left to the server's graceful shutdown. Returns how many were closed.
    pub async fn close_realtime_over(&self, window: Duration, reason: CloseReason) -> usize {
        let conns = self.realtime();
        let n = conns.len();
        let start = Instant::now();
        for (i, c) in conns.iter().enumerate() {
            let at = start + window.mul_f64(i as f64 / n as f64);
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            c.close(reason);
        }
        let late: Vec<ConnHandle> = self.realtime().into_iter().filter(|c| !c.is_closed()).collect();
        for c in &late {
            c.close(reason);
        }
        n + late.len()
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
        // The permit and the registry entry live as long as the IO: an upgraded websocket
        // outlives hyper's connection task (which ends at the upgrade).
        let guarded = Guarded::new(io, handle.clone(), limits.idle_timeout, permit, connections.clone());
        let svc = service(app.clone(), addr, handle);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(guarded), svc);
            if let Err(e) = watcher.watch(conn).await {
                if e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout()) {
                    CloseReason::HeaderTimeout.count();
                } else {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
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

/// A connection's IO: ends it when killed, or when nothing was read for `idle`. Holds the
/// connection's place under the cap and in [`Connections`] until it is dropped (an upgraded
/// websocket's IO lives as long as the websocket).
pub struct Guarded {
    inner: CountingStream,
    handle: ConnHandle,
    idle: Duration,
    last_read: Instant,
    /// Armed at `last_read + idle`; re-armed lazily when it fires after a later read.
    deadline: Pin<Box<Sleep>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    registry: Arc<Connections>,
}

impl Guarded {
    fn new(
        inner: CountingStream,
        handle: ConnHandle,
        idle: Duration,
        permit: tokio::sync::OwnedSemaphorePermit,
        registry: Arc<Connections>,
    ) -> Self {
        let now = Instant::now();
        let deadline = Box::pin(tokio::time::sleep_until(now + idle));
        Self { inner, handle, idle, last_read: now, deadline, _permit: permit, registry }
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

impl Drop for Guarded {
    fn drop(&mut self) {
        self.registry.forget(&self.handle);
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

    /// Drain closes spread over the window: at each tenth of it, about a tenth more are closed;
    /// plain HTTP connections are not touched.
    #[tokio::test(start_paused = true)]
    async fn realtime_connections_are_closed_evenly_over_the_window() {
        let c = Arc::new(Connections::default());
        let sockets: Vec<ConnHandle> = (0..100).map(|_| c.open()).collect();
        for h in &sockets {
            h.mark_realtime();
        }
        let rest = c.open();
        let window = Duration::from_secs(10);
        let closer = tokio::spawn({
            let c = c.clone();
            async move { c.close_realtime_over(window, CloseReason::Drain).await }
        });
        let closed = || sockets.iter().filter(|h| h.is_closed()).count();
        tokio::task::yield_now().await;
        assert_eq!(closed(), 1, "the first at once");
        for tenth in 1..10u32 {
            tokio::time::sleep(window / 10).await;
            let n = closed();
            assert!((tenth as usize * 10..=tenth as usize * 10 + 1).contains(&n), "{n} closed after {tenth}/10 of it");
        }
        assert_eq!(closer.await.unwrap(), 100);
        assert_eq!(closed(), 100);
        assert!(!rest.is_closed(), "a plain HTTP connection is left to the graceful shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_closes_every_realtime_connection_at_once() {
        let c = Connections::default();
        let hs: Vec<ConnHandle> = (0..5).map(|_| c.open()).collect();
        hs.iter().for_each(ConnHandle::mark_realtime);
        let t0 = Instant::now();
        assert_eq!(c.close_realtime_over(Duration::ZERO, CloseReason::Drain).await, 5);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(hs.iter().all(ConnHandle::is_closed));
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
