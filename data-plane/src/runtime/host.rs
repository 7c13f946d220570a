//! One upstream host: its address, weight, health, live counters and connection pool.

use crate::config::CircuitBreakerThresholds;
use crate::config::{EndpointConfig, EndpointHealth, UpstreamProtocol};
use crate::proxy::pool::HostPool;
use crate::resilience::outlier::HostMonitor;
use crate::stats::{Counter, Gauge, Histogram, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-host request counters, as `/clusters` prints them (`rq_total`, `rq_success`, …);
/// connection counters live in the host's pool.
#[derive(Debug, Default)]
pub struct HostStats {
    /// Requests sent.
    pub rq_total: AtomicU64,
    /// Requests in flight.
    pub rq_active: AtomicU64,
    /// Requests answered without a 5xx.
    pub rq_success: AtomicU64,
    /// Requests that failed (5xx or reset).
    pub rq_error: AtomicU64,
    /// Requests that timed out.
    pub rq_timeout: AtomicU64,
}

impl HostStats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge-like counter.
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cluster-level connection stats a pool updates.
#[derive(Clone, Debug)]
pub struct PoolStats {
    /// `upstream_cx_total`.
    pub cx_total: Counter,
    /// `upstream_cx_active`.
    pub cx_active: Gauge,
    /// `upstream_cx_connect_fail`.
    pub cx_connect_fail: Counter,
    /// `upstream_cx_connect_timeout`.
    pub cx_connect_timeout: Counter,
    /// `upstream_cx_http1_total`.
    pub cx_http1_total: Counter,
    /// `upstream_cx_http2_total`.
    pub cx_http2_total: Counter,
    /// `upstream_cx_destroy`: connections closed (failed connects included).
    pub cx_destroy: Counter,
    /// `upstream_cx_destroy_local`: closed by the proxy.
    pub cx_destroy_local: Counter,
    /// `upstream_cx_destroy_remote`: closed by the upstream (or refused).
    pub cx_destroy_remote: Counter,
    /// `upstream_cx_destroy_with_active_rq`: closed with a request on them.
    pub cx_destroy_with_active_rq: Counter,
    /// `upstream_cx_destroy_local_with_active_rq`.
    pub cx_destroy_local_with_active_rq: Counter,
    /// `upstream_cx_destroy_remote_with_active_rq`.
    pub cx_destroy_remote_with_active_rq: Counter,
    /// `upstream_rq_pending_failure_eject`: requests waiting for a connection that failed to
    /// connect.
    pub rq_pending_failure_eject: Counter,
    /// `upstream_rq_pending_total`: requests that had to wait for a new or free connection.
    pub rq_pending_total: Counter,
    /// `upstream_rq_pending_active`: requests waiting for a free connection now.
    pub rq_pending_active: Gauge,
    /// `upstream_rq_active`: requests dispatched on a connection and not yet answered.
    pub rq_active: Gauge,
    /// `upstream_rq_total`: requests dispatched on a connection.
    pub rq_total: Counter,
    /// The cluster's circuit breakers (connections and pending requests are checked in pools).
    pub breakers: crate::resilience::breaker::CircuitBreakers,
    /// `per_host_thresholds.max_connections`, applied to each host's pool.
    pub per_host_max_connections: Option<u32>,
    /// `max_requests_per_connection`: a connection that carried this many requests is closed
    /// (HTTP/1.1, once its last response ends) or gets no new streams (HTTP/2).
    pub max_requests_per_connection: Option<u32>,
    /// `upstream_cx_max_requests`: connections closed for reaching it.
    pub cx_max_requests: Counter,
    /// `upstream_cx_protocol_error`: connections closed because the upstream broke HTTP/1.1.
    pub cx_protocol_error: Counter,
    /// `upstream_cx_rx_bytes_total` and `upstream_cx_tx_bytes_total`.
    pub cx_bytes: crate::proxy::io_stats::ByteCounters,
    /// `upstream_cx_connect_ms`: from the connect's start until the connection (and its TLS
    /// handshake) is up.
    pub cx_connect_ms: Histogram,
    /// `upstream_cx_length_ms`: connections' lifetimes, from the connect's start (failed
    /// connects included).
    pub cx_length_ms: Histogram,
    /// `upstream_rq_per_cx`: the requests each connection carried, recorded when it closes.
    pub rq_per_cx: Histogram,
    /// The cluster's upstream TLS, when configured: every connection is TLS, never plaintext.
    pub tls: Option<Arc<crate::tls::ClusterTls>>,
}

impl PoolStats {
    /// The pool stats of cluster `cluster` (`cluster.<cluster>.upstream_cx_*` and
    /// `upstream_rq_*`), its circuit breakers, and no TLS (set by the cluster when it has TLS).
    pub fn new(
        store: &Store,
        cluster: &str,
        breakers: &CircuitBreakerThresholds,
        per_host_max_connections: Option<u32>,
        max_requests_per_connection: Option<u32>,
    ) -> Self {
        let c = |s: &str| store.counter(&format!("cluster.{cluster}.{s}"));
        let g = |s: &str| store.gauge(&format!("cluster.{cluster}.{s}"));
        PoolStats {
            rq_pending_total: c("upstream_rq_pending_total"),
            rq_pending_active: g("upstream_rq_pending_active"),
            rq_active: g("upstream_rq_active"),
            rq_total: c("upstream_rq_total"),
            breakers: crate::resilience::breaker::CircuitBreakers::new(breakers, store, cluster),
            per_host_max_connections,
            max_requests_per_connection,
            cx_max_requests: c("upstream_cx_max_requests"),
            cx_protocol_error: c("upstream_cx_protocol_error"),
            cx_bytes: crate::proxy::io_stats::ByteCounters {
                rx: c("upstream_cx_rx_bytes_total"),
                tx: c("upstream_cx_tx_bytes_total"),
            },
            cx_connect_ms: store.histogram(&format!("cluster.{cluster}.upstream_cx_connect_ms")),
            cx_length_ms: store.histogram(&format!("cluster.{cluster}.upstream_cx_length_ms")),
            rq_per_cx: store.histogram(&format!("cluster.{cluster}.upstream_rq_per_cx")),
            cx_total: c("upstream_cx_total"),
            cx_active: g("upstream_cx_active"),
            cx_connect_fail: c("upstream_cx_connect_fail"),
            cx_connect_timeout: c("upstream_cx_connect_timeout"),
            cx_http1_total: c("upstream_cx_http1_total"),
            cx_http2_total: c("upstream_cx_http2_total"),
            cx_destroy: c("upstream_cx_destroy"),
            cx_destroy_local: c("upstream_cx_destroy_local"),
            cx_destroy_remote: c("upstream_cx_destroy_remote"),
            cx_destroy_with_active_rq: c("upstream_cx_destroy_with_active_rq"),
            cx_destroy_local_with_active_rq: c("upstream_cx_destroy_local_with_active_rq"),
            cx_destroy_remote_with_active_rq: c("upstream_cx_destroy_remote_with_active_rq"),
            rq_pending_failure_eject: c("upstream_rq_pending_failure_eject"),
            tls: None,
        }
    }
}

/// An upstream host.
#[derive(Debug)]
pub struct Host {
    /// Where it listens.
    pub address: SocketAddr,
    /// The address as `/clusters` prints it.
    pub address_text: String,
    /// Load-balancing weight.
    pub weight: u32,
    /// Priority from EDS.
    pub priority: u32,
    /// Health from EDS.
    pub health: EndpointHealth,
    /// The DNS name it was resolved from (STRICT_DNS), for `auto_host_rewrite`.
    pub hostname: Option<String>,
    /// Counters.
    pub stats: HostStats,
    /// Connection pool.
    pub pool: HostPool,
    /// Outlier-detection state (idle unless the cluster configures outlier detection). Shared
    /// with the host this one replaces when only its EDS health or weight changed, as Envoy
    /// updates such hosts in place.
    pub outlier: Arc<HostMonitor>,
}

impl Host {
    /// A host with a fresh pool.
    pub fn new(
        ep: &EndpointConfig,
        hostname: Option<String>,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Option<Duration>,
        pool_stats: PoolStats,
    ) -> Arc<Host> {
        Host::with_monitor(
            ep,
            hostname,
            protocol,
            connect_timeout,
            idle_timeout,
            pool_stats,
            Arc::default(),
        )
    }

    /// A host with a fresh pool and the given outlier-detection state.
    pub fn with_monitor(
        ep: &EndpointConfig,
        hostname: Option<String>,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Option<Duration>,
        pool_stats: PoolStats,
        outlier: Arc<HostMonitor>,
    ) -> Arc<Host> {
        Arc::new(Host {
            address: ep.address,
            address_text: ep.address.to_string(),
            weight: ep.weight.max(1),
            priority: ep.priority,
            health: ep.health,
            hostname,
            stats: HostStats::default(),
            pool: HostPool::new(
                ep.address,
                protocol,
                connect_timeout,
                idle_timeout,
                pool_stats,
            ),
            outlier,
        })
    }

    /// True when EDS says the host may receive traffic.
    pub fn eligible(&self) -> bool {
        self.health == EndpointHealth::Healthy
    }

    /// True when this host can be reused for `ep` (same address, weight, health, priority).
    pub fn same_endpoint(&self, ep: &EndpointConfig) -> bool {
        self.address == ep.address
            && self.weight == ep.weight.max(1)
            && self.health == ep.health
            && self.priority == ep.priority
    }
}
