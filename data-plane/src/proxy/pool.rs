//! Per-host upstream connection pools.
//!
//! HTTP/1.1: idle keep-alive connections are reused; a connection goes back to the idle list
//! only when its response body has been read to the end. The connection has no task of its own
//! (`http1`): the request's task writes the request and reads the response, and idle lists are
//! kept per worker thread. HTTP/2: one multiplexed connection per host (hyper's, driven by a
//! task), re-established when it closes.
//!
//! TLS clusters: every connection runs the cluster's TLS handshake after the TCP connect (both
//! within `connect_timeout`); a failed handshake or verification is a connect failure, never
//! a plaintext fallback. Each connection remembers the generation of the client configuration
//! it was made with; after a rotation (a new generation) older connections are not reused:
//! idle HTTP/1.1 connections are closed, a busy one closes when its response ends, and the
//! shared HTTP/2 connection is replaced for new requests while its streams finish.
//!
//! `max_requests_per_connection` (Envoy's, counted in `upstream_cx_max_requests` when the last
//! request it allows goes on a connection): an HTTP/1.1 connection closes once that response
//! ends; an HTTP/2 connection takes no new streams, and closes when its streams finish.
//!
//! Connection ends are counted as Envoy counts them: `upstream_cx_destroy`, split into
//! `_local` (the proxy let go of the connection, or its connect timed out or its TLS handshake
//! failed) and `_remote` (the upstream closed it, or refused the connect), and
//! `upstream_cx_destroy_{,local_,remote_}with_active_rq` when a request was on it. An
//! HTTP/1.1 attempt abandoned before its response (a timeout) or a response body dropped before
//! its end closes the connection at once, as Envoy resets the stream. A failed connect also
//! fails the request waiting for it: `upstream_rq_pending_failure_eject`.
//!
//! Idle HTTP/1.1 connections are watched, as Envoy's event loop watches them: one task per
//! worker's idle list (started with its first idle connection) is woken by the I/O driver when
//! an idle connection becomes readable, and closes it there and then: the upstream closed it
//! (`upstream_cx_destroy_remote`) or sent bytes nobody asked for (a local close). The same task
//! closes connections idle for longer than the cluster's `idle_timeout`. Nothing else polls an
//! idle connection; a request that takes one still checks it first (no system call unless the
//! socket became readable), and takes the next or opens a new one if it is closed.

use super::body::{ProxyBody, UpstreamBody};
use super::io_stats::Counted;
use crate::config::UpstreamProtocol;
use crate::resilience::breaker::{ConnectionGuard, HostConnectionLimit, PendingGuard};
use crate::runtime::host::PoolStats;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why an upstream attempt failed before a response arrived (Envoy's reset reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be established (refused, unreachable, or the TLS handshake
    /// or certificate verification failed).
    ConnectFailure,
    /// The TCP connect (and TLS handshake) did not finish within `connect_timeout`.
    ConnectTimeout,
    /// The connection was reset or closed before response headers.
    Reset,
    /// The upstream's response head broke HTTP/1.1 (or a limit): Envoy answers 502.
    Protocol,
    /// The HTTP/2 peer refused the stream.
    RefusedStream,
    /// A circuit breaker refused the request (pending requests over `max_pending_requests`).
    Overflow,
}

impl UpstreamError {
    /// Envoy's reset reason text, as in its local-reply bodies.
    pub fn reason(self) -> &'static str {
        match self {
            UpstreamError::ConnectFailure => "remote connection failure",
            UpstreamError::ConnectTimeout => "connection timeout",
            UpstreamError::Reset => "connection termination",
            UpstreamError::Protocol => "protocol error",
            UpstreamError::RefusedStream => "remote refused stream reset",
            UpstreamError::Overflow => "overflow",
        }
    }

    /// The status of Envoy's local reply (and the code it charges): 502 for a protocol error,
    /// 503 for every other failure before response headers.
    pub fn status(self) -> http::StatusCode {
        match self {
            UpstreamError::Protocol => http::StatusCode::BAD_GATEWAY,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True for failures that happen before any byte of the request reached the host.
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectFailure | UpstreamError::ConnectTimeout
        )
    }
}

/// Connection counters of one host, shared with `/clusters`.
#[derive(Debug, Default)]
pub struct HostConnStats {
    /// Connections opened.
    pub cx_total: std::sync::atomic::AtomicU64,
    /// Connections open now.
    pub cx_active: std::sync::atomic::AtomicU64,
    /// Failed connects.
    pub cx_connect_fail: std::sync::atomic::AtomicU64,
    /// Requests waiting for a connection now.
    pub rq_pending_active: std::sync::atomic::AtomicU64,
}

/// The pool of one host.
#[derive(Debug)]
pub struct HostPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// Counters, shared with every connection (which counts its own end).
    shared: Arc<Shared>,
    /// HTTP/1.1 idle connections, one list per worker thread: as in Envoy, whose pools are per
    /// worker, a connection serves the worker whose event loop it is registered with; a worker
    /// with none idle takes one from another worker's list before it opens a new one. A lock is
    /// held only to push, pop or close connections.
    idle: Box<[IdleSlot]>,
    /// The TLS generation the idle list was last purged for.
    idle_generation: AtomicU64,
    /// HTTP/2 shared connection.
    h2: Mutex<Option<Conn<http2::SendRequest<ProxyBody>>>>,
    /// Serialises HTTP/2 connection establishment so a burst opens one connection.
    h2_connecting: tokio::sync::Mutex<()>,
    /// The per-host connection limit.
    host_limit: HostConnectionLimit,
}

/// Idle HTTP/1.1 connections with the time each became idle (most recent last).
type IdleList = Mutex<Vec<(Box<PooledH1>, Instant)>>;

/// One worker's idle HTTP/1.1 connections and their watch.
#[derive(Debug)]
struct IdleSlot {
    list: IdleList,
    watch: Arc<IdleWatch>,
    /// `watch` as a waker (made once): the read waker of every connection in `list`.
    waker: Waker,
    /// The watch task was started.
    watching: AtomicBool,
}

impl IdleSlot {
    fn new() -> Self {
        let watch = Arc::new(IdleWatch::default());
        IdleSlot {
            list: Mutex::new(Vec::new()),
            waker: Waker::from(watch.clone()),
            watch,
            watching: AtomicBool::new(false),
        }
    }
}

/// Wakes an idle list's watch task: an idle connection became readable (the upstream closed
/// it, or sent bytes nobody asked for), or the pool went away.
#[derive(Debug, Default)]
struct IdleWatch {
    readable: tokio::sync::Notify,
}

impl std::task::Wake for IdleWatch {
    fn wake(self: Arc<Self>) {
        self.readable.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.notify_one();
    }
}

/// What a pool shares with its connections: the counters a connection's end updates, and the
/// wake-up of requests waiting for a connection.
#[derive(Debug)]
struct Shared {
    stats: PoolStats,
    /// Per-host connection counters.
    host: HostConnStats,
    /// Woken when a connection goes back to the idle list or closes (pending requests wait).
    released: tokio::sync::Notify,
}

impl Shared {
    /// A connection ended: counts it as Envoy does (`upstream_cx_destroy`, `_local` or
    /// `_remote`, and `_with_active_rq` when a request was on it), frees the active-connection
    /// gauges and the breaker's connection slot, and wakes a request waiting for a connection.
    /// Records the connection's `upstream_cx_length_ms` from `opened`, when its connect began,
    /// and the `requests` it carried (`upstream_rq_per_cx`).
    fn closed(
        &self,
        guard: Option<ConnectionGuard>,
        local: bool,
        with_active_rq: bool,
        opened: tokio::time::Instant,
        requests: u32,
    ) {
        let s = &self.stats;
        s.cx_length_ms.record(millis_since(opened));
        s.rq_per_cx.record(u64::from(requests));
        s.cx_active.dec();
        self.host.cx_active.fetch_sub(1, Ordering::Relaxed);
        s.cx_destroy.inc();
        if local {
            s.cx_destroy_local.inc();
        } else {
            s.cx_destroy_remote.inc();
        }
        if with_active_rq {
            self.count_active_rq(local);
        }
        drop(guard);
        self.released.notify_one();
    }

    /// `upstream_cx_destroy_with_active_rq` and its `_local` or `_remote` split.
    fn count_active_rq(&self, local: bool) {
        let s = &self.stats;
        s.cx_destroy_with_active_rq.inc();
        if local {
            s.cx_destroy_local_with_active_rq.inc();
        } else {
            s.cx_destroy_remote_with_active_rq.inc();
        }
    }
}

/// An HTTP/1.1 connection of the pool (see `http1`): no task of its own; whoever holds it
/// (a request, its response body, or the idle list) drives it. Dropping it closes it and
/// counts its end: remote if the upstream closed it or it failed, else local; with an active
/// request if one was on it (an abandoned attempt or response body).
///
/// Boxed wherever it is held: it moves from the idle list to a request to its response body
/// and back, and a pointer moves for less than the connection's buffers and state.
#[derive(Debug)]
struct PooledH1 {
    conn: super::http1::Connection<Counted<Transport>>,
    /// The TLS generation it was made with.
    generation: u64,
    /// When its connect began.
    opened: tokio::time::Instant,
    /// A request is on it (from its send until its response body ends).
    active_rq: bool,
    /// Requests it has carried (for `max_requests_per_connection`).
    requests: u32,
    shared: Arc<Shared>,
    /// The breaker's connection slot, given back when the connection closes.
    guard: Option<ConnectionGuard>,
}

impl Drop for PooledH1 {
    fn drop(&mut self) {
        let local = !self.conn.peer_closed();
        self.shared.closed(
            self.guard.take(),
            local,
            self.active_rq,
            self.opened,
            self.requests,
        );
    }
}

/// An HTTP/2 connection's request sender, with the TLS generation it was made with and its
/// state.
#[derive(Debug)]
struct Conn<S> {
    sender: S,
    generation: u64,
    track: Arc<ConnTrack>,
}

impl<S> Conn<S> {
    /// Lets go of the connection (it closes once nothing else holds a sender).
    fn close_locally(self) {
        self.track.local.store(true, Ordering::Relaxed);
    }
}

/// What the pool knows about one HTTP/2 connection, for the `upstream_cx_destroy_*` counters.
#[derive(Debug, Default)]
struct ConnTrack {
    /// The proxy let go of the connection (TLS rotation, pool removed).
    local: AtomicBool,
    /// `upstream_cx_destroy_*with_active_rq` was counted for this connection.
    active_counted: AtomicBool,
    /// Streams admitted on it (for `max_requests_per_connection` and `upstream_rq_per_cx`).
    streams: std::sync::atomic::AtomicU32,
}

impl ConnTrack {
    /// Counts the connection as destroyed with a request on it (once): by the proxy
    /// (`local`) or by the upstream. hyper hands a broken connection's error to the request
    /// on it and may end the connection itself cleanly, so the request's failure is the
    /// reliable sign.
    fn destroyed_with_active_rq(&self, shared: &Shared, local: bool) {
        if !self.active_counted.swap(true, Ordering::Relaxed) {
            shared.count_active_rq(local);
        }
    }
}

/// Keeps a request in the cluster's `upstream_rq_active` until dropped: it failed or was
/// cancelled, or its response body (which holds it) ended or was dropped.
#[derive(Debug)]
pub struct ActiveRequest(crate::stats::Gauge);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a request in `rq_pending_active` (host and cluster) while it waits for a connection.
struct Waiting<'a> {
    host: &'a HostConnStats,
    cluster: &'a crate::stats::Gauge,
    _guard: PendingGuard,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.host
            .rq_pending_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.cluster.dec();
    }
}

/// An HTTP/1.1 response body, read from the connection it arrived on. At its end the
/// connection goes back to the pool (if it can carry another request); dropped before its end
/// (abandoned by the downstream or a timeout), it closes the connection at once, as Envoy
/// resets the stream.
#[derive(Debug)]
pub struct H1Response {
    exchange: super::http1::Exchange,
    /// `None` once the body has ended (or failed).
    conn: Option<Box<PooledH1>>,
    pool: Arc<PoolInner>,
}

impl H1Response {
    fn new(exchange: super::http1::Exchange, conn: Box<PooledH1>, pool: Arc<PoolInner>) -> Self {
        let mut r = H1Response {
            exchange,
            conn: Some(conn),
            pool,
        };
        if r.exchange.is_end() {
            r.finish();
        }
        r
    }

    /// The body ended: the request is done and the connection goes back to the idle list,
    /// unless it cannot carry another request, carried `max_requests_per_connection`, or the
    /// TLS configuration was rotated since it was made (it is closed).
    fn finish(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.active_rq = false;
        let spent = (self.pool.shared.stats.max_requests_per_connection)
            .is_some_and(|max| conn.requests >= max);
        if spent
            || !conn.conn.is_reusable_after(&self.exchange)
            || conn.generation != self.pool.tls_generation()
        {
            return;
        }
        let slot = self.pool.idle_slot();
        let idle = &self.pool.idle[slot];
        // From now on the connection's readiness wakes the watch, not this request's task
        // (one the upstream closed already is not kept).
        if !conn.conn.is_reusable_now(&idle.waker) {
            return;
        }
        if let Ok(mut list) = idle.list.lock() {
            list.push((conn, Instant::now()));
            drop(list);
            // Wake one request queued for a connection (max_connections reached).
            self.pool.shared.released.notify_one();
            if !idle.watching.load(Ordering::Relaxed) {
                PoolInner::watch_idle(&self.pool, slot);
            }
        }
    }

    /// The next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, super::http1::Error>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        let polled = conn.conn.poll_body(&mut self.exchange, cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.exchange.is_end() => self.finish(),
            // A broken body closes the connection (counted with the request on it). As
            // Envoy's codec, a body cut short by a close or broken framing is a protocol error.
            Poll::Ready(Some(Err(e))) => {
                if matches!(
                    e,
                    super::http1::Error::Closed | super::http1::Error::Protocol(_)
                ) {
                    self.pool.shared.stats.cx_protocol_error.inc();
                }
                self.conn = None;
            }
            _ => {}
        }
        polled
    }

    /// The body has been read to its end.
    pub fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.exchange.is_end()
    }

    /// The body's size, when known.
    pub fn size_hint(&self) -> http_body::SizeHint {
        self.exchange.size_hint()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Idle HTTP/1.1 connections close (locally) as the lists drop; their watch tasks end.
        for slot in self.idle.iter() {
            slot.watch.readable.notify_one();
        }
        if let Ok(Some(conn)) = self.h2.get_mut().map(Option::take) {
            conn.close_locally();
        }
    }
}

impl PoolInner {
    /// Starts the watch of idle list `slot` on this thread's runtime, once: it closes the
    /// list's connections that the upstream closes when it closes them, and those idle for
    /// longer than `idle_timeout` when that passes. It holds the pool weakly and ends with it.
    fn watch_idle(pool: &Arc<Self>, slot: usize) {
        let idle = &pool.idle[slot];
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if idle.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(pool);
        let watch = idle.watch.clone();
        runtime.spawn(async move {
            loop {
                // The next idle connection to expire, if connections expire.
                let expiry = match weak.upgrade() {
                    Some(pool) => pool.close_idle(slot),
                    None => return,
                };
                match expiry {
                    Some(at) => {
                        tokio::select! {
                            _ = watch.readable.notified() => {}
                            _ = tokio::time::sleep_until(at.into()) => {}
                        }
                    }
                    None => watch.readable.notified().await,
                }
            }
        });
    }

    /// Closes the idle connections of list `slot` that cannot carry a request any more
    /// (closed by the upstream, out of step, past `idle_timeout`), and leaves the others
    /// watched. Returns when to look again, if connections expire: when the oldest one left
    /// expires, or one `idle_timeout` from now if none is left; a connection that goes idle
    /// later expires later than either, so none outlives its `idle_timeout` unseen.
    fn close_idle(&self, slot: usize) -> Option<Instant> {
        let idle = &self.idle[slot];
        let now = Instant::now();
        let mut list = idle.list.lock().ok()?;
        list.retain_mut(|(conn, since)| self.idle_usable(conn, *since, now, &idle.waker));
        Some(list.first().map_or(now, |(_, since)| *since) + self.idle_timeout?)
    }

    /// Whether a connection idle since `since` can still carry a request at `now`: within
    /// `idle_timeout`, and not closed by the upstream nor out of step. `waker` becomes its read
    /// waker (see `http1::Connection::is_reusable_now`).
    fn idle_usable(
        &self,
        conn: &mut PooledH1,
        since: Instant,
        now: Instant,
        waker: &Waker,
    ) -> bool {
        self.idle_timeout
            .is_none_or(|t| now.duration_since(since) < t)
            && conn.conn.is_reusable_now(waker)
    }

    /// This worker's idle list (the first when not on a worker thread).
    fn idle_slot(&self) -> usize {
        super::workers::current_index().unwrap_or(0) % self.idle.len()
    }

    /// The generation of the TLS client configuration in force (0 without TLS).
    fn tls_generation(&self) -> u64 {
        self.shared.stats.tls.as_ref().map_or(0, |t| t.generation())
    }
}

/// An upstream connection: plain TCP, or TLS over TCP.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<crate::tls::TlsStream>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl HostPool {
    /// An empty pool for `addr`.
    pub fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Option<Duration>,
        stats: PoolStats,
    ) -> Self {
        let host_limit = stats.breakers.host_limit(stats.per_host_max_connections);
        HostPool {
            inner: Arc::new(PoolInner {
                host_limit,
                addr,
                protocol,
                connect_timeout,
                idle_timeout,
                shared: Arc::new(Shared {
                    stats,
                    host: HostConnStats::default(),
                    released: tokio::sync::Notify::new(),
                }),
                idle: (0..super::workers::started().max(1))
                    .map(|_| IdleSlot::new())
                    .collect(),
                idle_generation: AtomicU64::new(0),
                h2: Mutex::new(None),
                h2_connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Per-host connection counters.
    pub fn host_stats(&self) -> &HostConnStats {
        &self.inner.shared.host
    }

    /// Sends one request and returns the response head with a body that releases the
    /// connection when done.
    pub async fn send(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        match self.inner.protocol {
            UpstreamProtocol::Http1 => self.send_h1(req).await,
            UpstreamProtocol::Http2 => self.send_h2(req).await,
        }
    }

    async fn send_h1(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let inner = &self.inner;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Register for a wake-up before looking, so a release in between is not missed.
            let released = inner.shared.released.notified();
            // Reuse an idle connection (`pop_idle` skips those the upstream has closed).
            if let Some(conn) = self.pop_idle() {
                drop(waiting);
                return self.exchange_h1(conn, req).await;
            }
            // No idle connection: the request is pending. Like Envoy, max_pending_requests is
            // checked first, then whether a new connection may open.
            let breakers = &inner.shared.stats.breakers;
            if waiting.is_none() {
                let guard = breakers
                    .try_pending()
                    .map_err(|_| UpstreamError::Overflow)?;
                inner.shared.stats.rq_pending_total.inc();
                inner
                    .shared
                    .host
                    .rq_pending_active
                    .fetch_add(1, Ordering::Relaxed);
                inner.shared.stats.rq_pending_active.inc();
                waiting = Some(Waiting {
                    host: &inner.shared.host,
                    cluster: &inner.shared.stats.rq_pending_active,
                    _guard: guard,
                });
            }
            // Open a connection if the breakers allow one. A pool with no connection at all
            // opens one anyway (the overflow is still counted), as Envoy does.
            let guard = match breakers.try_host_connection(&inner.host_limit) {
                Ok(g) => Some(g),
                Err(_) if inner.shared.host.cx_active.load(Ordering::Relaxed) == 0 => {
                    Some(breakers.force_connection(Some(&inner.host_limit)))
                }
                Err(_) => None,
            };
            if let Some(guard) = guard {
                // Boxed: the connect (and TLS handshake) future is large and rarely needed; kept
                // inline it would grow every request's future, which is moved per request.
                let conn = Box::pin(self.connect_h1(guard)).await?;
                drop(waiting);
                return self.exchange_h1(conn, req).await;
            }
            // Wait for a connection to be released.
            released.await;
        }
    }

    /// Sends `req` on `conn` in this task and returns the response head; the body reads the
    /// rest from the connection. Counted as `dispatch` counts. Cancelled (a timeout), the
    /// connection closes with the request on it, as Envoy resets the stream.
    async fn exchange_h1(
        &self,
        mut conn: Box<PooledH1>,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let active = self.count_dispatch();
        conn.active_rq = true;
        conn.requests += 1;
        let stats = &self.inner.shared.stats;
        // As Envoy: counted when the last request the limit allows goes on the connection.
        if stats.max_requests_per_connection == Some(conn.requests) {
            stats.cx_max_requests.inc();
        }
        let sent = conn.conn.send(req).await;
        match sent {
            Ok((head, exchange)) => {
                let body = H1Response::new(exchange, conn, self.inner.clone());
                Ok(http::Response::from_parts(
                    head,
                    UpstreamBody::h1(body, active),
                ))
            }
            Err(e) => {
                tracing::debug!(upstream = %self.inner.addr, error = %e, "HTTP/1.1 exchange failed");
                // Dropped here: counted with its request, remote if the upstream broke it.
                if matches!(e, super::http1::Error::Protocol(_)) {
                    stats.cx_protocol_error.inc();
                    return Err(UpstreamError::Protocol);
                }
                Err(UpstreamError::Reset)
            }
        }
    }

    /// Counts a request in `upstream_rq_total`, and in `upstream_rq_active` until the returned
    /// guard drops (also when the send is cancelled; a response body holds it until it ends).
    /// Queued requests are pending, not active, and a pending overflow is not a request (as in
    /// Envoy).
    fn count_dispatch(&self) -> ActiveRequest {
        let stats = &self.inner.shared.stats;
        stats.rq_total.inc();
        stats.rq_active.inc();
        ActiveRequest(stats.rq_active.clone())
    }

    /// An idle connection that can carry a request: from this worker's list, else from
    /// another's.
    fn pop_idle(&self) -> Option<Box<PooledH1>> {
        let current = self.inner.tls_generation();
        let lists = &self.inner.idle;
        // After a TLS rotation, close every idle connection made with an older configuration.
        if self.inner.idle_generation.swap(current, Ordering::AcqRel) != current {
            for list in lists.iter() {
                if let Ok(mut idle) = list.list.lock() {
                    idle.retain(|(c, _)| c.generation == current);
                }
            }
        }
        let own = self.inner.idle_slot();
        (0..lists.len()).find_map(|i| self.pop_idle_from(&lists[(own + i) % lists.len()], current))
    }

    fn pop_idle_from(&self, slot: &IdleSlot, current: u64) -> Option<Box<PooledH1>> {
        let mut idle = slot.list.lock().ok()?;
        let now = Instant::now();
        while let Some((mut conn, since)) = idle.pop() {
            // Connections the watch has not closed yet but cannot carry a request are dropped
            // (which closes them); so are those made with an older TLS configuration.
            if conn.generation != current
                || !self.inner.idle_usable(&mut conn, since, now, Waker::noop())
            {
                continue;
            }
            return Some(conn);
        }
        None
    }

    async fn send_h2(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let (mut sender, track) = loop {
            let shared = self.shared_h2_or_connect().await?;
            if self.admit_h2_stream(&shared.1) {
                break shared;
            }
        };
        if sender.ready().await.is_err() {
            return Err(UpstreamError::Reset);
        }
        // A cancelled HTTP/2 stream is reset on its own; the connection stays.
        let active = self.count_dispatch();
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp.map(|body| UpstreamBody::h2(body, active))),
            Err(e) => {
                // A stream error leaves the connection up; a connection error closes it.
                if sender.is_closed() {
                    track.destroyed_with_active_rq(&self.inner.shared, false);
                }
                Err(classify(&e))
            }
        }
    }

    /// The shared HTTP/2 connection, opened if there is none (one at a time).
    async fn shared_h2_or_connect(
        &self,
    ) -> Result<(http2::SendRequest<ProxyBody>, Arc<ConnTrack>), UpstreamError> {
        if let Some(s) = self.shared_h2() {
            return Ok(s);
        }
        let _guard = self.inner.h2_connecting.lock().await;
        if let Some(s) = self.shared_h2() {
            return Ok(s);
        }
        // One multiplexed connection per host: opened even over the limit (Envoy opens a
        // first connection anyway; the overflow is counted).
        let breakers = &self.inner.shared.stats.breakers;
        let guard = match breakers.try_host_connection(&self.inner.host_limit) {
            Ok(g) => g,
            Err(_) => breakers.force_connection(Some(&self.inner.host_limit)),
        };
        self.inner.shared.stats.rq_pending_total.inc();
        let conn = Box::pin(self.connect_h2(guard)).await?;
        let shared = (conn.sender.clone(), conn.track.clone());
        if let Ok(mut slot) = self.inner.h2.lock()
            && let Some(old) = slot.replace(conn)
        {
            old.close_locally();
        }
        Ok(shared)
    }

    /// Admits one more stream on an HTTP/2 connection, unless it already carried
    /// `max_requests_per_connection`. The stream that reaches the limit retires the connection
    /// (counted in `upstream_cx_max_requests`): new requests open another, and it closes once
    /// its streams finish.
    fn admit_h2_stream(&self, track: &Arc<ConnTrack>) -> bool {
        let stats = &self.inner.shared.stats;
        let n = track
            .streams
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let Some(max) = stats.max_requests_per_connection else {
            return true;
        };
        if n > max {
            // Not admitted: `streams` counts the streams the connection carried.
            track.streams.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if n == max {
            stats.cx_max_requests.inc();
            if let Ok(mut slot) = self.inner.h2.lock()
                && slot.as_ref().is_some_and(|c| Arc::ptr_eq(&c.track, track))
                && let Some(old) = slot.take()
            {
                old.close_locally();
            }
        }
        true
    }

    /// The shared HTTP/2 connection, if it is usable.
    fn shared_h2(&self) -> Option<(http2::SendRequest<ProxyBody>, Arc<ConnTrack>)> {
        let current = self.inner.tls_generation();
        let mut slot = self.inner.h2.lock().ok()?;
        match slot.as_ref() {
            Some(c) if !c.sender.is_closed() && c.generation == current => {
                Some((c.sender.clone(), c.track.clone()))
            }
            // A connection of an older TLS generation is replaced; its streams finish on it.
            Some(c) if !c.sender.is_closed() => {
                if let Some(old) = slot.take() {
                    old.close_locally();
                }
                None
            }
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Connects: TCP, then the cluster's TLS handshake if it has TLS, all within
    /// `connect_timeout` (`upstream_cx_connect_ms` when it is up).
    async fn connect_transport(&self) -> Result<Connected, UpstreamError> {
        let inner = &self.inner;
        let opened = tokio::time::Instant::now();
        let deadline = opened + inner.connect_timeout;
        let result = tokio::time::timeout_at(deadline, TcpStream::connect(inner.addr)).await;
        let failure = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                inner.shared.stats.cx_total.inc();
                inner.shared.stats.cx_active.inc();
                inner.shared.host.cx_total.fetch_add(1, Ordering::Relaxed);
                inner.shared.host.cx_active.fetch_add(1, Ordering::Relaxed);
                let (io, generation) = self.secure(stream, opened, deadline).await?;
                let stats = &inner.shared.stats;
                stats.cx_connect_ms.record(millis_since(opened));
                return Ok(Connected {
                    io: Counted::new(io, stats.cx_bytes.clone()),
                    generation,
                    opened,
                });
            }
            Ok(Err(_)) => UpstreamError::ConnectFailure,
            Err(_) => UpstreamError::ConnectTimeout,
        };
        self.count_failed_connect(failure, false, opened);
        Err(failure)
    }

    /// Counts a connect that failed, as Envoy does: `upstream_cx_connect_fail` (and
    /// `_connect_timeout`), the connection's end, and the request waiting for it
    /// (`upstream_rq_pending_failure_eject`). `tcp_connected`: the TCP connect had succeeded
    /// (and was counted) and the TLS handshake failed, which Envoy counts as a local close; a
    /// refused TCP connect is a remote close, a timed-out one a local close.
    fn count_failed_connect(
        &self,
        failure: UpstreamError,
        tcp_connected: bool,
        opened: tokio::time::Instant,
    ) {
        let (stats, host) = (&self.inner.shared.stats, &self.inner.shared.host);
        stats.cx_length_ms.record(millis_since(opened));
        let timed_out = failure == UpstreamError::ConnectTimeout;
        if timed_out {
            stats.cx_connect_timeout.inc();
        }
        stats.cx_connect_fail.inc();
        host.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
        if tcp_connected {
            stats.cx_active.dec();
            host.cx_active.fetch_sub(1, Ordering::Relaxed);
        } else {
            stats.cx_total.inc();
            host.cx_total.fetch_add(1, Ordering::Relaxed);
        }
        stats.cx_destroy.inc();
        if tcp_connected || timed_out {
            stats.cx_destroy_local.inc();
        } else {
            stats.cx_destroy_remote.inc();
        }
        stats.rq_pending_failure_eject.inc();
    }

    /// Runs the TLS handshake on a connected stream (a no-op without TLS). A failure closes the
    /// connection and counts as a connect failure (`upstream_cx_connect_fail`, plus
    /// `upstream_cx_connect_timeout` past the deadline), as Envoy counts a failed handshake.
    async fn secure(
        &self,
        stream: TcpStream,
        opened: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Result<(Transport, u64), UpstreamError> {
        let inner = &self.inner;
        let Some(tls) = &inner.shared.stats.tls else {
            return Ok((Transport::Plain(stream), 0));
        };
        let failure = match tokio::time::timeout_at(deadline, tls.handshake(stream)).await {
            Ok(Ok((stream, generation))) => {
                return Ok((Transport::Tls(Box::new(stream)), generation));
            }
            Ok(Err(e)) => {
                tracing::debug!(upstream = %inner.addr, error = ?e, "TLS handshake failed");
                UpstreamError::ConnectFailure
            }
            Err(_) => UpstreamError::ConnectTimeout,
        };
        self.count_failed_connect(failure, true, opened);
        Err(failure)
    }

    /// Spawns the connection driver; the active-connection gauges and the breaker's connection
    /// slot are released when it ends, and a pending request is woken. Returns the
    /// connection's state, through which the pool closes it.
    fn drive<F>(
        &self,
        conn: F,
        guard: ConnectionGuard,
        opened: tokio::time::Instant,
    ) -> Arc<ConnTrack>
    where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let track = Arc::new(ConnTrack::default());
        let state = track.clone();
        tokio::spawn(async move {
            let (local, with_active_rq) = match conn.await {
                Ok(()) => (state.local.load(Ordering::Relaxed), false),
                // hyper ends a connection with an error only mid-message (when no request
                // was there to take the error).
                Err(_) => (false, true),
            };
            // A failed request on the connection may have counted `_with_active_rq` already.
            let counted = state.active_counted.swap(true, Ordering::Relaxed);
            inner.shared.closed(
                Some(guard),
                local,
                with_active_rq && !counted,
                opened,
                state.streams.load(Ordering::Relaxed),
            );
        });
        track
    }

    async fn connect_h1(&self, guard: ConnectionGuard) -> Result<Box<PooledH1>, UpstreamError> {
        // Envoy counts the connection's protocol when it creates it, before it connects.
        self.inner.shared.stats.cx_http1_total.inc();
        let connected = self.connect_transport().await?;
        Ok(Box::new(PooledH1 {
            conn: super::http1::Connection::new(connected.io),
            generation: connected.generation,
            opened: connected.opened,
            active_rq: false,
            requests: 0,
            shared: self.inner.shared.clone(),
            guard: Some(guard),
        }))
    }

    async fn connect_h2(
        &self,
        guard: ConnectionGuard,
    ) -> Result<Conn<http2::SendRequest<ProxyBody>>, UpstreamError> {
        self.inner.shared.stats.cx_http2_total.inc();
        let connected = self.connect_transport().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(connected.io))
            .await
            .map_err(|_| UpstreamError::Reset)?;
        let track = self.drive(conn, guard, connected.opened);
        Ok(Conn {
            sender,
            generation: connected.generation,
            track,
        })
    }
}

/// A new upstream connection, counted (`upstream_cx_rx_bytes_total`, `_tx_bytes_total`).
struct Connected {
    io: Counted<Transport>,
    /// The TLS generation it was made with (0 without TLS).
    generation: u64,
    /// When its connect began.
    opened: tokio::time::Instant,
}

/// Whole milliseconds since `since`, as Envoy's timespan histograms record them.
fn millis_since(since: tokio::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn classify(e: &hyper::Error) -> UpstreamError {
    // hyper does not expose the h2 reason code as a type; its Debug output carries it.
    if format!("{e:?}").contains("REFUSED_STREAM") {
        UpstreamError::RefusedStream
    } else {
        UpstreamError::Reset
    }
}

#[cfg(test)]
mod tests;
