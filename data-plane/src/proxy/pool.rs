//! Per-host upstream connection pools.
//!
//! HTTP/1.1: idle keep-alive connections are reused; a connection goes back to the idle list
//! only when its response body has been read to the end. HTTP/2: one multiplexed connection per
//! host, re-established when it closes.

use super::body::{ProxyBody, UpstreamBody};
use crate::config::UpstreamProtocol;
use crate::resilience::breaker::{ConnectionGuard, HostConnectionLimit, PendingGuard};
use crate::runtime::host::PoolStats;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why an upstream attempt failed before a response arrived (Envoy's reset reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The TCP connection could not be established (refused, unreachable).
    ConnectFailure,
    /// The TCP connect did not finish within `connect_timeout`.
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
    /// HTTP/1.1 idle connections with the time they became idle (most recent last). The lock
    /// is held only to push or pop.
    idle: Mutex<Vec<(http1::SendRequest<ProxyBody>, Instant)>>,
    /// HTTP/2 shared connection.
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Serialises HTTP/2 connection establishment so a burst opens one connection.
    h2_connecting: tokio::sync::Mutex<()>,
    /// The per-host connection limit.
    host_limit: HostConnectionLimit,
    /// Woken when a connection goes back to the idle list or closes (pending requests wait).
    released: tokio::sync::Notify,
}

/// Counts a request in `rq_pending_active` while it waits for a connection.
struct Waiting<'a> {
    host: &'a HostConnStats,
    _guard: PendingGuard,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.host.rq_pending_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Returns an HTTP/1.1 connection to its pool once the response body ends.
#[derive(Debug)]
pub struct Release {
    pool: Arc<PoolInner>,
    sender: Option<http1::SendRequest<ProxyBody>>,
}

impl Release {
    /// Puts the connection back into the idle list.
    pub fn release(mut self) {
        if let Some(s) = self.sender.take()
            && !s.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push((s, Instant::now()));
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
            while let Some(mut sender) = self.pop_idle() {
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(self.wrap_h1(resp, sender)),
                    Err(mut e) => match e.take_message() {
                        Some(back) => req = back,
                        None => return Err(classify(e.error())),
                    },
                }
            }
            // Open a connection if the breakers allow one. Like Envoy, a pool with no
            // connection at all opens one anyway (the overflow is still counted).
            let breakers = &inner.stats.breakers;
            let guard = match breakers.try_host_connection(&inner.host_limit) {
                Ok(g) => Some(g),
                Err(_) if inner.host.cx_active.load(std::sync::atomic::Ordering::Relaxed) == 0 => {
                    Some(breakers.force_connection(Some(&inner.host_limit)))
                }
                Err(_) => None,
            };
            if let Some(guard) = guard {
                if waiting.is_none() {
                    inner.stats.rq_pending_total.inc();
                }
                drop(waiting);
                let mut sender = self.connect_h1(guard).await?;
                return match sender.send_request(req).await {
                    Ok(resp) => Ok(self.wrap_h1(resp, sender)),
                    Err(e) => Err(classify(&e)),
                };
            }
            // Wait for a connection to be released, within max_pending_requests.
            if waiting.is_none() {
                let guard = breakers.try_pending().map_err(|_| UpstreamError::Overflow)?;
                inner.stats.rq_pending_total.inc();
                inner
                    .host
                    .rq_pending_active
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                waiting = Some(Waiting {
                    host: &inner.host,
                    _guard: guard,
                });
            }
            released.await;
        }
    }

    fn wrap_h1(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        sender: http1::SendRequest<ProxyBody>,
    ) -> http::Response<UpstreamBody> {
        let release = Release {
            pool: self.inner.clone(),
            sender: Some(sender),
        };
        resp.map(|body| UpstreamBody::new(body, Some(release)))
    }

    fn pop_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.inner.idle.lock().ok()?;
        while let Some((s, since)) = idle.pop() {
            // Connections idle for longer than `idle_timeout` are dropped (which closes them).
            let expired = self
                .inner
                .idle_timeout
                .is_some_and(|t| since.elapsed() >= t);
            if !expired && !s.is_closed() {
                return Some(s);
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
                        let s = self.connect_h2(guard).await?;
                        if let Ok(mut slot) = self.inner.h2.lock() {
                            *slot = Some(s.clone());
                        }
                        s
                    }
                }
            }
        };
        if sender.ready().await.is_err() {
            return Err(UpstreamError::Reset);
        }
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| UpstreamBody::new(b, None))),
            Err(e) => Err(classify(&e)),
        }
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let mut slot = self.inner.h2.lock().ok()?;
        match slot.as_ref() {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let inner = &self.inner;
        let result =
            tokio::time::timeout(inner.connect_timeout, TcpStream::connect(inner.addr)).await;
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
                return Ok(stream);
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
    ) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
        let stream = self.connect_tcp().await?;
        self.inner.stats.cx_http1_total.inc();
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Reset)?;
        self.drive(conn, guard);
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        guard: ConnectionGuard,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let stream = self.connect_tcp().await?;
        self.inner.stats.cx_http2_total.inc();
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Reset)?;
        self.drive(conn, guard);
        Ok(sender)
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
