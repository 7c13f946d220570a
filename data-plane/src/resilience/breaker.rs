//! Circuit breakers: Envoy's per-cluster resource limits (`circuit_breakers.thresholds` for the
//! `DEFAULT` priority, and `per_host_thresholds.max_connections`), lock-free, with RAII guards.
//!
//! A [`CircuitBreakers`] is created once per cluster and shared (it is a cheap `Arc` handle) by
//! the router and the connection pools. Each `try_*` call either admits the caller, returning a
//! guard that holds one unit of the resource until it is dropped, or refuses with [`Overflow`]
//! after counting the overflow stat Envoy counts. The guards are `Send + 'static` (they hold an
//! `Arc` of the counter they release), so they can live in spawned tasks and response bodies.
//!
//! # Envoy semantics mirrored here (sources: Envoy `source/common/upstream/resource_manager_impl.h`,
//! `source/common/common/basic_resource_impl.h`, `source/common/conn_pool/conn_pool_base.cc`,
//! `source/common/router/retry_state_impl.cc`, `api/envoy/config/cluster/v3/circuit_breaker.proto`)
//!
//! * **Admission compares `current < max`** (`BasicResourceLimitImpl::canCreate()` is
//!   `current_.load() < max()`): `max_requests: 1` admits exactly one active request and
//!   `max_*: 0` admits none. Envoy checks (`canCreate()`) and counts (`inc()`) in two steps, so
//!   under contention its counts may briefly exceed the limit ("it is possible for resources to
//!   temporarily go above the supplied maximums"); here check and count are one compare-exchange,
//!   so a limit is never exceeded (except by [`CircuitBreakers::force_connection`], see below).
//! * **Overflow stats**, on the cluster scope `cluster.<name>.`:
//!   - `upstream_rq_pending_overflow` for `max_pending_requests` *and* for `max_requests`
//!     (Envoy's pool counts the same counter in `newStreamImpl` when the pending limit refuses
//!     and in `attachStreamToClient` when the requests limit refuses: there is no
//!     `upstream_rq_active_overflow` increment for `max_requests`);
//!   - `upstream_cx_overflow` for `max_connections` and for the per-host `max_connections`
//!     (`HostImpl::canCreateConnection()` checks both; the pool counts one overflow);
//!   - `upstream_rq_retry_overflow` for `max_retries` / the retry budget;
//!   - `upstream_cx_pool_overflow` for `max_connection_pools` (which the config layer rejects,
//!     so the limit here is always "unlimited" and this never fires).
//! * **"Open" gauges** `circuit_breakers.default.{cx_open, rq_pending_open, rq_open,
//!   rq_retry_open, cx_pool_open}`: Envoy's `ManagedResourceImpl::inc()`/`decBy()` set the gauge
//!   to `canCreate() ? 0 : 1` after every increment and decrement, i.e. 1 while
//!   `current >= max`. It is *not* touched on a refused attempt, so with `max_requests: 0`
//!   `rq_open` stays 0 (and unused) even though every request overflows; and it is set (marking
//!   it used for `/stats?usedonly`) on every acquire/release, even when its value is unchanged.
//!   Both quirks are mirrored.
//! * **Retry budget** (`RetryBudgetImpl`): when `retry_budget` is configured it replaces
//!   `max_retries` for admission: allowed concurrent retries =
//!   `max(budget_percent / 100 × (active requests + pending requests), min_retry_concurrency)`,
//!   the product truncated to an integer (`std::max<uint64_t>(double, …)`), so 20 % of 14 is 2.
//!   Envoy's `rq_retry_open` gauge, however, stays bound to the *nested `max_retries`*
//!   resource (`RetryBudgetImpl::inc()` calls `max_retry_resource_.inc()`), so with a budget it
//!   reads 1 once the active retries reach `max_retries`, whatever the budget allows. Mirrored.
//! * **Lifetimes Envoy gives each unit** (for the code that holds the guards):
//!   - a *request* is counted from the moment a stream is attached to a ready connection until
//!     the stream closes (`attachStreamToClient` / `onStreamClosed`);
//!   - a *pending request* from being queued because no connection is ready until it is
//!     attached, failed or cancelled (`PendingStream` constructor/destructor). Envoy's pool
//!     asks for the pending limit only when no ready connection exists, and for the request
//!     limit only when attaching — so a queued request can still overflow `max_requests` later;
//!   - a *retry* from the retry decision (`shouldRetry()` → `retries().inc()`, before the
//!     back-off) until the next retry decision for the same request or the end of the request
//!     (`resetRetry()`): hold the [`RetryGuard`] across the back-off and the retried attempt;
//!   - a *connection* for the life of the upstream connection, connecting included.
//! * **The "no connection at all" exception**: when `max_connections` refuses but the host's
//!   pool has no connection whatsoever, Envoy counts `upstream_cx_overflow` and opens one anyway
//!   ("to prevent pending streams being queued to this upstream with no way to be processed").
//!   [`CircuitBreakers::force_connection`] provides that: it counts the connection without
//!   checking, so the count can exceed the limit exactly as in Envoy.
//! * **Per-host limit** (`per_host_thresholds`, of which Envoy honours only `max_connections`):
//!   Envoy compares the host's `cx_active` with the limit (`>=` refuses), has no gauge for it
//!   and counts overflows on the cluster's `upstream_cx_overflow`. See [`HostConnectionLimit`].
//!
//! # Not implemented (documented differences)
//!
//! * `track_remaining` and its `circuit_breakers.<priority>.remaining_{cx,pending,rq,retries,
//!   cx_pools}` gauges: Envoy creates them only when `track_remaining: true`; they are not
//!   created here.
//! * The `HIGH` priority: only `DEFAULT` limits are enforced (routes at `HIGH` are not
//!   accepted by the config layer). Its five `circuit_breakers.high.*_open` gauges are still
//!   created, untouched, because Envoy lists them in `/stats` for every cluster.
//! * Runtime overrides of the limits (`circuit_breakers.<cluster>.<priority>.max_*` keys).

use crate::config::CircuitBreakerThresholds;
use crate::stats::{Counter, Gauge, Store};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The resource a refused attempt asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `max_requests` (counted as `upstream_rq_pending_overflow`).
    Requests,
    /// `max_pending_requests` (`upstream_rq_pending_overflow`).
    PendingRequests,
    /// `max_retries` or the retry budget (`upstream_rq_retry_overflow`).
    Retries,
    /// The cluster's `max_connections` (`upstream_cx_overflow`).
    Connections,
    /// The per-host `max_connections` (`upstream_cx_overflow`).
    HostConnections,
    /// `max_connection_pools` (`upstream_cx_pool_overflow`).
    ConnectionPools,
}

impl Resource {
    /// The threshold's name in Envoy's `CircuitBreakers.Thresholds`.
    pub fn threshold_name(self) -> &'static str {
        match self {
            Resource::Requests => "max_requests",
            Resource::PendingRequests => "max_pending_requests",
            Resource::Retries => "max_retries",
            Resource::Connections => "max_connections",
            Resource::HostConnections => "per_host_thresholds.max_connections",
            Resource::ConnectionPools => "max_connection_pools",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.threshold_name())
    }
}

/// A circuit breaker refused the attempt; its overflow stat has already been counted.
///
/// For requests and pending requests Envoy answers downstream with a local 503,
/// `x-envoy-overloaded: true` and the `UO` response flag; a refused retry is not retried (the
/// last upstream response is forwarded); a refused connection leaves the request pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker overflow: {resource}")]
pub struct Overflow {
    /// Which limit refused.
    pub resource: Resource,
}

/// One counted resource: its current count, its static maximum and its "open" gauge.
#[derive(Debug)]
struct Limit {
    count: AtomicU64,
    /// The configured maximum (`u64::MAX` for "unlimited"). The "open" gauge is always
    /// relative to this value, even when admission uses another one (retry budget).
    max: u64,
    open: Option<Gauge>,
}

impl Limit {
    fn new(max: u64, open: Option<Gauge>) -> Arc<Limit> {
        Arc::new(Limit {
            count: AtomicU64::new(0),
            max,
            open,
        })
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Counts one unit if the count is below `max` (`canCreate()` + `inc()` as one atomic step).
    fn try_acquire(self: &Arc<Self>, max: u64) -> Option<Permit> {
        let mut current = self.count.load(Ordering::SeqCst);
        loop {
            if current >= max {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.sync_open();
        Some(Permit(Arc::clone(self)))
    }

    /// Counts one unit without checking the limit (Envoy's bare `inc()`).
    fn force_acquire(self: &Arc<Self>) -> Permit {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.sync_open();
        Permit(Arc::clone(self))
    }

    fn release(&self) {
        let previous = self.count.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(previous > 0, "circuit breaker count released below zero");
        self.sync_open();
    }

    /// Sets the "open" gauge to `count >= max`, as Envoy does after every `inc()`/`dec()`.
    ///
    /// The gauge is written only when its value changes (or it was never set, so that it
    /// becomes "used" on the first transition, as in Envoy), and the count is read again
    /// after the write: if a concurrent acquire or release moved it across the limit in
    /// between, the gauge is fixed up, so it settles on the right value once the count does.
    fn sync_open(&self) {
        let Some(gauge) = &self.open else {
            return;
        };
        loop {
            let open = u64::from(self.count() >= self.max);
            if !gauge.used() || gauge.value() != open {
                gauge.set(open);
            }
            if u64::from(self.count() >= self.max) == open {
                return;
            }
        }
    }
}

/// One counted unit of a [`Limit`], released on drop.
#[derive(Debug)]
struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One active request (`max_requests`); released on drop.
#[must_use = "the request is counted only while the guard is held"]
#[derive(Debug)]
pub struct RequestGuard {
    _permit: Permit,
}

/// One pending request, waiting for a connection (`max_pending_requests`); released on drop.
#[must_use = "the pending request is counted only while the guard is held"]
#[derive(Debug)]
pub struct PendingGuard {
    _permit: Permit,
}

/// One active retry (`max_retries` / retry budget); released on drop.
#[must_use = "the retry is counted only while the guard is held"]
#[derive(Debug)]
pub struct RetryGuard {
    _permit: Permit,
}

/// One upstream connection, counted against the cluster's `max_connections` and, when taken
/// with [`CircuitBreakers::try_host_connection`] / [`HostConnectionLimit::try_connection`],
/// against its host's limit; released on drop.
#[must_use = "the connection is counted only while the guard is held"]
#[derive(Debug)]
pub struct ConnectionGuard {
    _cluster: Option<Permit>,
    _host: Option<Permit>,
}

/// One connection pool (`max_connection_pools`, always unlimited here); released on drop.
#[must_use = "the connection pool is counted only while the guard is held"]
#[derive(Debug)]
pub struct ConnectionPoolGuard {
    _permit: Permit,
}

#[derive(Debug)]
struct Inner {
    limits: CircuitBreakerThresholds,
    requests: Arc<Limit>,
    pending: Arc<Limit>,
    retries: Arc<Limit>,
    connections: Arc<Limit>,
    pools: Arc<Limit>,
    rq_pending_overflow: Counter,
    rq_active_overflow: Counter,
    cx_overflow: Counter,
    rq_retry_overflow: Counter,
    cx_pool_overflow: Counter,
}

/// The `DEFAULT`-priority circuit breakers of one cluster (see the [module docs](self) for the
/// Envoy behaviour mirrored). Cloning is cheap and clones share the counts.
#[derive(Clone, Debug)]
pub struct CircuitBreakers {
    inner: Arc<Inner>,
}

/// The open gauges of one priority, in the order Envoy lists them.
const OPEN_GAUGES: [&str; 5] = [
    "cx_open",
    "cx_pool_open",
    "rq_open",
    "rq_pending_open",
    "rq_retry_open",
];

impl CircuitBreakers {
    /// The breakers of cluster `cluster` with `limits`, their stats in `store` under
    /// `cluster.<cluster>.` (the overflow counters and the `circuit_breakers.default.*` /
    /// `circuit_breakers.high.*` gauges are created now, as Envoy creates them with the
    /// cluster; the gauges stay unused until the first acquire).
    pub fn new(limits: &CircuitBreakerThresholds, store: &Store, cluster: &str) -> Self {
        let prefix = format!("cluster.{cluster}.");
        let counter = |name: &str| store.counter(&format!("{prefix}{name}"));
        let gauge = |priority: &str, name: &str| {
            store.gauge(&format!("{prefix}circuit_breakers.{priority}.{name}"))
        };
        for name in OPEN_GAUGES {
            // HIGH is not enforced, but Envoy lists its gauges (at 0) for every cluster.
            let _ = gauge("high", name);
        }
        let open = |name: &str| Some(gauge("default", name));
        let inner = Inner {
            limits: limits.clone(),
            requests: Limit::new(limits.max_requests.into(), open("rq_open")),
            pending: Limit::new(limits.max_pending_requests.into(), open("rq_pending_open")),
            retries: Limit::new(limits.max_retries.into(), open("rq_retry_open")),
            connections: Limit::new(limits.max_connections.into(), open("cx_open")),
            pools: Limit::new(u64::MAX, open("cx_pool_open")),
            rq_pending_overflow: counter("upstream_rq_pending_overflow"),
            rq_active_overflow: counter("upstream_rq_active_overflow"),
            cx_overflow: counter("upstream_cx_overflow"),
            rq_retry_overflow: counter("upstream_rq_retry_overflow"),
            cx_pool_overflow: counter("upstream_cx_pool_overflow"),
        };
        CircuitBreakers {
            inner: Arc::new(inner),
        }
    }

    /// Admits one active request if fewer than `max_requests` are active; otherwise counts
    /// `upstream_rq_active_overflow` and refuses. (Older Envoy versions counted this limit as
    /// `upstream_rq_pending_overflow`; Envoy 1.40 has its own counter, measured by the
    /// conformance suite.)
    pub fn try_request(&self) -> Result<RequestGuard, Overflow> {
        let i = &self.inner;
        match i.requests.try_acquire(i.requests.max) {
            Some(p) => Ok(RequestGuard { _permit: p }),
            None => Err(overflow(&i.rq_active_overflow, Resource::Requests)),
        }
    }

    /// Admits one pending request (waiting for a connection) if fewer than
    /// `max_pending_requests` are pending; otherwise counts `upstream_rq_pending_overflow`.
    pub fn try_pending(&self) -> Result<PendingGuard, Overflow> {
        let i = &self.inner;
        match i.pending.try_acquire(i.pending.max) {
            Some(p) => Ok(PendingGuard { _permit: p }),
            None => Err(overflow(&i.rq_pending_overflow, Resource::PendingRequests)),
        }
    }

    /// Admits one retry if fewer than [`retry_limit`](Self::retry_limit) retries are active
    /// (`max_retries`, or the retry budget when configured); otherwise counts
    /// `upstream_rq_retry_overflow`. Hold the guard from the retry decision until the next
    /// decision for the same request or the request's end (Envoy's `resetRetry()`).
    pub fn try_retry(&self) -> Result<RetryGuard, Overflow> {
        let i = &self.inner;
        match i.retries.try_acquire(self.retry_limit()) {
            Some(p) => Ok(RetryGuard { _permit: p }),
            None => Err(overflow(&i.rq_retry_overflow, Resource::Retries)),
        }
    }

    /// Admits one new upstream connection if fewer than `max_connections` are open for the
    /// cluster; otherwise counts `upstream_cx_overflow`. (For a host with a per-host limit use
    /// [`try_host_connection`](Self::try_host_connection).)
    pub fn try_connection(&self) -> Result<ConnectionGuard, Overflow> {
        let i = &self.inner;
        match i.connections.try_acquire(i.connections.max) {
            Some(p) => Ok(ConnectionGuard {
                _cluster: Some(p),
                _host: None,
            }),
            None => Err(overflow(&i.cx_overflow, Resource::Connections)),
        }
    }

    /// Admits one new connection to a host with a per-host limit: Envoy's
    /// `HostImpl::canCreateConnection()` checks the host's limit, then the cluster's. Either
    /// refusal counts `upstream_cx_overflow` once and holds nothing.
    pub fn try_host_connection(
        &self,
        host: &HostConnectionLimit,
    ) -> Result<ConnectionGuard, Overflow> {
        let i = &self.inner;
        let Some(host_permit) = host.limit.try_acquire(host.limit.max) else {
            return Err(overflow(&i.cx_overflow, Resource::HostConnections));
        };
        match i.connections.try_acquire(i.connections.max) {
            Some(p) => Ok(ConnectionGuard {
                _cluster: Some(p),
                _host: Some(host_permit),
            }),
            // `host_permit` is dropped (released) here.
            None => Err(overflow(&i.cx_overflow, Resource::Connections)),
        }
    }

    /// Counts a connection without checking any limit, for Envoy's exception: after a refusal
    /// (already counted in `upstream_cx_overflow` by the `try_*` call), a pool that has no
    /// connection at all (none ready, busy, connecting or in early data) opens one anyway.
    /// The counts may then exceed their limits and `cx_open` reads 1, as in Envoy.
    pub fn force_connection(&self, host: Option<&HostConnectionLimit>) -> ConnectionGuard {
        ConnectionGuard {
            _cluster: Some(self.inner.connections.force_acquire()),
            _host: host.map(|h| h.limit.force_acquire()),
        }
    }

    /// Admits one connection pool (`max_connection_pools`: always unlimited, since the config
    /// layer rejects that field). Envoy takes one when it creates a pool for a host, which is
    /// what makes `cx_pool_open` appear in `/stats?usedonly`; an overflow would count
    /// `upstream_cx_pool_overflow`.
    pub fn try_connection_pool(&self) -> Result<ConnectionPoolGuard, Overflow> {
        let i = &self.inner;
        match i.pools.try_acquire(i.pools.max) {
            Some(p) => Ok(ConnectionPoolGuard { _permit: p }),
            None => Err(overflow(&i.cx_pool_overflow, Resource::ConnectionPools)),
        }
    }

    /// A limit for one host of this cluster (`per_host_max_connections`; `None` = unlimited),
    /// counting its overflows on this cluster's `upstream_cx_overflow`.
    pub fn host_limit(&self, max_connections: Option<u32>) -> HostConnectionLimit {
        HostConnectionLimit::with_counter(max_connections, self.inner.cx_overflow.clone())
    }

    /// How many retries may be active right now: `max_retries`, or with a retry budget
    /// `max(trunc(budget_percent / 100 × (active + pending requests)), min_retry_concurrency)`.
    pub fn retry_limit(&self) -> u64 {
        let i = &self.inner;
        match i.limits.retry_budget {
            None => i.retries.max,
            Some((percent, min_concurrency)) => {
                let active = i.requests.count() + i.pending.count();
                // Envoy: std::max<uint64_t>(budget_percent / 100.0 * current_active, min):
                // the double converts to an integer by truncation.
                let budget = (percent / 100.0 * active as f64) as u64;
                budget.max(min_concurrency.into())
            }
        }
    }

    /// Active requests (held [`RequestGuard`]s).
    pub fn active_requests(&self) -> u64 {
        self.inner.requests.count()
    }

    /// Pending requests (held [`PendingGuard`]s).
    pub fn pending(&self) -> u64 {
        self.inner.pending.count()
    }

    /// Active retries (held [`RetryGuard`]s).
    pub fn active_retries(&self) -> u64 {
        self.inner.retries.count()
    }

    /// Open connections of the cluster (held [`ConnectionGuard`]s).
    pub fn connections(&self) -> u64 {
        self.inner.connections.count()
    }

    /// Connection pools (held [`ConnectionPoolGuard`]s).
    pub fn connection_pools(&self) -> u64 {
        self.inner.pools.count()
    }

    /// The thresholds these breakers enforce.
    pub fn limits(&self) -> &CircuitBreakerThresholds {
        &self.inner.limits
    }
}

fn overflow(counter: &Counter, resource: Resource) -> Overflow {
    counter.inc();
    Overflow { resource }
}

/// The per-host connection limit (`per_host_thresholds.max_connections`), one per host.
///
/// As in Envoy, a host with `n` connections may open another only while `n < max`; there is
/// no gauge, and a refusal counts the cluster's `upstream_cx_overflow`. A pool normally uses
/// [`CircuitBreakers::try_host_connection`], which checks this limit and the cluster's
/// together; [`try_connection`](Self::try_connection) checks this limit alone. Cloning is
/// cheap and clones share the count.
#[derive(Clone, Debug)]
pub struct HostConnectionLimit {
    limit: Arc<Limit>,
    overflow: Counter,
}

impl HostConnectionLimit {
    /// A limit of `max_connections` (`None` = unlimited, Envoy's default) for a host of
    /// cluster `cluster`, counting overflows on `cluster.<cluster>.upstream_cx_overflow`.
    pub fn new(max_connections: Option<u32>, store: &Store, cluster: &str) -> Self {
        let overflow = store.counter(&format!("cluster.{cluster}.upstream_cx_overflow"));
        HostConnectionLimit::with_counter(max_connections, overflow)
    }

    fn with_counter(max_connections: Option<u32>, overflow: Counter) -> Self {
        let max = max_connections.map_or(u64::MAX, u64::from);
        HostConnectionLimit {
            limit: Limit::new(max, None),
            overflow,
        }
    }

    /// Admits one connection to this host if it has fewer than its maximum; otherwise counts
    /// `upstream_cx_overflow` and refuses. Does not consult the cluster's `max_connections`.
    pub fn try_connection(&self) -> Result<ConnectionGuard, Overflow> {
        match self.limit.try_acquire(self.limit.max) {
            Some(p) => Ok(ConnectionGuard {
                _cluster: None,
                _host: Some(p),
            }),
            None => Err(overflow(&self.overflow, Resource::HostConnections)),
        }
    }

    /// Connections counted against this host.
    pub fn connections(&self) -> u64 {
        self.limit.count()
    }

    /// The limit (`None` when unlimited).
    pub fn max_connections(&self) -> Option<u64> {
        (self.limit.max != u64::MAX).then_some(self.limit.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::thread;

    fn thresholds(
        cx: u32,
        pending: u32,
        rq: u32,
        retries: u32,
        budget: Option<(f64, u32)>,
    ) -> CircuitBreakerThresholds {
        CircuitBreakerThresholds {
            max_connections: cx,
            max_pending_requests: pending,
            max_requests: rq,
            max_retries: retries,
            retry_budget: budget,
        }
    }

    fn counter(store: &Store, name: &str) -> u64 {
        store.counter(&format!("cluster.c.{name}")).value()
    }

    fn gauge(store: &Store, name: &str) -> Gauge {
        store.gauge(&format!("cluster.c.circuit_breakers.default.{name}"))
    }

    fn breakers(t: CircuitBreakerThresholds) -> (CircuitBreakers, Store) {
        let store = Store::new();
        (CircuitBreakers::new(&t, &store, "c"), store)
    }

    #[test]
    fn guards_are_send_and_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<RequestGuard>();
        check::<PendingGuard>();
        check::<RetryGuard>();
        check::<ConnectionGuard>();
        check::<ConnectionPoolGuard>();
        check::<CircuitBreakers>();
        check::<HostConnectionLimit>();
        check::<Overflow>();
    }

    #[test]
    fn stats_are_created_with_the_cluster() {
        let (_cb, store) = breakers(CircuitBreakerThresholds::default());
        let text = store.render_text(None, false);
        for priority in ["default", "high"] {
            for name in OPEN_GAUGES {
                let line = format!("cluster.c.circuit_breakers.{priority}.{name}: 0\n");
                assert!(text.contains(&line), "missing {line:?} in\n{text}");
            }
        }
        for name in [
            "upstream_rq_pending_overflow",
            "upstream_rq_active_overflow",
            "upstream_cx_overflow",
            "upstream_rq_retry_overflow",
            "upstream_cx_pool_overflow",
        ] {
            assert!(text.contains(&format!("cluster.c.{name}: 0\n")), "{name}");
        }
        // Like Envoy, the gauges are set (and so "used") only by an acquire or release.
        assert!(!gauge(&store, "rq_open").used());
        assert!(
            !store
                .gauge("cluster.c.circuit_breakers.high.rq_open")
                .used()
        );
    }

    #[test]
    fn requests_admit_exactly_max_and_overflow_as_active_overflow() {
        let (cb, store) = breakers(thresholds(9, 9, 3, 9, None));
        let guards: Vec<_> = (0..3).map(|_| cb.try_request().unwrap()).collect();
        assert_eq!(cb.active_requests(), 3);
        let err = cb.try_request().unwrap_err();
        assert_eq!(err.resource, Resource::Requests);
        assert_eq!(err.to_string(), "circuit breaker overflow: max_requests");
        assert_eq!(counter(&store, "upstream_rq_active_overflow"), 1);
        assert_eq!(counter(&store, "upstream_rq_pending_overflow"), 0);
        assert_eq!(cb.active_requests(), 3, "a refusal holds nothing");
        drop(guards);
        assert_eq!(cb.active_requests(), 0);
        let _g = cb.try_request().unwrap();
        assert_eq!(counter(&store, "upstream_rq_active_overflow"), 1);
        assert_eq!(counter(&store, "upstream_cx_overflow"), 0);
        assert_eq!(counter(&store, "upstream_rq_retry_overflow"), 0);
    }

    #[test]
    fn max_one_admits_one_and_max_zero_admits_none() {
        let (cb, store) = breakers(thresholds(0, 0, 1, 0, None));
        let g = cb.try_request().unwrap();
        assert!(cb.try_request().is_err());
        drop(g);
        assert_eq!(
            cb.try_pending().unwrap_err().resource,
            Resource::PendingRequests
        );
        assert_eq!(cb.try_retry().unwrap_err().resource, Resource::Retries);
        assert_eq!(
            cb.try_connection().unwrap_err().resource,
            Resource::Connections
        );
        // Envoy sets the open gauges only on inc/dec: a limit of 0 never opens them.
        for name in ["rq_pending_open", "rq_retry_open", "cx_open"] {
            assert!(!gauge(&store, name).used(), "{name}");
            assert_eq!(gauge(&store, name).value(), 0, "{name}");
        }
    }

    #[test]
    fn pending_admits_exactly_max() {
        let (cb, store) = breakers(thresholds(9, 2, 9, 9, None));
        let a = cb.try_pending().unwrap();
        let b = cb.try_pending().unwrap();
        assert_eq!(cb.pending(), 2);
        assert_eq!(
            cb.try_pending().unwrap_err().resource,
            Resource::PendingRequests
        );
        assert_eq!(counter(&store, "upstream_rq_pending_overflow"), 1);
        drop(a);
        let _c = cb.try_pending().unwrap();
        drop(b);
        assert_eq!(cb.pending(), 1);
    }

    #[test]
    fn retries_admit_exactly_max_retries() {
        let (cb, store) = breakers(thresholds(9, 9, 9, 3, None));
        assert_eq!(cb.retry_limit(), 3);
        let guards: Vec<_> = (0..3).map(|_| cb.try_retry().unwrap()).collect();
        assert_eq!(cb.active_retries(), 3);
        assert_eq!(cb.try_retry().unwrap_err().resource, Resource::Retries);
        assert_eq!(counter(&store, "upstream_rq_retry_overflow"), 1);
        assert_eq!(counter(&store, "upstream_rq_pending_overflow"), 0);
        drop(guards);
        assert_eq!(cb.active_retries(), 0);
        let _g = cb.try_retry().unwrap();
    }

    #[test]
    fn connections_admit_exactly_max() {
        let (cb, store) = breakers(thresholds(2, 9, 9, 9, None));
        let a = cb.try_connection().unwrap();
        let _b = cb.try_connection().unwrap();
        assert_eq!(
            cb.try_connection().unwrap_err().resource,
            Resource::Connections
        );
        assert_eq!(counter(&store, "upstream_cx_overflow"), 1);
        assert_eq!(cb.connections(), 2);
        drop(a);
        assert_eq!(cb.connections(), 1);
        let _c = cb.try_connection().unwrap();
        assert_eq!(counter(&store, "upstream_cx_overflow"), 1);
    }

    #[test]
    fn open_gauges_flip_at_the_limit() {
        let (cb, store) = breakers(thresholds(2, 2, 2, 2, None));
        let rq_open = gauge(&store, "rq_open");
        let a = cb.try_request().unwrap();
        assert!(rq_open.used(), "set on the first acquire, as Envoy does");
        assert_eq!(rq_open.value(), 0, "1 of 2");
        let b = cb.try_request().unwrap();
        assert_eq!(rq_open.value(), 1, "2 of 2: open");
        assert!(cb.try_request().is_err());
        assert_eq!(rq_open.value(), 1, "a refusal leaves it open");
        drop(a);
        assert_eq!(rq_open.value(), 0, "1 of 2: closed again");
        let a = cb.try_request().unwrap();
        assert_eq!(rq_open.value(), 1);
        drop((a, b));
        assert_eq!(rq_open.value(), 0);

        // The same for the other resources.
        let pending_open = gauge(&store, "rq_pending_open");
        let p = [cb.try_pending().unwrap(), cb.try_pending().unwrap()];
        assert_eq!(pending_open.value(), 1);
        drop(p);
        assert_eq!(pending_open.value(), 0);

        let retry_open = gauge(&store, "rq_retry_open");
        let r1 = cb.try_retry().unwrap();
        assert_eq!(retry_open.value(), 0);
        let r2 = cb.try_retry().unwrap();
        assert_eq!(retry_open.value(), 1);
        drop(r1);
        assert_eq!(retry_open.value(), 0);
        drop(r2);

        let cx_open = gauge(&store, "cx_open");
        let c = [cb.try_connection().unwrap(), cb.try_connection().unwrap()];
        assert_eq!(cx_open.value(), 1);
        drop(c);
        assert_eq!(cx_open.value(), 0);

        // Nothing touched the HIGH priority.
        assert!(
            !store
                .gauge("cluster.c.circuit_breakers.high.rq_open")
                .used()
        );
    }

    #[test]
    fn connection_pools_are_unlimited_and_mark_their_gauge_used() {
        let (cb, store) = breakers(CircuitBreakerThresholds::default());
        let pools: Vec<_> = (0..100)
            .map(|_| cb.try_connection_pool().unwrap())
            .collect();
        assert_eq!(cb.connection_pools(), 100);
        let g = gauge(&store, "cx_pool_open");
        assert!(g.used());
        assert_eq!(g.value(), 0);
        drop(pools);
        assert_eq!(cb.connection_pools(), 0);
        assert_eq!(counter(&store, "upstream_cx_pool_overflow"), 0);
    }

    #[test]
    fn retry_budget_arithmetic() {
        // 20 % of 10 active requests = 2 retries (min concurrency 1 below that).
        let (cb, store) = breakers(thresholds(9, 99, 99, 3, Some((20.0, 1))));
        let requests: Vec<_> = (0..10).map(|_| cb.try_request().unwrap()).collect();
        assert_eq!(cb.retry_limit(), 2);
        let r: Vec<_> = (0..2).map(|_| cb.try_retry().unwrap()).collect();
        assert_eq!(cb.try_retry().unwrap_err().resource, Resource::Retries);
        assert_eq!(counter(&store, "upstream_rq_retry_overflow"), 1);
        drop(r);

        // Pending requests count too: 10 active + 5 pending = 15 → 3.
        let pending: Vec<_> = (0..5).map(|_| cb.try_pending().unwrap()).collect();
        assert_eq!(cb.retry_limit(), 3);
        drop(pending);

        // The product is truncated: 20 % of 14 = 2.8 → 2.
        let more: Vec<_> = (0..4).map(|_| cb.try_request().unwrap()).collect();
        assert_eq!(cb.active_requests(), 14);
        assert_eq!(cb.retry_limit(), 2);
        drop(more);
        drop(requests);

        // No load at all: the floor.
        assert_eq!(cb.retry_limit(), 1);
    }

    #[test]
    fn retry_budget_min_concurrency_wins_at_low_load() {
        let (cb, _store) = breakers(thresholds(9, 99, 99, 1, Some((20.0, 3))));
        let requests: Vec<_> = (0..10).map(|_| cb.try_request().unwrap()).collect();
        // 20 % of 10 = 2 < 3; and the budget replaces max_retries (1).
        assert_eq!(cb.retry_limit(), 3);
        let r: Vec<_> = (0..3).map(|_| cb.try_retry().unwrap()).collect();
        assert!(cb.try_retry().is_err());
        drop(r);
        drop(requests);
        // High load: 25 % of 40 = 10.
        let (cb, _store) = breakers(thresholds(9, 99, 99, 1, Some((25.0, 3))));
        let _requests: Vec<_> = (0..40).map(|_| cb.try_request().unwrap()).collect();
        assert_eq!(cb.retry_limit(), 10);
        let _r: Vec<_> = (0..10).map(|_| cb.try_retry().unwrap()).collect();
        assert!(cb.try_retry().is_err());
    }

    #[test]
    fn retry_budget_shrinks_with_load_without_revoking() {
        let (cb, _store) = breakers(thresholds(9, 99, 99, 3, Some((50.0, 1))));
        let mut requests: Vec<_> = (0..8).map(|_| cb.try_request().unwrap()).collect();
        let held: Vec<_> = (0..4).map(|_| cb.try_retry().unwrap()).collect();
        requests.truncate(2); // budget now max(1, 1) = 1
        assert_eq!(cb.retry_limit(), 1);
        assert_eq!(cb.active_retries(), 4, "held retries stay counted");
        assert!(cb.try_retry().is_err());
        drop(held);
        let _one = cb.try_retry().unwrap();
        assert!(cb.try_retry().is_err());
    }

    #[test]
    fn retry_open_gauge_follows_max_retries_even_with_a_budget() {
        // Envoy's RetryBudgetImpl::inc() updates the nested max_retries resource's gauge.
        let (cb, store) = breakers(thresholds(9, 99, 99, 2, Some((100.0, 1))));
        let _requests: Vec<_> = (0..5).map(|_| cb.try_request().unwrap()).collect();
        assert_eq!(cb.retry_limit(), 5);
        let retry_open = gauge(&store, "rq_retry_open");
        let a = cb.try_retry().unwrap();
        assert_eq!(retry_open.value(), 0);
        let b = cb.try_retry().unwrap();
        assert_eq!(retry_open.value(), 1, "2 >= max_retries 2");
        let c = cb.try_retry().unwrap();
        assert_eq!(retry_open.value(), 1, "the budget still admits");
        drop((a, b));
        assert_eq!(retry_open.value(), 0);
        drop(c);
    }

    #[test]
    fn host_limit_admits_exactly_max_and_counts_cluster_overflow() {
        let (cb, store) = breakers(thresholds(9, 9, 9, 9, None));
        let host = cb.host_limit(Some(2));
        assert_eq!(host.max_connections(), Some(2));
        let a = cb.try_host_connection(&host).unwrap();
        let _b = cb.try_host_connection(&host).unwrap();
        assert_eq!((host.connections(), cb.connections()), (2, 2));
        let err = cb.try_host_connection(&host).unwrap_err();
        assert_eq!(err.resource, Resource::HostConnections);
        assert_eq!(counter(&store, "upstream_cx_overflow"), 1);
        assert_eq!(cb.connections(), 2, "the cluster was not charged");
        assert_eq!(
            host.try_connection().unwrap_err().resource,
            Resource::HostConnections
        );
        assert_eq!(counter(&store, "upstream_cx_overflow"), 2);
        drop(a);
        assert_eq!((host.connections(), cb.connections()), (1, 1));
        // Another host of the same cluster has its own count.
        let other = cb.host_limit(Some(2));
        let _c = cb.try_host_connection(&other).unwrap();
        assert_eq!((other.connections(), cb.connections()), (1, 2));
        // No per-host limit.
        let unlimited = HostConnectionLimit::new(None, &store, "c");
        assert_eq!(unlimited.max_connections(), None);
        let _d: Vec<_> = (0..50)
            .map(|_| unlimited.try_connection().unwrap())
            .collect();
    }

    #[test]
    fn cluster_limit_refusal_releases_the_host_slot() {
        let (cb, store) = breakers(thresholds(1, 9, 9, 9, None));
        let host = cb.host_limit(Some(5));
        let _a = cb.try_host_connection(&host).unwrap();
        let err = cb.try_host_connection(&host).unwrap_err();
        assert_eq!(err.resource, Resource::Connections);
        assert_eq!(host.connections(), 1, "the host slot was given back");
        assert_eq!(counter(&store, "upstream_cx_overflow"), 1, "counted once");
        assert_eq!(gauge(&store, "cx_open").value(), 1);
    }

    #[test]
    fn force_connection_goes_over_the_limit() {
        let (cb, store) = breakers(thresholds(1, 9, 9, 9, None));
        let host = cb.host_limit(Some(1));
        let _a = cb.try_host_connection(&host).unwrap();
        assert!(cb.try_host_connection(&host).is_err());
        let forced = cb.force_connection(Some(&host));
        assert_eq!((cb.connections(), host.connections()), (2, 2));
        assert_eq!(gauge(&store, "cx_open").value(), 1);
        drop(forced);
        assert_eq!((cb.connections(), host.connections()), (1, 1));
        assert_eq!(gauge(&store, "cx_open").value(), 1, "1 of 1 is still open");
        let forced = cb.force_connection(None);
        assert_eq!((cb.connections(), host.connections()), (2, 1));
        drop(forced);
    }

    #[test]
    fn clones_share_counts() {
        let (cb, _store) = breakers(thresholds(9, 9, 1, 9, None));
        let clone = cb.clone();
        let _g = cb.try_request().unwrap();
        assert!(clone.try_request().is_err());
        assert_eq!(clone.active_requests(), 1);
        assert_eq!(clone.limits().max_requests, 1);
    }

    #[test]
    fn guards_release_from_other_threads() {
        let (cb, store) = breakers(thresholds(9, 9, 1, 9, None));
        let g = cb.try_request().unwrap();
        assert_eq!(gauge(&store, "rq_open").value(), 1);
        thread::spawn(move || drop(g)).join().unwrap();
        assert_eq!(cb.active_requests(), 0);
        assert_eq!(gauge(&store, "rq_open").value(), 0);
    }

    /// Runs `threads` threads that each take `acquire` `rounds` times, tracking the number of
    /// guards held at once; returns (admitted, refused, highest number held at once).
    fn stress<G: Send>(
        threads: usize,
        rounds: usize,
        acquire: impl Fn() -> Result<G, Overflow> + Sync,
    ) -> (u64, u64, u64) {
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let admitted = AtomicU64::new(0);
        let refused = AtomicU64::new(0);
        let barrier = Barrier::new(threads);
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    for i in 0..rounds {
                        match acquire() {
                            Ok(guard) => {
                                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                admitted.fetch_add(1, Ordering::Relaxed);
                                if i % 8 == 0 {
                                    thread::yield_now();
                                }
                                held.fetch_sub(1, Ordering::SeqCst);
                                drop(guard);
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        (
            admitted.into_inner(),
            refused.into_inner(),
            peak.into_inner(),
        )
    }

    #[test]
    fn concurrent_requests_never_exceed_the_limit() {
        let (cb, store) = breakers(thresholds(9, 9, 3, 9, None));
        let (admitted, refused, peak) = stress(8, 20_000, || {
            let g = cb.try_request()?;
            assert!(cb.active_requests() <= 3);
            Ok(g)
        });
        assert!(peak <= 3, "peak {peak}");
        assert_eq!(admitted + refused, 8 * 20_000);
        assert_eq!(counter(&store, "upstream_rq_active_overflow"), refused);
        assert_eq!(cb.active_requests(), 0);
        assert_eq!(gauge(&store, "rq_open").value(), 0, "gauge settles closed");
    }

    #[test]
    fn concurrent_host_connections_never_exceed_either_limit() {
        let (cb, store) = breakers(thresholds(3, 9, 9, 9, None));
        let hosts = [cb.host_limit(Some(2)), cb.host_limit(Some(2))];
        let next = AtomicU64::new(0);
        let (_, refused, peak) = stress(8, 20_000, || {
            let host = &hosts[(next.fetch_add(1, Ordering::Relaxed) % 2) as usize];
            let g = cb.try_host_connection(host)?;
            assert!(cb.connections() <= 3);
            assert!(host.connections() <= 2);
            Ok(g)
        });
        assert!(peak <= 3, "peak {peak}");
        assert_eq!(counter(&store, "upstream_cx_overflow"), refused);
        assert_eq!(cb.connections(), 0);
        assert_eq!(hosts[0].connections() + hosts[1].connections(), 0);
        assert_eq!(gauge(&store, "cx_open").value(), 0);
    }

    #[test]
    fn concurrent_retries_never_exceed_max_retries() {
        let (cb, store) = breakers(thresholds(9, 9, 9, 2, None));
        let (_, refused, peak) = stress(8, 20_000, || cb.try_retry());
        assert!(peak <= 2, "peak {peak}");
        assert_eq!(counter(&store, "upstream_rq_retry_overflow"), refused);
        assert_eq!(cb.active_retries(), 0);
        assert_eq!(gauge(&store, "rq_retry_open").value(), 0);
    }
}
