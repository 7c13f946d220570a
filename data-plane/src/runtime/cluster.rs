//! A live cluster: validated config, stats handles, the current host set with its load
//! balancer, swapped atomically when endpoints change.

use super::host::{Host, PoolStats};
use crate::config::{ClusterConfig, EndpointConfig};
use crate::lb::{self, LoadBalancer, PickContext};
use crate::stats::{Counter, Gauge, Histogram, Store};
use arc_swap::ArcSwap;
use std::sync::{Arc, OnceLock};

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
    /// `upstream_rq_completed`.
    pub rq_completed: Counter,
    /// `upstream_rq_active`.
    pub rq_active: Gauge,
    /// `upstream_rq_pending_total`.
    pub rq_pending_total: Counter,
    /// `upstream_rq_timeout`.
    pub rq_timeout: Counter,
    /// `upstream_rq_time`.
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
    /// `upstream_rq_<class>xx` for classes 1–5.
    classes: [Counter; 5],
    /// `upstream_rq_<code>`, created on first use.
    codes: Box<[OnceLock<Counter>]>,
    /// Connection stats shared by every host's pool.
    pub pool: PoolStats,
    prefix: String,
    store: Store,
}

impl ClusterStats {
    fn new(store: &Store, name: &str) -> Self {
        let p = format!("cluster.{name}.");
        let c = |s: &str| store.counter(&format!("{p}{s}"));
        let g = |s: &str| store.gauge(&format!("{p}{s}"));
        let stats = ClusterStats {
            rq_total: c("upstream_rq_total"),
            rq_completed: c("upstream_rq_completed"),
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
            classes: [
                c("upstream_rq_1xx"),
                c("upstream_rq_2xx"),
                c("upstream_rq_3xx"),
                c("upstream_rq_4xx"),
                c("upstream_rq_5xx"),
            ],
            codes: (0..600).map(|_| OnceLock::new()).collect(),
            pool: PoolStats {
                cx_total: c("upstream_cx_total"),
                cx_active: g("upstream_cx_active"),
                cx_connect_fail: c("upstream_cx_connect_fail"),
                cx_connect_timeout: c("upstream_cx_connect_timeout"),
                cx_http1_total: c("upstream_cx_http1_total"),
                cx_http2_total: c("upstream_cx_http2_total"),
                cx_destroy: c("upstream_cx_destroy"),
            },
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
        ] {
            let _ = stats.store.counter(&format!("{}{name}", stats.prefix));
        }
        stats
    }

    /// Counts a response status: `upstream_rq_<class>xx` and `upstream_rq_<code>`.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100);
        if (1..=5).contains(&class) {
            self.classes[class - 1].inc();
        }
        if let Some(slot) = self.codes.get(usize::from(status)) {
            slot.get_or_init(|| {
                self.store
                    .counter(&format!("{}upstream_rq_{status}", self.prefix))
            })
            .inc();
        }
    }
}

/// A live cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The validated configuration.
    pub config: ClusterConfig,
    /// Stats handles.
    pub stats: ClusterStats,
    hosts: ArcSwap<HostSet>,
    /// True once it has endpoints (EDS or DNS answered at least once, or static).
    warmed: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// A new cluster with no hosts.
    pub fn new(config: ClusterConfig, store: &Store) -> Arc<Cluster> {
        let stats = ClusterStats::new(store, &config.name);
        let empty = HostSet {
            all: Vec::new(),
            eligible: Vec::new(),
            lb: lb::build(config.lb, &[]),
            panic: false,
        };
        Arc::new(Cluster {
            config,
            stats,
            hosts: ArcSwap::from_pointee(empty),
            warmed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The current hosts.
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// True once endpoints have arrived.
    pub fn is_warm(&self) -> bool {
        self.warmed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the endpoints. Hosts whose endpoint did not change are kept (with their pools and
    /// counters); `hostnames` gives the DNS name per endpoint for STRICT_DNS clusters.
    pub fn set_endpoints(&self, endpoints: &[EndpointConfig], hostnames: &[Option<String>]) {
        let current = self.hosts.load();
        let mut all = Vec::with_capacity(endpoints.len());
        for (i, ep) in endpoints.iter().enumerate() {
            let reuse = current.all.iter().find(|h| h.same_endpoint(ep)).cloned();
            all.push(reuse.unwrap_or_else(|| {
                Host::new(
                    ep,
                    hostnames.get(i).cloned().flatten(),
                    self.config.protocol,
                    self.config.connect_timeout,
                    self.config.idle_timeout,
                    self.stats.pool.clone(),
                )
            }));
        }
        let changed = all.len() != current.all.len()
            || all
                .iter()
                .zip(current.all.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        let set = self.build_set(all);
        self.stats.membership_total.set(set.all.len() as u64);
        self.stats
            .membership_healthy
            .set(set.all.iter().filter(|h| h.eligible()).count() as u64);
        if changed {
            self.stats.membership_change.inc();
        }
        self.stats.update_success.inc();
        self.hosts.store(Arc::new(set));
        self.warmed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Marks a cluster whose endpoints come with it (STATIC) or that may start empty as warm.
    pub fn mark_warm(&self) {
        self.warmed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn build_set(&self, all: Vec<Arc<Host>>) -> HostSet {
        let healthy: Vec<Arc<Host>> = all.iter().filter(|h| h.eligible()).cloned().collect();
        // Envoy's panic threshold: below it, balance over every host.
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
