//! A live cluster: validated config, stats handles, the current host set with its load
//! balancer, swapped atomically when endpoints change.

use super::host::{Host, PoolStats};
use crate::config::{ClusterConfig, EndpointConfig};
use crate::lb::{self, LoadBalancer, PickContext};
use crate::resilience::Outcome;
use crate::resilience::outlier::{Detector, HostMonitor};
use crate::stats::{CodeStats, Counter, Gauge, Histogram, Store};
use crate::tls::ClusterTls;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// The hosts of a cluster at one moment, and the load balancer over the eligible ones.
#[derive(Debug)]
pub struct HostSet {
    /// Every host, in EDS order.
    pub all: Vec<Arc<Host>>,
    /// The hosts the load balancer picks from (indices match `lb`).
    pub eligible: Vec<Arc<Host>>,
    /// The load balancer over `eligible`.
    pub lb: Box<dyn LoadBalancer>,
    /// Too few healthy hosts: Envoy's panic mode (balance over all hosts).
    pub panic: bool,
}

/// Handles of one cluster's stats (`cluster.<name>.*`).
#[derive(Debug)]
pub struct ClusterStats {
    /// `upstream_rq_total`.
    pub rq_total: Counter,
    /// `upstream_rq_active`.
    pub rq_active: Gauge,
    /// `upstream_rq_pending_total`.
    pub rq_pending_total: Counter,
    /// `upstream_rq_timeout`.
    pub rq_timeout: Counter,
    /// `upstream_rq_time` (see [`ClusterStats::record_rq_time`]).
    pub rq_time: Histogram,
    /// `upstream_cx_none_healthy`.
    pub cx_none_healthy: Counter,
    /// `lb_healthy_panic`.
    pub lb_healthy_panic: Counter,
    /// `membership_healthy`.
    pub membership_healthy: Gauge,
    /// `membership_total`.
    pub membership_total: Gauge,
    /// `membership_change`.
    pub membership_change: Counter,
    /// `update_success` (EDS/DNS updates applied).
    pub update_success: Counter,
    /// Retry stats.
    pub retry: crate::resilience::retry::RetryStats,
    /// `upstream_rq_completed`, `upstream_rq_<class>xx`, `upstream_rq_<code>`: the attempt
    /// whose response (or local reply) ends the request.
    pub codes: CodeStats,
    /// The same under `external.` (requests that are not internal).
    pub external_codes: CodeStats,
    /// The same under `internal.`.
    pub internal_codes: CodeStats,
    /// The same under `retry.`: attempts whose response was retried.
    pub retry_codes: CodeStats,
    /// Connection stats shared by every host's pool.
    pub pool: PoolStats,
    prefix: String,
    store: Store,
}

impl ClusterStats {
    fn new(store: &Store, config: &ClusterConfig) -> Self {
        let name = config.name.as_str();
        let p = format!("cluster.{name}.");
        let c = |s: &str| store.counter(&format!("{p}{s}"));
        let g = |s: &str| store.gauge(&format!("{p}{s}"));
        let stats = ClusterStats {
            rq_total: c("upstream_rq_total"),
            rq_active: g("upstream_rq_active"),
            rq_pending_total: c("upstream_rq_pending_total"),
            rq_timeout: c("upstream_rq_timeout"),
            rq_time: store.histogram(&format!("{p}upstream_rq_time")),
            cx_none_healthy: c("upstream_cx_none_healthy"),
            lb_healthy_panic: c("lb_healthy_panic"),
            membership_healthy: g("membership_healthy"),
            membership_total: g("membership_total"),
            membership_change: c("membership_change"),
            update_success: c("update_success"),
            retry: crate::resilience::retry::RetryStats::new(store, name),
            codes: CodeStats::eager(store, &p),
            external_codes: CodeStats::lazy(store, &format!("{p}external.")),
            internal_codes: CodeStats::lazy(store, &format!("{p}internal.")),
            retry_codes: CodeStats::lazy(store, &format!("{p}retry.")),
            pool: PoolStats::new(
                store,
                name,
                &config.circuit_breakers,
                config.per_host_max_connections,
                config.max_requests_per_connection,
            ),
            prefix: p,
            store: store.clone(),
        };
        // Envoy creates these gauges eagerly; so do we, so `/stats` lists them.
        for name in [
            "upstream_rq_retry",
            "upstream_rq_retry_success",
            "upstream_rq_retry_overflow",
            "upstream_rq_pending_overflow",
            "upstream_cx_overflow",
            "upstream_rq_per_try_timeout",
            "upstream_rq_retry_backoff_ratelimited",
        ] {
            let _ = stats.store.counter(&format!("{}{name}", stats.prefix));
        }
        stats
    }

    /// Charges the code that ends a request (the final attempt's response, or the local reply
    /// standing for it), as Envoy's router does in `chargeUpstreamCode`: `upstream_rq_<code>`,
    /// `upstream_rq_<class>xx`, `upstream_rq_completed`, and the same under `internal.` or
    /// `external.`.
    #[inline]
    pub fn charge_final(&self, code: u16, internal: bool) {
        self.codes.charge(code);
        if internal {
            self.internal_codes.charge(code);
        } else {
            self.external_codes.charge(code);
        }
    }

    /// Records the time of a request whose upstream response has ended, as Envoy's router does
    /// in `onUpstreamComplete` (`chargeResponseTiming`): once per request, for the attempt whose
    /// response went downstream, from the moment the whole request had been received (earlier
    /// attempts and their back-off included) to the end of that response; in `upstream_rq_time` and in
    /// `internal.` or `external.upstream_rq_time`.
    pub fn record_rq_time(&self, ms: u64, internal: bool) {
        self.rq_time.record(ms);
        if internal {
            self.internal_codes.rq_time().record(ms);
        } else {
            self.external_codes.rq_time().record(ms);
        }
    }

    /// Charges the response of an attempt that is being retried (`retry.upstream_rq_<code>`,
    /// `retry.upstream_rq_<class>xx`, `retry.upstream_rq_completed`).
    #[inline]
    pub fn charge_retried(&self, code: u16) {
        self.retry_codes.charge(code);
    }
}

/// A live cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The validated configuration.
    pub config: ClusterConfig,
    /// Stats handles.
    pub stats: ClusterStats,
    /// Upstream TLS (client configuration in force, `ssl.*` stats), shared with the pools.
    pub tls: Option<Arc<ClusterTls>>,
    hosts: ArcSwap<HostSet>,
    /// True once it has endpoints (EDS or DNS answered at least once, or static).
    warmed: std::sync::atomic::AtomicBool,
    /// Outlier detection, when configured.
    outlier: Option<Detector>,
    /// Serialises the writers of `hosts` (endpoint updates, ejections, the outlier sweep);
    /// readers never take it.
    writer: Mutex<()>,
    /// The outlier-detection timer task, aborted when the cluster is dropped.
    timer: OnceLock<tokio::task::AbortHandle>,
}

impl Cluster {
    /// A new cluster with no hosts. With outlier detection, and inside a Tokio runtime, it
    /// also starts the detector's interval timer (one task, stopped when the cluster is
    /// dropped). A TLS cluster has no client configuration yet: install one (see
    /// `tls::SecretStore::attach`) before it can warm.
    pub fn new(config: ClusterConfig, store: &Store) -> Arc<Cluster> {
        let mut stats = ClusterStats::new(store, &config);
        let tls = config
            .tls
            .clone()
            .map(|t| Arc::new(ClusterTls::new(t, config.protocol, store, &config.name)));
        stats.pool.tls = tls.clone();
        let empty = HostSet {
            all: Vec::new(),
            eligible: Vec::new(),
            lb: lb::build(config.lb, &[]),
            panic: false,
        };
        let outlier = config
            .outlier_detection
            .clone()
            .map(|od| Detector::new(od, store, &config.name));
        let cluster = Arc::new(Cluster {
            config,
            stats,
            tls,
            hosts: ArcSwap::from_pointee(empty),
            warmed: std::sync::atomic::AtomicBool::new(false),
            outlier,
            writer: Mutex::new(()),
            timer: OnceLock::new(),
        });
        cluster.start_outlier_timer();
        cluster
    }

    fn start_outlier_timer(self: &Arc<Self>) {
        let Some(od) = &self.outlier else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let interval = od.config().interval;
        let cluster = Arc::downgrade(self);
        // Envoy re-arms the timer after each sweep: sleep, sweep, repeat.
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(c) = cluster.upgrade() else { return };
                c.outlier_tick(Instant::now());
            }
        });
        let _ = self.timer.set(task.abort_handle());
    }

    /// The current hosts.
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// The outlier detector, when configured.
    pub fn outlier(&self) -> Option<&Detector> {
        self.outlier.as_ref()
    }

    /// True once endpoints have arrived and, for a TLS cluster, its client configuration is in
    /// force (Envoy warms a cluster until its SDS secrets arrive).
    pub fn is_warm(&self) -> bool {
        self.warmed.load(std::sync::atomic::Ordering::Acquire)
            && self.tls.as_ref().is_none_or(|t| t.is_ready())
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the endpoints. Hosts whose endpoint did not change are kept (with their pools,
    /// counters and outlier state); a host re-created because its weight, health or priority
    /// changed keeps its outlier state; `hostnames` gives the DNS name per endpoint for
    /// STRICT_DNS clusters.
    pub fn set_endpoints(&self, endpoints: &[EndpointConfig], hostnames: &[Option<String>]) {
        let _writer = self.write_lock();
        let current = self.hosts.load();
        let mut all: Vec<Arc<Host>> = Vec::with_capacity(endpoints.len());
        for (i, ep) in endpoints.iter().enumerate() {
            if let Some(h) = current.all.iter().find(|h| h.same_endpoint(ep)) {
                all.push(h.clone());
                continue;
            }
            let monitor = current
                .all
                .iter()
                .find(|h| {
                    h.address == ep.address
                        && !all.iter().any(|n| Arc::ptr_eq(&n.outlier, &h.outlier))
                })
                .map_or_else(Arc::default, |h| h.outlier.clone());
            all.push(Host::with_monitor(
                ep,
                hostnames.get(i).cloned().flatten(),
                self.config.protocol,
                self.config.connect_timeout,
                self.config.idle_timeout,
                self.stats.pool.clone(),
                monitor,
            ));
        }
        let changed = all.len() != current.all.len()
            || all
                .iter()
                .zip(current.all.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        if let Some(od) = &self.outlier {
            let removed: Vec<&HostMonitor> = current
                .all
                .iter()
                .filter(|old| !all.iter().any(|n| Arc::ptr_eq(&n.outlier, &old.outlier)))
                .map(|old| &*old.outlier)
                .collect();
            od.hosts_removed(&removed);
        }
        self.publish(all);
        if changed {
            self.stats.membership_change.inc();
        }
        self.stats.update_success.inc();
        self.warmed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Builds and publishes a host set over `all` (caller holds the writer lock).
    fn publish(&self, all: Vec<Arc<Host>>) {
        let set = self.build_set(all);
        self.stats.membership_total.set(set.all.len() as u64);
        self.stats
            .membership_healthy
            .set(set.all.iter().filter(|h| healthy(h)).count() as u64);
        self.hosts.store(Arc::new(set));
    }

    /// Charges one attempt's outcome to `host` for outlier detection; call it after every
    /// attempt. A no-op without outlier detection; otherwise a few atomic operations, plus the
    /// writer lock and a host-set rebuild when a consecutive-error threshold is reached.
    ///
    /// `Outcome::Reset` and `Outcome::Timeout` mean the attempt had obtained its connection
    /// (Envoy reports a local-origin connect success first), `ConnectFailure` /
    /// `ConnectTimeout` that it had not: this matters only with
    /// `split_external_local_origin_errors`. Envoy charges `Timeout` for a per-try timeout and
    /// for the route timeout firing on an attempt that had its connection, and charges nothing
    /// when the downstream goes away or for an attempt that never got a host.
    pub fn report(&self, host: &Arc<Host>, outcome: Outcome) {
        self.charge(host, outcome, Instant::now);
    }

    /// [`Cluster::report`] with an explicit clock (the time an ejection is recorded at).
    pub fn report_at(&self, host: &Arc<Host>, outcome: Outcome, now: Instant) {
        self.charge(host, outcome, || now);
    }

    fn charge(&self, host: &Arc<Host>, outcome: Outcome, now: impl FnOnce() -> Instant) {
        let Some(od) = &self.outlier else { return };
        let triggered = od.put(&host.outlier, outcome);
        if !triggered.any() {
            return;
        }
        let now = now();
        let _writer = self.write_lock();
        let set = self.hosts.load();
        // Envoy ignores a host that left the cluster meanwhile.
        if !set
            .all
            .iter()
            .any(|h| Arc::ptr_eq(&h.outlier, &host.outlier))
        {
            return;
        }
        let mut ejected = false;
        for kind in triggered.types() {
            ejected |= od.on_consecutive(set.all.len(), &host.outlier, kind, now);
        }
        if ejected {
            self.publish(set.all.clone());
        }
    }

    /// Runs the outlier detector's interval sweep at `now` (the timer task calls it every
    /// `interval`; tests call it with their own clock).
    pub fn outlier_tick(&self, now: Instant) {
        let Some(od) = &self.outlier else { return };
        let _writer = self.write_lock();
        let set = self.hosts.load();
        let monitors: Vec<&HostMonitor> = set.all.iter().map(|h| &*h.outlier).collect();
        if od.tick(&monitors, now) {
            self.publish(set.all.clone());
        }
    }

    /// Marks a cluster whose endpoints come with it (STATIC) or that may start empty as warm.
    pub fn mark_warm(&self) {
        self.warmed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn build_set(&self, all: Vec<Arc<Host>>) -> HostSet {
        let healthy: Vec<Arc<Host>> = all.iter().filter(|h| healthy(h)).cloned().collect();
        // Envoy's panic threshold: below it, balance over every host (ejected ones included).
        let panic = !all.is_empty()
            && (healthy.len() as f64) * 100.0 < self.config.panic_threshold * all.len() as f64;
        let eligible = if panic { all.clone() } else { healthy };
        let weights: Vec<_> = eligible.iter().map(|h| (h.address, h.weight)).collect();
        HostSet {
            lb: lb::build(self.config.lb, &weights),
            all,
            eligible,
            panic,
        }
    }

    /// Picks a host for one attempt; `excluded` hosts are avoided when possible.
    pub fn pick(&self, hash: Option<u64>, excluded: &[std::net::SocketAddr]) -> Option<Arc<Host>> {
        let set = self.hosts.load();
        if set.panic {
            self.stats.lb_healthy_panic.inc();
        }
        let active = |i: usize| {
            set.eligible
                .get(i)
                .map(|h| h.stats.rq_active.load(std::sync::atomic::Ordering::Relaxed))
                .unwrap_or(0)
        };
        let is_excluded = |i: usize| {
            set.eligible
                .get(i)
                .is_some_and(|h| excluded.contains(&h.address))
        };
        let ctx = PickContext {
            hash,
            active_requests: &active,
            excluded: &is_excluded,
        };
        set.lb.pick(&ctx).and_then(|i| set.eligible.get(i).cloned())
    }
}

/// Eligible for load balancing: healthy per EDS and not ejected by outlier detection.
fn healthy(h: &Host) -> bool {
    h.eligible() && !h.outlier.is_ejected()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.timer.get() {
            t.abort();
        }
        if let Some(od) = &self.outlier {
            let set = self.hosts.load();
            let monitors: Vec<&HostMonitor> = set.all.iter().map(|h| &*h.outlier).collect();
            od.release(&monitors);
        }
    }
}
