//! Per-host upstream connection pools.
//!
//! HTTP/1.1: idle keep-alive connections are reused; a connection goes back to the idle list
//! only when its response body has been read to the end. HTTP/2: one multiplexed connection per
//! host, re-established when it closes.
//!
//! TLS clusters: every connection runs the cluster's TLS handshake after the TCP connect (both
//! within `connect_timeout`); a failed handshake or verification is a connect failure, never
//! a plaintext fallback. Each connection remembers the generation of the client configuration
//! it was made with; after a rotation (a new generation) older connections are not reused:
//! idle HTTP/1.1 connections are closed, a busy one closes when its response ends, and the
//! shared HTTP/2 connection is replaced for new requests while its streams finish.

use super::body::{ProxyBody, UpstreamBody};
use crate::config::UpstreamProtocol;
use crate::resilience::breaker::{ConnectionGuard, HostConnectionLimit, PendingGuard};
use crate::runtime::host::PoolStats;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
            UpstreamError::RefusedStream => "remote refused stream reset",
            UpstreamError::Overflow => "overflow",
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
    stats: PoolStats,
    /// Per-host connection counters.
    host: HostConnStats,
    /// HTTP/1.1 idle connections with the time they became idle and their TLS generation
    /// (most recent last). The lock is held only to push or pop.
    idle: Mutex<Vec<(http1::SendRequest<ProxyBody>, Instant, u64)>>,
    /// The TLS generation the idle list was last purged for.
    idle_generation: AtomicU64,
    /// HTTP/2 shared connection, with its TLS generation.
    h2: Mutex<Option<(http2::SendRequest<ProxyBody>, u64)>>,
    /// Serialises HTTP/2 connection establishment so a burst opens one connection.
    h2_connecting: tokio::sync::Mutex<()>,
    /// The per-host connection limit.
    host_limit: HostConnectionLimit,
    /// Woken when a connection goes back to the idle list or closes (pending requests wait).
    released: tokio::sync::Notify,
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

/// Returns an HTTP/1.1 connection to its pool once the response body ends.
#[derive(Debug)]
pub struct Release {
    pool: Arc<PoolInner>,
    sender: Option<http1::SendRequest<ProxyBody>>,
    /// The TLS generation the connection was made with.
    generation: u64,
}

impl Release {
    /// Puts the connection back into the idle list, unless the TLS configuration was rotated
    /// since it was made (it is closed instead).
    pub fn release(mut self) {
        if let Some(s) = self.sender.take()
            && !s.is_closed()
            && self.generation == self.pool.tls_generation()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push((s, Instant::now(), self.generation));
            drop(idle);
            // Wake one request queued for a connection (max_connections reached).
            self.pool.released.notify_one();
        }
    }
}

impl PoolInner {
    /// The generation of the TLS client configuration in force (0 without TLS).
    fn tls_generation(&self) -> u64 {
        self.stats.tls.as_ref().map_or(0, |t| t.generation())
    }
}

/// An upstream connection: plain TCP, or TLS over TCP.
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
                released: tokio::sync::Notify::new(),
                addr,
                protocol,
                connect_timeout,
                idle_timeout,
                stats,
                host: HostConnStats::default(),
                idle: Mutex::new(Vec::new()),
                idle_generation: AtomicU64::new(0),
                h2: Mutex::new(None),
                h2_connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Per-host connection counters.
    pub fn host_stats(&self) -> &HostConnStats {
        &self.inner.host
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
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let inner = &self.inner;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Register for a wake-up before looking, so a release in between is not missed.
            let released = inner.released.notified();
            // Reuse an idle connection; if it turns out closed before the request went out,
            // try the next one (the request was not sent, so this is not a retry).
            while let Some((mut sender, generation)) = self.pop_idle() {
                if sender.ready().await.is_err() {
                    continue;
                }
                match self.dispatch(sender.try_send_request(req)).await {
                    Ok(resp) => return Ok(self.wrap_h1(resp, sender, generation)),
                    Err(mut e) => match e.take_message() {
                        Some(back) => req = back,
                        None => return Err(classify(e.error())),
                    },
                }
            }
            // No idle connection: the request is pending. Like Envoy, max_pending_requests is
            // checked first, then whether a new connection may open.
            let breakers = &inner.stats.breakers;
            if waiting.is_none() {
                let guard = breakers
                    .try_pending()
                    .map_err(|_| UpstreamError::Overflow)?;
                inner.stats.rq_pending_total.inc();
                inner
                    .host
                    .rq_pending_active
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                inner.stats.rq_pending_active.inc();
                waiting = Some(Waiting {
                    host: &inner.host,
                    cluster: &inner.stats.rq_pending_active,
                    _guard: guard,
                });
            }
            // Open a connection if the breakers allow one. A pool with no connection at all
            // opens one anyway (the overflow is still counted), as Envoy does.
            let guard = match breakers.try_host_connection(&inner.host_limit) {
                Ok(g) => Some(g),
                Err(_)
                    if inner
                        .host
                        .cx_active
                        .load(std::sync::atomic::Ordering::Relaxed)
                        == 0 =>
                {
                    Some(breakers.force_connection(Some(&inner.host_limit)))
                }
                Err(_) => None,
            };
            if let Some(guard) = guard {
                let (mut sender, generation) = self.connect_h1(guard).await?;
                drop(waiting);
                return match self.dispatch(sender.send_request(req)).await {
                    Ok(resp) => Ok(self.wrap_h1(resp, sender, generation)),
                    Err(e) => Err(classify(&e)),
                };
            }
            // Wait for a connection to be released.
            released.await;
        }
    }

    /// Counts a request in `upstream_rq_total`, and in `upstream_rq_active` while it is on a
    /// connection until its response headers (or an error) arrive; queued requests are pending,
    /// not active, and a pending overflow is not a request (as in Envoy).
    async fn dispatch<T>(&self, send: impl std::future::Future<Output = T>) -> T {
        /// Decrements the gauge even when the send is cancelled (a per-try or route timeout).
        struct Active<'a>(&'a crate::stats::Gauge);
        impl Drop for Active<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.inner.stats.rq_total.inc();
        self.inner.stats.rq_active.inc();
        let _active = Active(&self.inner.stats.rq_active);
        send.await
    }

    fn wrap_h1(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        sender: http1::SendRequest<ProxyBody>,
        generation: u64,
    ) -> http::Response<UpstreamBody> {
        let release = Release {
            pool: self.inner.clone(),
            sender: Some(sender),
            generation,
        };
        resp.map(|body| UpstreamBody::new(body, Some(release)))
    }

    fn pop_idle(&self) -> Option<(http1::SendRequest<ProxyBody>, u64)> {
        let current = self.inner.tls_generation();
        let mut idle = self.inner.idle.lock().ok()?;
        // After a TLS rotation, close every idle connection made with an older configuration.
        if self.inner.idle_generation.swap(current, Ordering::AcqRel) != current {
            idle.retain(|(_, _, g)| *g == current);
        }
        while let Some((s, since, generation)) = idle.pop() {
            // Connections idle for longer than `idle_timeout` are dropped (which closes them).
            let expired = self
                .inner
                .idle_timeout
                .is_some_and(|t| since.elapsed() >= t);
            if !expired && !s.is_closed() && generation == current {
                return Some((s, generation));
            }
        }
        None
    }

    async fn send_h2(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let mut sender = match self.shared_h2() {
            Some(s) => s,
            None => {
                let _guard = self.inner.h2_connecting.lock().await;
                match self.shared_h2() {
                    Some(s) => s,
                    None => {
                        // One multiplexed connection per host: opened even over the limit
                        // (Envoy opens a first connection anyway; the overflow is counted).
                        let breakers = &self.inner.stats.breakers;
                        let guard = match breakers.try_host_connection(&self.inner.host_limit) {
                            Ok(g) => g,
                            Err(_) => breakers.force_connection(Some(&self.inner.host_limit)),
                        };
                        self.inner.stats.rq_pending_total.inc();
                        let (s, generation) = self.connect_h2(guard).await?;
                        if let Ok(mut slot) = self.inner.h2.lock() {
                            *slot = Some((s.clone(), generation));
                        }
                        s
                    }
                }
            }
        };
        if sender.ready().await.is_err() {
            return Err(UpstreamError::Reset);
        }
        match self.dispatch(sender.send_request(req)).await {
            Ok(resp) => Ok(resp.map(|b| UpstreamBody::new(b, None))),
            Err(e) => Err(classify(&e)),
        }
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let current = self.inner.tls_generation();
        let mut slot = self.inner.h2.lock().ok()?;
        match slot.as_ref() {
            // A connection of an older TLS generation is replaced; its streams finish on it.
            Some((s, generation)) if !s.is_closed() && *generation == current => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Connects: TCP, then the cluster's TLS handshake if it has TLS, all within
    /// `connect_timeout`. Returns the transport and the TLS generation it was made with.
    async fn connect_transport(&self) -> Result<(Transport, u64), UpstreamError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.connect_timeout;
        let result = tokio::time::timeout_at(deadline, TcpStream::connect(inner.addr)).await;
        let failure = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                inner.stats.cx_total.inc();
                inner.stats.cx_active.inc();
                inner
                    .host
                    .cx_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                inner
                    .host
                    .cx_active
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return self.secure(stream, deadline).await;
            }
            Ok(Err(_)) => UpstreamError::ConnectFailure,
            Err(_) => {
                inner.stats.cx_connect_timeout.inc();
                UpstreamError::ConnectTimeout
            }
        };
        inner.stats.cx_total.inc();
        inner.stats.cx_connect_fail.inc();
        inner
            .host
            .cx_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner
            .host
            .cx_connect_fail
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(failure)
    }

    /// Runs the TLS handshake on a connected stream (a no-op without TLS). A failure closes the
    /// connection and counts as a connect failure (`upstream_cx_connect_fail`, plus
    /// `upstream_cx_connect_timeout` past the deadline), as Envoy counts a failed handshake.
    async fn secure(
        &self,
        stream: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<(Transport, u64), UpstreamError> {
        let inner = &self.inner;
        let Some(tls) = &inner.stats.tls else {
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
            Err(_) => {
                inner.stats.cx_connect_timeout.inc();
                UpstreamError::ConnectTimeout
            }
        };
        inner.stats.cx_connect_fail.inc();
        inner.stats.cx_active.dec();
        inner.stats.cx_destroy.inc();
        inner
            .host
            .cx_connect_fail
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner
            .host
            .cx_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Err(failure)
    }

    /// Spawns the connection driver; the active-connection gauges and the breaker's connection
    /// slot are released when it ends, and a pending request is woken.
    fn drive<F>(&self, conn: F, guard: ConnectionGuard)
    where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
            inner.released.notify_one();
            inner.stats.cx_active.dec();
            inner.stats.cx_destroy.inc();
            inner
                .host
                .cx_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    async fn connect_h1(
        &self,
        guard: ConnectionGuard,
    ) -> Result<(http1::SendRequest<ProxyBody>, u64), UpstreamError> {
        let (stream, generation) = self.connect_transport().await?;
        self.inner.stats.cx_http1_total.inc();
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Reset)?;
        self.drive(conn, guard);
        Ok((sender, generation))
    }

    async fn connect_h2(
        &self,
        guard: ConnectionGuard,
    ) -> Result<(http2::SendRequest<ProxyBody>, u64), UpstreamError> {
        let (stream, generation) = self.connect_transport().await?;
        self.inner.stats.cx_http2_total.inc();
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Reset)?;
        self.drive(conn, guard);
        Ok((sender, generation))
    }
}

fn classify(e: &hyper::Error) -> UpstreamError {
    // hyper does not expose the h2 reason code as a type; its Debug output carries it.
    if format!("{e:?}").contains("REFUSED_STREAM") {
        UpstreamError::RefusedStream
    } else {
        UpstreamError::Reset
    }
}
