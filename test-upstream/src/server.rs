//! The listener, the connection loop and the [`Upstream`] handle.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, TRAILER};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::behaviour::{Action, Behaviour, Echo, Plan, ResetKind};
use crate::body::ScriptedBody;
use crate::fault::FaultConfig;
use crate::log::{AttemptLog, Outcome, PendingAttempt};
use crate::request::RequestInfo;
use crate::tls::{CLIENT_SERIAL_HEADER, ConnTls, TLS_ALPN_HEADER, TLS_VERSION_HEADER, TlsSettings};

/// Response header naming the instance that served the request.
pub const INSTANCE_HEADER: &str = "x-upstream-instance";

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Response body type: buffered, streamed, or failing mid-way.
type Body = BoxBody<Bytes, io::Error>;

/// Counters of one upstream instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted (including ones that never sent a request).
    pub connections: u64,
    /// Connections whose first request was HTTP/1.x.
    pub http1_connections: u64,
    /// Connections whose first request was HTTP/2 (h2c).
    pub http2_connections: u64,
    /// Requests received.
    pub requests: u64,
    /// HTTP/1.x requests received.
    pub http1_requests: u64,
    /// HTTP/2 requests received.
    pub http2_requests: u64,
    /// TLS handshakes completed (TLS instances only).
    pub tls_handshakes: u64,
    /// TLS handshakes that failed or timed out, e.g. a client without the required
    /// certificate (TLS instances only).
    pub tls_handshake_errors: u64,
}

/// State shared by all connections of one upstream.
struct Shared {
    name: String,
    behaviour: Arc<dyn Behaviour>,
    /// Fast mode body (see [`Behaviour::static_body`]).
    static_body: Option<Bytes>,
    /// The instance name as a header value, if it is a valid one.
    instance_header: Option<HeaderValue>,
    log: Arc<AttemptLog>,
    /// TLS termination, if configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Close every connection after its first response.
    close_after_response: bool,
    connections: AtomicU64,
    http1_connections: AtomicU64,
    http2_connections: AtomicU64,
    requests: AtomicU64,
    http1_requests: AtomicU64,
    http2_requests: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_handshake_errors: AtomicU64,
    /// Connections per client certificate serial.
    client_serials: Mutex<BTreeMap<String, u64>>,
}

/// Per-connection state.
#[derive(Default)]
struct Conn {
    /// Whether the connection has been counted as HTTP/1 or HTTP/2 yet.
    classified: AtomicBool,
    /// What the TLS handshake established (empty for plaintext).
    tls: ConnTls,
    /// Signalled when the connection should close after the response in flight.
    close: Notify,
}

/// A running upstream server. Dropping it (or calling [`Upstream::shutdown`])
/// stops the accept loop, closes the listener and aborts open connections.
pub struct Upstream {
    /// The bound listener address.
    pub addr: SocketAddr,
    /// Instance name, reported in `x-upstream-instance` and the JSON body.
    pub name: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures and starts an [`Upstream`]; see [`Upstream::builder`].
pub struct UpstreamBuilder {
    name: String,
    addr: SocketAddr,
    behaviour: Arc<dyn Behaviour>,
    log: Option<Arc<AttemptLog>>,
    tls: Option<TlsSettings>,
    close_after_response: bool,
}

impl std::fmt::Debug for UpstreamBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("shared_log", &self.log.is_some())
            .field("tls", &self.tls)
            .field("close_after_response", &self.close_after_response)
            .finish_non_exhaustive()
    }
}

impl UpstreamBuilder {
    /// Address to bind (default `127.0.0.1:0`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// How to answer requests (default [`Echo`]).
    pub fn behaviour(mut self, behaviour: Arc<dyn Behaviour>) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// Shorthand for `.behaviour(Arc::new(config))`.
    pub fn faults(self, config: FaultConfig) -> Self {
        self.behaviour(Arc::new(config))
    }

    /// Records attempts into `log` (default: a fresh log of this instance's
    /// own). Pass the same log to several instances to count attempts across
    /// them.
    pub fn log(mut self, log: Arc<AttemptLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Terminates TLS on every connection (see [`TlsSettings`]): with a client CA, clients
    /// must present a certificate from it. Responses then carry
    /// [`CLIENT_SERIAL_HEADER`](crate::CLIENT_SERIAL_HEADER) and
    /// [`TLS_VERSION_HEADER`](crate::TLS_VERSION_HEADER).
    pub fn tls(mut self, tls: TlsSettings) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Closes every connection after its first response (HTTP/1.1: `connection: close`;
    /// HTTP/2: a graceful GOAWAY), so that each request gets a new connection (and, with TLS,
    /// a new handshake). Default: connections are kept alive.
    pub fn close_after_response(mut self, close: bool) -> Self {
        self.close_after_response = close;
        self
    }

    /// Binds the address and serves in a tokio task. Fails if the address cannot be bound or
    /// the TLS files cannot be used (`InvalidInput`, naming the file).
    pub async fn start(self) -> io::Result<Upstream> {
        let tls = self.tls.as_ref().map(TlsSettings::acceptor).transpose()?;
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            static_body: self.behaviour.static_body(),
            instance_header: HeaderValue::from_str(&self.name).ok(),
            behaviour: self.behaviour,
            log: self.log.unwrap_or_else(AttemptLog::shared),
            tls,
            close_after_response: self.close_after_response,
            connections: AtomicU64::new(0),
            http1_connections: AtomicU64::new(0),
            http2_connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            http1_requests: AtomicU64::new(0),
            http2_requests: AtomicU64::new(0),
            tls_handshakes: AtomicU64::new(0),
            tls_handshake_errors: AtomicU64::new(0),
            client_serials: Mutex::new(BTreeMap::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Upstream {
            addr,
            name: self.name,
            shared,
            task: Some(task),
        })
    }
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves with the [`Echo`] behaviour in a tokio task.
    pub async fn start(name: &str) -> io::Result<Upstream> {
        Self::builder(name).start().await
    }

    /// Binds `addr` and serves with the [`Echo`] behaviour in a tokio task.
    pub async fn start_on(name: &str, addr: SocketAddr) -> io::Result<Upstream> {
        Self::builder(name).addr(addr).start().await
    }

    /// Binds `addr` and serves with the given behaviour in a tokio task.
    pub async fn start_with(
        name: &str,
        addr: SocketAddr,
        behaviour: Arc<dyn Behaviour>,
    ) -> io::Result<Upstream> {
        Self::builder(name)
            .addr(addr)
            .behaviour(behaviour)
            .start()
            .await
    }

    /// Starts one instance per name on `127.0.0.1:0`, all with `behaviour`
    /// and all recording into one shared [`AttemptLog`] (so attempt numbers,
    /// and the per-attempt fault sequences, count across the group).
    pub async fn start_group(
        names: &[&str],
        behaviour: Arc<dyn Behaviour>,
    ) -> io::Result<Vec<Upstream>> {
        let log = AttemptLog::shared();
        let mut group = Vec::with_capacity(names.len());
        for name in names {
            let up = Self::builder(name)
                .behaviour(behaviour.clone())
                .log(log.clone())
                .start()
                .await?;
            group.push(up);
        }
        Ok(group)
    }

    /// A builder for an instance named `name`: `127.0.0.1:0`, [`Echo`], own log.
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_owned(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            behaviour: Arc::new(Echo),
            log: None,
            tls: None,
            close_after_response: false,
        }
    }

    /// Number of requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Number of TCP connections accepted so far (see [`Upstream::stats`]
    /// for the HTTP/1 vs HTTP/2 split).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// All counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            connections: s.connections.load(Ordering::SeqCst),
            http1_connections: s.http1_connections.load(Ordering::SeqCst),
            http2_connections: s.http2_connections.load(Ordering::SeqCst),
            requests: s.requests.load(Ordering::SeqCst),
            http1_requests: s.http1_requests.load(Ordering::SeqCst),
            http2_requests: s.http2_requests.load(Ordering::SeqCst),
            tls_handshakes: s.tls_handshakes.load(Ordering::SeqCst),
            tls_handshake_errors: s.tls_handshake_errors.load(Ordering::SeqCst),
        }
    }

    /// How many TLS connections presented each client certificate, by serial (lowercase hex,
    /// as in [`CLIENT_SERIAL_HEADER`](crate::CLIENT_SERIAL_HEADER)).
    pub fn client_serials(&self) -> BTreeMap<String, u64> {
        self.shared
            .client_serials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether this instance terminates TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// The attempt log this instance records into (possibly shared).
    pub fn log(&self) -> &Arc<AttemptLog> {
        &self.shared.log
    }

    /// Stops serving. The listener is closed as soon as the runtime processes
    /// the cancellation; use [`Upstream::stop`] to wait for that.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The result is always "cancelled" (or a panic we cannot act on).
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An address nothing listens on, standing for a dead host: binds
/// `127.0.0.1:0`, takes the port and closes the listener, so connecting gets
/// "connection refused".
///
/// Small race: until the caller uses the address, another socket on the
/// machine may be given the same port (the kernel hands ephemeral ports out
/// in a way that makes immediate reuse unlikely, but not impossible).
pub fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        // Binding port 0 on loopback does not fail in practice; if it does,
        // port 1 (tcpmux) is as dead as it gets on a test machine.
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 1)))
}

/// Accepts connections until cancelled. Connection tasks live in a `JoinSet`
/// owned by this future, so cancelling it aborts them too.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                // Transient errors (e.g. EMFILE, ECONNABORTED): keep going, but
                // don't spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one connection: the TLS handshake if configured, then HTTP/1.1 or HTTP/2
/// (auto-detected: h2c by its preface in plaintext, and whatever ALPN chose under TLS).
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = shared.tls.clone() else {
        return serve_http(stream, shared, Conn::default()).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            shared.tls_handshakes.fetch_add(1, Ordering::SeqCst);
            let info = ConnTls::of(tls.get_ref().1);
            if let Some(serial) = info.client_serial.as_ref().and_then(|v| v.to_str().ok()) {
                *shared
                    .client_serials
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(serial.to_owned())
                    .or_default() += 1;
            }
            let conn = Conn {
                tls: info,
                ..Conn::default()
            };
            serve_http(tls, shared, conn).await;
        }
        // Handshake failures (no or untrusted client certificate, protocol errors) and
        // timeouts only affect this connection.
        Ok(Err(_)) | Err(_) => {
            shared.tls_handshake_errors.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (auto-detected) over `io` until the client goes away, or, with
/// `close_after_response`, until the first response is out.
async fn serve_http<I>(io: I, shared: Arc<Shared>, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { handle(&shared, &conn, req).await }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Connection errors (client resets, protocol errors, scripted resets)
    // only affect this connection; there is nobody to report them to.
    tokio::select! {
        _ = connection.as_mut() => {}
        () = conn.close.notified() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The service error for `x-fault-reset: before-headers`: hyper closes an
/// HTTP/1 connection and resets an HTTP/2 stream without answering.
#[derive(Debug)]
struct ScriptedReset;

impl std::fmt::Display for ScriptedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("x-fault-reset: before-headers")
    }
}

impl std::error::Error for ScriptedReset {}

/// Answers one request according to the behaviour.
async fn handle(
    shared: &Shared,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Body>, ScriptedReset> {
    let seq = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let h2 = req.version() == Version::HTTP_2;
    let (requests, connections) = if h2 {
        (&shared.http2_requests, &shared.http2_connections)
    } else {
        (&shared.http1_requests, &shared.http1_connections)
    };
    requests.fetch_add(1, Ordering::SeqCst);
    if !conn.classified.swap(true, Ordering::SeqCst) {
        connections.fetch_add(1, Ordering::SeqCst);
    }
    if shared.close_after_response {
        conn.close.notify_one();
    }
    if let Some(body) = &shared.static_body {
        let mut resp = static_response(shared, body.clone(), req.into_body()).await;
        connection_headers(shared, conn, h2, resp.headers_mut());
        return Ok(resp);
    }

    let (parts, body) = req.into_parts();
    let mut info = RequestInfo::from_parts(&parts, seq);
    let pending = info.request_id.clone().map(|id| {
        let (pending, attempt) = PendingAttempt::begin(&shared.log, id, &shared.name);
        info.attempt = attempt;
        pending
    });
    // Drain the request body so HTTP/1.1 connections can be reused; a broken
    // body doesn't change the answer.
    let _ = body.collect().await;
    let plan = match shared.behaviour.decide(&info) {
        Action::Respond { status } => Plan::new(status),
        Action::Plan(plan) => plan,
    };
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    let (result, outcome) = if plan.reset == Some(ResetKind::BeforeHeaders) {
        (Err(ScriptedReset), Outcome::Reset(ResetKind::BeforeHeaders))
    } else {
        let (mut resp, outcome) = respond(shared, &info, &plan);
        connection_headers(shared, conn, h2, resp.headers_mut());
        (Ok(resp), outcome)
    };
    if let Some(pending) = pending {
        pending.finish(outcome);
    }
    result
}

/// The response headers that describe the connection: the client certificate serial, TLS
/// version and ALPN protocol under TLS, and `connection: close` on HTTP/1 with `close_after_response` (so the
/// client never reuses a connection the upstream is about to close).
fn connection_headers(shared: &Shared, conn: &Conn, h2: bool, headers: &mut HeaderMap) {
    if let Some(serial) = &conn.tls.client_serial {
        headers.insert(CLIENT_SERIAL_HEADER, serial.clone());
    }
    if let Some(version) = &conn.tls.version {
        headers.insert(TLS_VERSION_HEADER, version.clone());
    }
    if let Some(alpn) = &conn.tls.alpn {
        headers.insert(TLS_ALPN_HEADER, alpn.clone());
    }
    if shared.close_after_response && !h2 {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Builds the response for a plan that does answer (possibly aborting the
/// body), and the outcome to log.
fn respond(shared: &Shared, info: &RequestInfo, plan: &Plan) -> (Response<Body>, Outcome) {
    let abort = plan.reset == Some(ResetKind::AfterHeaders);
    let (chunks, interval) = plan
        .slow_body
        .map_or((1, Default::default()), |s| (s.chunks, s.interval));
    let mut headers = HeaderMap::new();
    if let Some(v) = &shared.instance_header {
        headers.insert(INSTANCE_HEADER, v.clone());
    }
    let (status, body, outcome) = if let Some(grpc) = plan.grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let mut status_headers = HeaderMap::new();
        status_headers.insert(GRPC_STATUS, HeaderValue::from(grpc.status));
        if grpc.status != 0 {
            status_headers.insert(
                GRPC_MESSAGE,
                HeaderValue::from_static("injected by x-fault-grpc-status"),
            );
        }
        let body = if grpc.in_headers {
            headers.extend(status_headers);
            if abort {
                ScriptedBody::new(Bytes::new(), 1, interval)
                    .aborting()
                    .boxed()
            } else {
                Empty::new().map_err(|never| match never {}).boxed()
            }
        } else {
            // HTTP/1.1 only sends trailers that were announced (and only to
            // clients that sent `te: trailers`).
            headers.insert(
                TRAILER,
                HeaderValue::from_static("grpc-status, grpc-message"),
            );
            let message = if grpc.status == 0 {
                grpc_frame(info.echo_json(&shared.name).to_string().as_bytes())
            } else {
                Bytes::new()
            };
            let body = ScriptedBody::new(message, chunks, interval).with_trailers(status_headers);
            if abort { body.aborting() } else { body }.boxed()
        };
        (StatusCode::OK, body, Outcome::Grpc(grpc.status))
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let json = Bytes::from(info.echo_json(&shared.name).to_string());
        let body = if abort {
            ScriptedBody::new(json, chunks, interval).aborting().boxed()
        } else if plan.slow_body.is_some() {
            ScriptedBody::new(json, chunks, interval).boxed()
        } else {
            Full::new(json).map_err(|never| match never {}).boxed()
        };
        (plan.status, body, Outcome::Status(plan.status.as_u16()))
    };
    let outcome = if abort {
        Outcome::Reset(ResetKind::AfterHeaders)
    } else {
        outcome
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    (resp, outcome)
}

/// One length-prefixed, uncompressed gRPC message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.put_slice(message);
    buf.freeze()
}

/// Fast mode: drains the request body without buffering it and answers `200`
/// with the static body.
async fn static_response(shared: &Shared, body: Bytes, mut incoming: Incoming) -> Response<Body> {
    while let Some(frame) = incoming.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(v) = &shared.instance_header {
        headers.insert(INSTANCE_HEADER, v.clone());
    }
    resp
}
