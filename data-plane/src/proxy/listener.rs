//! Listeners: binding (so a bad address is a NACK), activation once warm, accept loops that
//! speak HTTP/1.1 and h2c, and graceful removal.
//!
//! With worker threads ([`Workers::start`]) every listener has one socket per worker, bound
//! with `SO_REUSEPORT` to the same address (Envoy's default on Linux, `enable_reuse_port`), so
//! the kernel spreads new connections over the workers and each worker accepts and serves its
//! own connections on its own event loop.

use super::conn_limits::{ConnLife, ConnStats};
use super::h2_server;
use super::http1_server;
use super::io_stats::ByteCounters;
use super::workers::Workers;
use crate::config::{Codec, ListenerConfig};
use crate::runtime::Runtime;
use crate::stats::{Counter, Gauge, Histogram, Store};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// `http.<stat_prefix>.*` handles.
#[derive(Debug)]
pub struct HttpStats {
    /// `downstream_rq_total`.
    pub rq_total: Counter,
    /// `downstream_rq_active`.
    pub rq_active: Gauge,
    /// `downstream_rq_completed` (see [`HttpStats::count_response`]).
    rq_completed: Counter,
    /// `downstream_rq_http1_total`.
    pub rq_http1_total: Counter,
    /// `downstream_rq_http2_total`.
    pub rq_http2_total: Counter,
    /// `downstream_rq_time`.
    pub rq_time: Histogram,
    /// `rq_total`: requests that reached the router (not those the connection manager refused).
    pub router_rq_total: Counter,
    /// `rq_direct_response`: requests a `direct_response` route answered.
    pub rq_direct_response: Counter,
    /// `no_route`.
    pub no_route: Counter,
    /// `no_cluster`.
    pub no_cluster: Counter,
    /// `downstream_cx_total`.
    pub cx_total: Counter,
    /// `downstream_cx_active`.
    pub cx_active: Gauge,
    /// `downstream_cx_destroy`: connections closed (by either side).
    pub cx_destroy: Counter,
    /// `downstream_cx_destroy_local`: HTTP/1.1 connections the proxy closed.
    pub cx_destroy_local: Counter,
    /// `downstream_cx_destroy_remote`: HTTP/1.1 connections the client closed.
    pub cx_destroy_remote: Counter,
    /// `downstream_cx_destroy_active_rq`: HTTP/1.1 connections closed with a request in flight.
    pub cx_destroy_active_rq: Counter,
    /// `downstream_cx_destroy_local_active_rq`.
    pub cx_destroy_local_active_rq: Counter,
    /// `downstream_cx_destroy_remote_active_rq`.
    pub cx_destroy_remote_active_rq: Counter,
    /// `downstream_cx_delayed_close_timeout`: closing connections whose client did not close
    /// its side within the delayed-close time.
    pub cx_delayed_close_timeout: Counter,
    /// `downstream_cx_http1_total`: connections that speak HTTP/1.1.
    pub cx_http1_total: Counter,
    /// `downstream_cx_http2_total`: connections that speak HTTP/2 (h2c).
    pub cx_http2_total: Counter,
    /// `downstream_cx_http1_active`.
    pub cx_http1_active: Gauge,
    /// `downstream_cx_http2_active`.
    pub cx_http2_active: Gauge,
    /// `downstream_cx_protocol_error`: requests Envoy's HTTP/1.1 codec would refuse.
    pub cx_protocol_error: Counter,
    /// `downstream_rq_rx_reset`: requests that ended before their response was sent in full
    /// (the client went away), that Envoy resets after refusing them, or that the proxy reset.
    pub rq_rx_reset: Counter,
    /// `downstream_rq_tx_reset`: requests the proxy reset (the response body failed midway).
    pub rq_tx_reset: Counter,
    /// `downstream_rq_ws_on_non_ws_route`: upgrade requests (no route allows one).
    pub rq_ws_on_non_ws_route: Counter,
    /// `downstream_rq_failed_path_normalization`: targets Envoy will not route (a `#fragment`).
    pub rq_failed_path_normalization: Counter,
    /// `downstream_rq_response_before_rq_complete`: responses whose head was sent before their
    /// request was complete.
    pub rq_response_before_rq_complete: Counter,
    /// `downstream_cx_rx_bytes_total` and `downstream_cx_tx_bytes_total`.
    pub cx_bytes: ByteCounters,
    /// `downstream_cx_length_ms`: connections' lifetimes.
    pub cx_length_ms: Histogram,
    /// `downstream_rq_idle_timeout`: streams the stream idle timeout ended.
    pub rq_idle_timeout: Counter,
    /// `downstream_rq_timeout`: requests the request timeout ended.
    pub rq_timeout: Counter,
    /// `downstream_rq_header_timeout`: request heads the request headers timeout ended.
    pub rq_header_timeout: Counter,
    /// `downstream_rq_max_duration_reached`: streams `max_stream_duration` ended.
    pub rq_max_duration_reached: Counter,
    /// `downstream_cx_idle_timeout`, `downstream_cx_max_duration_reached` and
    /// `downstream_cx_max_requests_reached`: the connection limits' stats.
    pub conn: ConnStats,
    /// Envoy's codec stats (`http1.*`, `http2.*`) of `headers_with_underscores_action`.
    pub codec: [CodecStats; 2],
    /// The HTTP/2 codec's stats of the other header limits.
    pub http2_limits: H2LimitStats,
    classes: [Counter; 5],
    /// `listener.<scope>.http.<prefix>.downstream_rq_<class>xx`: Envoy's per-listener copies.
    listener_classes: [Counter; 5],
    /// `listener.<scope>.http.<prefix>.downstream_rq_completed`.
    listener_rq_completed: Counter,
}

impl HttpStats {
    /// The stats of connection manager `prefix` on the listener whose stats scope is
    /// `listener_scope` (`listener.127.0.0.1_10000`).
    fn new(store: &Store, prefix: &str, listener_scope: &str) -> Self {
        let c = |s: &str| store.counter(&format!("http.{prefix}.{s}"));
        let g = |s: &str| store.gauge(&format!("http.{prefix}.{s}"));
        let l = |s: &str| store.counter(&format!("{listener_scope}.http.{prefix}.{s}"));
        HttpStats {
            rq_total: c("downstream_rq_total"),
            rq_active: g("downstream_rq_active"),
            rq_completed: c("downstream_rq_completed"),
            rq_http1_total: c("downstream_rq_http1_total"),
            rq_http2_total: c("downstream_rq_http2_total"),
            rq_time: store.histogram(&format!("http.{prefix}.downstream_rq_time")),
            router_rq_total: c("rq_total"),
            rq_direct_response: c("rq_direct_response"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            cx_total: c("downstream_cx_total"),
            cx_active: g("downstream_cx_active"),
            cx_destroy: c("downstream_cx_destroy"),
            cx_destroy_local: c("downstream_cx_destroy_local"),
            cx_destroy_remote: c("downstream_cx_destroy_remote"),
            cx_destroy_active_rq: c("downstream_cx_destroy_active_rq"),
            cx_destroy_local_active_rq: c("downstream_cx_destroy_local_active_rq"),
            cx_destroy_remote_active_rq: c("downstream_cx_destroy_remote_active_rq"),
            cx_delayed_close_timeout: c("downstream_cx_delayed_close_timeout"),
            cx_http1_total: c("downstream_cx_http1_total"),
            cx_http2_total: c("downstream_cx_http2_total"),
            cx_http1_active: g("downstream_cx_http1_active"),
            cx_http2_active: g("downstream_cx_http2_active"),
            cx_protocol_error: c("downstream_cx_protocol_error"),
            rq_rx_reset: c("downstream_rq_rx_reset"),
            rq_tx_reset: c("downstream_rq_tx_reset"),
            rq_ws_on_non_ws_route: c("downstream_rq_ws_on_non_ws_route"),
            rq_failed_path_normalization: c("downstream_rq_failed_path_normalization"),
            rq_response_before_rq_complete: c("downstream_rq_response_before_rq_complete"),
            cx_bytes: ByteCounters {
                rx: c("downstream_cx_rx_bytes_total"),
                tx: c("downstream_cx_tx_bytes_total"),
            },
            cx_length_ms: store.histogram(&format!("http.{prefix}.downstream_cx_length_ms")),
            rq_idle_timeout: c("downstream_rq_idle_timeout"),
            rq_timeout: c("downstream_rq_timeout"),
            rq_header_timeout: c("downstream_rq_header_timeout"),
            rq_max_duration_reached: c("downstream_rq_max_duration_reached"),
            conn: ConnStats::new(store, prefix),
            codec: [
                CodecStats::new(store, "http1"),
                CodecStats::new(store, "http2"),
            ],
            http2_limits: H2LimitStats {
                header_overflow: store.counter("http2.header_overflow"),
                header_list_size_too_large: store.counter("http2.header_list_size_too_large"),
            },
            classes: [
                c("downstream_rq_1xx"),
                c("downstream_rq_2xx"),
                c("downstream_rq_3xx"),
                c("downstream_rq_4xx"),
                c("downstream_rq_5xx"),
            ],
            listener_classes: [
                l("downstream_rq_1xx"),
                l("downstream_rq_2xx"),
                l("downstream_rq_3xx"),
                l("downstream_rq_4xx"),
                l("downstream_rq_5xx"),
            ],
            listener_rq_completed: l("downstream_rq_completed"),
        }
    }

    /// Counts a response (its head, as Envoy's connection manager charges it when it encodes
    /// the head): `downstream_rq_completed` and `downstream_rq_<class>xx`, also under the
    /// listener's scope.
    pub fn count_response(&self, status: u16) {
        self.rq_completed.inc();
        self.listener_rq_completed.inc();
        let class = usize::from(status / 100);
        if (1..=5).contains(&class) {
            self.classes[class - 1].inc();
            self.listener_classes[class - 1].inc();
        }
    }
}

/// The codec stats of `headers_with_underscores_action`, as Envoy names them: in the codec's
/// own scope (`http1.` or `http2.`), shared by every connection manager.
#[derive(Debug)]
pub struct CodecStats {
    /// `<codec>.dropped_headers_with_underscores`.
    pub dropped: Counter,
    /// `<codec>.requests_rejected_with_underscores_in_headers`.
    pub rejected: Counter,
}

/// The HTTP/2 codec's stats of the request header limits (HTTP/1.1 answers 431 instead).
#[derive(Debug)]
pub struct H2LimitStats {
    /// `http2.header_overflow`: more headers than `max_headers_count`.
    pub header_overflow: Counter,
    /// `http2.header_list_size_too_large`: a header list over `max_request_headers_kb`.
    pub header_list_size_too_large: Counter,
}

impl CodecStats {
    fn new(store: &Store, codec: &str) -> Self {
        CodecStats {
            dropped: store.counter(&format!("{codec}.dropped_headers_with_underscores")),
            rejected: store.counter(&format!(
                "{codec}.requests_rejected_with_underscores_in_headers"
            )),
        }
    }
}

/// A listener's configuration and the stats that go with it, swapped together.
#[derive(Debug)]
pub struct ListenerState {
    /// The validated config.
    pub config: ListenerConfig,
    /// Its `http.<prefix>.*` stats.
    pub stats: HttpStats,
    /// The `server` response header value.
    pub server_header: HeaderValue,
    /// The HCM's `via`, as a header value.
    pub via: Option<HeaderValue>,
    /// The port the listener is bound to (`strip_matching_host_port`).
    pub local_port: u16,
    /// With `add_user_agent`: the local `node.cluster` (`x-envoy-downstream-service-cluster`,
    /// and `user-agent` when a request has none) and, when not empty, `node.id`
    /// (`x-envoy-downstream-service-node`).
    pub user_agent: Option<(HeaderValue, Option<HeaderValue>)>,
}

/// What every connection of a listener shares.
#[derive(Debug)]
pub struct ListenerCtx {
    /// Current config and stats.
    pub state: ArcSwap<ListenerState>,
    /// The proxy-wide runtime snapshot.
    pub runtime: Arc<ArcSwap<Runtime>>,
}

struct Running {
    address: SocketAddr,
    /// The address bound (`address` with the port chosen when it asked for port 0).
    local: SocketAddr,
    ctx: Arc<ListenerCtx>,
    /// Bound but not yet accepting (warming): one socket per worker.
    sockets: Option<Vec<TcpListener>>,
    shutdown: watch::Sender<bool>,
    active: bool,
}

/// Owns every dynamic and static listener.
pub struct ListenerManager {
    store: Store,
    runtime: Arc<ArcSwap<Runtime>>,
    workers: Workers,
    listeners: Mutex<HashMap<String, Running>>,
    /// The local node (`node.id`, `node.cluster`): what `add_user_agent` writes.
    local_node: LocalNode,
}

/// The node this proxy runs as, for the connection manager's `add_user_agent`.
#[derive(Debug, Clone, Default)]
pub struct LocalNode {
    /// `node.id` (`--service-node`).
    pub id: String,
    /// `node.cluster` (`--service-cluster`).
    pub cluster: String,
}

impl ListenerManager {
    /// A manager serving requests against `runtime`, on the runtime that activates listeners.
    pub fn new(store: Store, runtime: Arc<ArcSwap<Runtime>>) -> Self {
        ListenerManager::with_workers(store, runtime, Workers::ambient())
    }

    /// A manager whose listeners accept and serve connections on `workers`.
    pub fn with_workers(store: Store, runtime: Arc<ArcSwap<Runtime>>, workers: Workers) -> Self {
        ListenerManager {
            store,
            runtime,
            workers,
            listeners: Mutex::new(HashMap::new()),
            local_node: LocalNode::default(),
        }
    }

    /// The node the proxy runs as (for `add_user_agent`); the default is an empty one.
    pub fn with_local_node(mut self, node: LocalNode) -> Self {
        self.local_node = node;
        self
    }

    /// A listener's state; `local`: the address it is bound to.
    /// `add_user_agent`'s header values, when the listener sets it.
    fn user_agent(&self, add: bool) -> Option<(HeaderValue, Option<HeaderValue>)> {
        if !add {
            return None;
        }
        let cluster =
            HeaderValue::from_str(&self.local_node.cluster).unwrap_or(HeaderValue::from_static(""));
        let id = (!self.local_node.id.is_empty())
            .then(|| HeaderValue::from_str(&self.local_node.id).ok())
            .flatten();
        Some((cluster, id))
    }

    fn state(&self, config: ListenerConfig, local: SocketAddr) -> ListenerState {
        let user_agent = self.user_agent(config.headers.add_user_agent);
        let scope = listener_stats_scope(&config.listener_stat_prefix, Some(local));
        let stats = HttpStats::new(&self.store, &config.stat_prefix, &scope);
        let server_header =
            HeaderValue::from_str(&config.server_name).unwrap_or(HeaderValue::from_static("envoy"));
        let via = config
            .headers
            .via
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok());
        ListenerState {
            config,
            stats,
            server_header,
            via,
            local_port: local.port(),
            user_agent,
        }
    }

    /// Makes the set of listeners equal to `configs`: binds new addresses (any failure leaves
    /// everything as it was and names the listener), updates changed configs in place, and
    /// closes removed listeners. New listeners stay inactive until [`Self::activate`].
    pub fn reconcile(&self, configs: &[ListenerConfig]) -> Result<(), String> {
        let mut map = self
            .listeners
            .lock()
            .map_err(|_| "listener lock poisoned".to_string())?;
        // Bind everything new first, so a failure changes nothing.
        let mut bound: HashMap<String, Vec<TcpListener>> = HashMap::new();
        for cfg in configs {
            let rebinding = map.get(&cfg.name).is_none_or(|r| r.address != cfg.address);
            if rebinding {
                let listener = bind_all(cfg.address, &self.workers).map_err(|e| {
                    format!(
                        "listener `{}`: address: cannot bind {}: {e}",
                        cfg.name, cfg.address
                    )
                })?;
                bound.insert(cfg.name.clone(), listener);
            }
        }
        let wanted: std::collections::HashSet<&str> =
            configs.iter().map(|c| c.name.as_str()).collect();
        map.retain(|name, running| {
            let keep = wanted.contains(name.as_str());
            if !keep {
                let _ = running.shutdown.send(true);
            }
            keep
        });
        for cfg in configs {
            if let Some(sockets) = bound.remove(&cfg.name) {
                if let Some(old) = map.remove(&cfg.name) {
                    let _ = old.shutdown.send(true);
                }
                let (tx, _) = watch::channel(false);
                let local = sockets
                    .first()
                    .and_then(|s| s.local_addr().ok())
                    .unwrap_or(cfg.address);
                let ctx = Arc::new(ListenerCtx {
                    state: ArcSwap::from_pointee(self.state(cfg.clone(), local)),
                    runtime: self.runtime.clone(),
                });
                map.insert(
                    cfg.name.clone(),
                    Running {
                        address: cfg.address,
                        local,
                        ctx,
                        sockets: Some(sockets),
                        shutdown: tx,
                        active: false,
                    },
                );
            } else if let Some(running) = map.get_mut(&cfg.name) {
                running
                    .ctx
                    .state
                    .store(Arc::new(self.state(cfg.clone(), running.local)));
            }
        }
        Ok(())
    }

    /// Starts accepting on a bound listener (idempotent).
    pub fn activate(&self, name: &str) {
        let Ok(mut map) = self.listeners.lock() else {
            return;
        };
        let Some(running) = map.get_mut(name) else {
            return;
        };
        if running.active {
            return;
        }
        let Some(sockets) = running.sockets.take() else {
            return;
        };
        running.active = true;
        for (i, socket) in sockets.into_iter().enumerate() {
            let ctx = running.ctx.clone();
            let shutdown = running.shutdown.subscribe();
            let store = self.store.clone();
            if !self.workers.threaded() {
                tokio::spawn(accept_loop(socket, ctx, shutdown, store, i));
                continue;
            }
            // The socket moves to the worker's event loop (registered with its reactor there).
            let socket = match socket.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(listener = name, error = %e, "cannot hand the socket to a worker");
                    continue;
                }
            };
            self.workers.spawn(i, async move {
                match TcpListener::from_std(socket) {
                    Ok(socket) => accept_loop(socket, ctx, shutdown, store, i).await,
                    Err(e) => tracing::error!(error = %e, "worker cannot register the listener"),
                }
            });
        }
    }

    /// Names and states (`active`) of every listener.
    pub fn list(&self) -> Vec<(String, SocketAddr, bool)> {
        self.listeners
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(n, r)| (n.clone(), r.address, r.active))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Binds the listener's sockets: one on the ambient runtime, else one per worker with
/// `SO_REUSEPORT`, the first on `addr` and the others on the address it got (the same port when
/// `addr` has port 0).
fn bind_all(addr: SocketAddr, workers: &Workers) -> std::io::Result<Vec<TcpListener>> {
    let reuse_port = workers.threaded();
    let first = bind(addr, reuse_port)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.count() {
        sockets.push(bind(addr, reuse_port)?);
    }
    Ok(sockets)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// `listener.<name>`, Envoy's scope for a listener's stats: its `stat_prefix`, else its address
/// with every `:` made `_` (`listener.127.0.0.1_10000`, `listener.[__1]_10000`).
fn listener_stats_scope(stat_prefix: &str, address: Option<SocketAddr>) -> String {
    if !stat_prefix.is_empty() {
        return format!("listener.{stat_prefix}");
    }
    let address = address.map(|a| a.to_string()).unwrap_or_default();
    format!("listener.{}", address.replace(':', "_"))
}

/// Accepts connections on worker `worker`'s socket of a listener and serves each on its own
/// task, counted under the listener's scope (`downstream_cx_*`) and the worker's
/// (`worker_<n>.downstream_cx_total`, `_active`), as Envoy counts them.
async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut shutdown: watch::Receiver<bool>,
    store: Store,
    worker: usize,
) {
    let scope = listener_stats_scope(
        &ctx.state.load().config.listener_stat_prefix,
        listener.local_addr().ok(),
    );
    let cx_total = store.counter(&format!("{scope}.downstream_cx_total"));
    let cx_active = store.gauge(&format!("{scope}.downstream_cx_active"));
    let cx_destroy = store.counter(&format!("{scope}.downstream_cx_destroy"));
    let worker_cx_total = store.counter(&format!("{scope}.worker_{worker}.downstream_cx_total"));
    let worker_cx_active = store.gauge(&format!("{scope}.worker_{worker}.downstream_cx_active"));
    let cx_length_ms = store.histogram(&format!("{scope}.downstream_cx_length_ms"));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                cx_total.inc();
                cx_active.inc();
                worker_cx_total.inc();
                worker_cx_active.inc();
                let ctx = ctx.clone();
                let cx_active = cx_active.clone();
                let cx_destroy = cx_destroy.clone();
                let worker_cx_active = worker_cx_active.clone();
                let cx_length_ms = cx_length_ms.clone();
                tokio::spawn(async move {
                    let opened = tokio::time::Instant::now();
                    let length_ms = serve_connection(stream, ctx, opened).await;
                    cx_length_ms.record(length_ms);
                    cx_active.dec();
                    cx_destroy.inc();
                    worker_cx_active.dec();
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Serves one accepted connection; returns its length in milliseconds from `opened` (recorded
/// in `downstream_cx_length_ms`, under the connection manager here and by the caller under the
/// listener).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    ctx: Arc<ListenerCtx>,
    opened: tokio::time::Instant,
) -> u64 {
    let state = ctx.state.load_full();
    let bytes = state.stats.cx_bytes.clone();
    state.stats.cx_total.inc();
    state.stats.cx_active.inc();
    let mut life = ConnLife::new(state.config.connection, state.stats.conn.clone(), opened);
    let http2 = match state.config.codec {
        Codec::Auto => match first_bytes(&stream, &mut life).await {
            Some(http2) => http2,
            None => {
                // A connection that never sent a byte: closed at once by the idle timeout or
                // the max connection duration (Envoy has no codec to drain yet).
                state.stats.cx_destroy_local.inc();
                return finish(&state, opened);
            }
        },
        Codec::Http1 => false,
        Codec::Http2 => true,
    };
    if http2 {
        state.stats.cx_http2_total.inc();
        state.stats.cx_http2_active.inc();
        h2_server::serve(stream, ctx.clone(), bytes, life).await;
        state.stats.cx_http2_active.dec();
    } else {
        state.stats.cx_http1_total.inc();
        state.stats.cx_http1_active.inc();
        http1_server::serve(stream, ctx.clone(), bytes, life).await;
        state.stats.cx_http1_active.dec();
    }
    finish(&state, opened)
}

/// A connection's end under its connection manager: `downstream_cx_length_ms`, `_active`,
/// `_destroy`; returns its length in milliseconds.
fn finish(state: &ListenerState, opened: tokio::time::Instant) -> u64 {
    let length_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
    state.stats.cx_length_ms.record(length_ms);
    state.stats.cx_active.dec();
    state.stats.cx_destroy.inc();
    length_ms
}

/// Waits for the client's first bytes ([`speaks_http2`]) under the connection's limits: `None`
/// when the idle timeout or the max connection duration ran out first (counted; a connection
/// that never sent a byte closes at once).
async fn first_bytes(stream: &tokio::net::TcpStream, life: &mut ConnLife) -> Option<bool> {
    let mut first = std::pin::pin!(speaks_http2(stream));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(http2) = first.as_mut().poll(cx) {
            return Poll::Ready(Some(http2));
        }
        while let Poll::Ready(event) = life.poll_idle(cx) {
            if life.fired(event, tokio::time::Instant::now()) {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), which an h2c client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client's first bytes are the HTTP/2 preface (looked at, not read: the codec
/// chosen reads them): hyper's HTTP/2 server or `http1_server`, and
/// `downstream_cx_http1_total`/`downstream_cx_http2_total`. Envoy too decides when the first
/// bytes arrive. Peeking returns what has arrived, so a preface split over segments
/// is judged on its first part (fewer than three bytes count as HTTP/1.1).
async fn speaks_http2(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; H2_PREFACE.len()];
    match stream.peek(&mut first).await {
        // Three bytes tell `PRI` from every HTTP/1.1 method.
        Ok(n) if n >= 3 => H2_PREFACE.starts_with(&first[..n]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::listener_stats_scope;

    #[test]
    fn listener_stats_are_named_as_envoy_names_them() {
        let v4 = "127.0.0.1:10000".parse().ok();
        assert_eq!(listener_stats_scope("", v4), "listener.127.0.0.1_10000");
        let v6 = "[::1]:10000".parse().ok();
        assert_eq!(listener_stats_scope("", v6), "listener.[__1]_10000");
        assert_eq!(listener_stats_scope("egress", v4), "listener.egress");
    }
}
