//! Outlier detection (passive health checking) with Envoy's semantics.
//!
//! A [`Detector`] is created per cluster that configures `outlier_detection`; every host carries
//! a [`HostMonitor`] (`Host::outlier`). The router charges each attempt's [`Outcome`] to the
//! host's monitor through `Cluster::report`, which is a few relaxed atomic operations unless a
//! consecutive-error threshold is reached; ejections and the interval sweep take the cluster's
//! writer lock and rebuild its host set without the ejected hosts. None of this does I/O: time
//! is always passed in (`now`), so tests drive the clock by hand; the cluster spawns the one
//! timer task that calls [`Detector::tick`] every `interval`.
//!
//! # Envoy semantics mirrored here
//! Sources: Envoy `source/common/upstream/outlier_detection_impl.{h,cc}` (current main, which
//! 1.40 matches), `source/common/router/{router,upstream_request}.cc` (what the router reports),
//! `source/server/admin/clusters_handler.cc` (`/clusters`), `api/envoy/config/cluster/v3/
//! outlier_detection.proto`, and a real Envoy 1.40.0 (static bootstrap, five Python upstreams,
//! one answering 503) for every observable below.
//!
//! * **What counts.** Without `split_external_local_origin_errors`, an HTTP response is charged
//!   by its status and a local-origin failure as the status Envoy maps it to
//!   ([`Outcome::effective_status`]: connect failure / connect timeout / reset → 503,
//!   timeout → 504). A 5xx increments `consecutive_5xx`; a 502/503/504 also increments
//!   `consecutive_gateway_failure`, any other 5xx resets it; a non-5xx resets both and counts as
//!   a success for the success rate. With the split, local-origin failures only increment
//!   `consecutive_local_origin_failure` (and the local-origin success rate), and responses only
//!   the HTTP counters. Envoy's router also reports "connect success" when a stream gets its
//!   connection (`LocalOriginConnectSuccess` in `onPoolReady`), which with the split resets
//!   `consecutive_local_origin_failure` and counts a local-origin success: a `Response`, a
//!   `Reset` and a `Timeout` are taken to have had that connection (they cannot happen without
//!   one), so only `ConnectFailure` / `ConnectTimeout` accumulate consecutive local-origin
//!   failures, as in Envoy.
//! * **Consecutive thresholds** fire when a counter becomes *equal* to the threshold
//!   (`++consecutive_5xx_ == N`). On firing: if the host is already ejected nothing happens (and
//!   the counter is not reset, so it cannot fire again before a success or an un-ejection);
//!   otherwise `ejections_detected_<type>` is counted, the ejection is attempted, and the
//!   counter is reset (whether or not the ejection was enforced). A 503 reaching both
//!   thresholds fires the gateway failure first, then the 5xx.
//! * **Attempting an ejection** (`ejectHost`): allowed when
//!   `100 × (ejections_active + 1) / hosts ≤ min(max_ejection_percent, 100)`, counted over every
//!   host of the cluster; so with the default 10 % a cluster of fewer than 10 hosts never ejects
//!   (measured: two hosts, 10 % → `ejections_overflow` 1, nothing ejected). Envoy ≥ 1.31 has
//!   `always_eject_one_host` to allow one anyway; the config layer rejects it, so it is off.
//!   Refused → `ejections_overflow`. Allowed → the deprecated `ejections_total` for
//!   consecutive-5xx and success-rate types, then the `enforcing_*` roll (`random % 100 <
//!   percent`); enforced → `ejections_active` +1, `ejections_enforced_total`,
//!   `ejections_enforced_<type>`, the host leaves the load balancer, and its back-off grows
//!   (`if backoff × base < max + base { backoff += 1 }`). Deprecated `ejections_consecutive_5xx`
//!   counts every consecutive-5xx detection that reached `ejectHost` (even on overflow);
//!   `ejections_success_rate` every success-rate detection.
//! * **The interval sweep** (`onIntervalTimer`), every `interval`, re-armed after each run:
//!   1. each ejected host whose `min(base_ejection_time × backoff, max_ejection_time)` has
//!      elapsed since its ejection is returned (`ejections_active` −1, consecutive counters
//!      reset) — so a host comes back at the first sweep after its time is up;
//!   2. every host's current request bucket becomes the one evaluated, and its displayed
//!      success rates are reset to −1;
//!   3. success rate and failure percentage, first for external-origin then local-origin
//!      buckets (the local ones are empty without the split): skipped when the cluster has
//!      fewer hosts than both `*_minimum_hosts`; ejected hosts and hosts without requests are
//!      skipped; a host's success rate (`100 × successes / requests`) is shown in `/clusters`
//!      when its volume ≥ min(both request volumes). Success rate: hosts with volume ≥
//!      `success_rate_request_volume`, needs ≥ `success_rate_minimum_hosts` of them; mean and
//!      *population* standard deviation; threshold = mean − (stdev_factor / 1000) × stdev;
//!      hosts strictly below are ejected (`enforcing_success_rate`, local origin: 100). Failure
//!      percentage: hosts with volume ≥ `failure_percentage_request_volume`, needs ≥
//!      `failure_percentage_minimum_hosts`; ejected when `100 − rate ≥ threshold`
//!      (`enforcing_failure_percentage`, local origin: 0). The cluster's average and threshold
//!      are −1 unless computed in that sweep;
//!   4. each host not ejected, un-ejected at least `interval` ago, has its back-off decremented
//!      (so the ejection time decays by one base per healthy interval after the first).
//! * **Quirk not kept (documented in docs/compat.md)**: Envoy does not skip a host that the
//!   success-rate pass of the same sweep just ejected when the failure-percentage pass also
//!   selects it, so with both enforced the host is "ejected" twice (`ejections_active` +2 and
//!   only −1 when it returns: a gauge leak that then skews the max-percent check). Here the
//!   second pass still counts the detection but does not eject an ejected host again.
//! * **Host set changes**: hosts that stay keep their monitor (a host re-created because its
//!   EDS health or weight changed keeps it too, as Envoy updates such hosts in place); a removed
//!   ejected host gives back its `ejections_active`; when the detector goes away (the cluster is
//!   removed or replaced) every still-ejected host gives it back (Envoy's `~DetectorImpl`).
//! * Not modelled: `max_ejection_time_jitter` (default 0), `successful_active_health_check_
//!   uneject_host` (no active health checking here), `detect_degraded_hosts` and
//!   `always_eject_one_host` (rejected by the config layer), runtime overrides.

use super::Outcome;
use crate::config::OutlierConfig;
use crate::stats::{Counter, Gauge, Store};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `enforcing_local_origin_success_rate`: Envoy's default; the config layer rejects others.
const ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE: u32 = 100;
/// `enforcing_failure_percentage_local_origin`: Envoy's default; the config layer rejects others.
const ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN: u32 = 0;

/// One request in a packed bucket (low 32 bits: requests).
const ONE_REQUEST: u64 = 1;
/// One successful request in a packed bucket (high 32 bits: successes).
const ONE_SUCCESS: u64 = (1 << 32) | 1;

/// The two success-rate monitors Envoy keeps per host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// HTTP responses (and, without the split, local-origin failures as 5xx).
    External = 0,
    /// Local-origin events, only fed with `split_external_local_origin_errors`.
    Local = 1,
}

/// Why a host was (or would have been) ejected (`envoy.data.cluster.v3.OutlierEjectionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionType {
    /// `CONSECUTIVE_5XX`.
    Consecutive5xx,
    /// `CONSECUTIVE_GATEWAY_FAILURE`.
    ConsecutiveGatewayFailure,
    /// `CONSECUTIVE_LOCAL_ORIGIN_FAILURE`.
    ConsecutiveLocalOriginFailure,
    /// `SUCCESS_RATE`.
    SuccessRate,
    /// `SUCCESS_RATE_LOCAL_ORIGIN`.
    LocalOriginSuccessRate,
    /// `FAILURE_PERCENTAGE`.
    FailurePercentage,
    /// `FAILURE_PERCENTAGE_LOCAL_ORIGIN`.
    LocalOriginFailurePercentage,
}

/// The consecutive-error thresholds one outcome reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Triggered {
    /// `consecutive_gateway_failure` reached.
    pub gateway_failure: bool,
    /// `consecutive_5xx` reached.
    pub consecutive_5xx: bool,
    /// `consecutive_local_origin_failure` reached.
    pub local_origin_failure: bool,
}

impl Triggered {
    /// True when any threshold was reached.
    pub fn any(self) -> bool {
        self.gateway_failure || self.consecutive_5xx || self.local_origin_failure
    }

    /// The reached thresholds, in the order Envoy posts them.
    pub fn types(self) -> impl Iterator<Item = EjectionType> {
        [
            (
                self.gateway_failure,
                EjectionType::ConsecutiveGatewayFailure,
            ),
            (self.consecutive_5xx, EjectionType::Consecutive5xx),
            (
                self.local_origin_failure,
                EjectionType::ConsecutiveLocalOriginFailure,
            ),
        ]
        .into_iter()
        .filter_map(|(hit, t)| hit.then_some(t))
    }
}

/// Per-host ejection bookkeeping, touched only by ejection, un-ejection and the sweep.
#[derive(Debug, Default)]
struct Times {
    num_ejections: u32,
    /// Envoy's `ejectTimeBackoff`: the ejection lasts `min(base × backoff, max)`.
    backoff: u32,
    last_ejection: Option<Instant>,
    last_unejection: Option<Instant>,
}

/// One host's outlier-detection state (Envoy's `DetectorHostMonitorImpl`). The request path
/// touches only atomics.
#[derive(Debug)]
pub struct HostMonitor {
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    consecutive_local_origin_failure: AtomicU32,
    /// Requests of the current interval per [`Origin`]: successes << 32 | requests, so the
    /// sweep reads and clears both with one swap.
    buckets: [AtomicU64; 2],
    ejected: AtomicBool,
    /// The last computed success rate per [`Origin`] (`f64` bits), −1 when not computed.
    success_rate: [AtomicU64; 2],
    times: Mutex<Times>,
}

impl Default for HostMonitor {
    fn default() -> Self {
        let minus_one = || AtomicU64::new((-1f64).to_bits());
        HostMonitor {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            consecutive_local_origin_failure: AtomicU32::new(0),
            buckets: [AtomicU64::new(0), AtomicU64::new(0)],
            ejected: AtomicBool::new(false),
            success_rate: [minus_one(), minus_one()],
            times: Mutex::new(Times::default()),
        }
    }
}

impl HostMonitor {
    /// True while the host is ejected (`/failed_outlier_check`).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// The success rate computed at the last sweep, or −1 (as `/clusters` prints it).
    pub fn success_rate(&self, origin: Origin) -> f64 {
        f64::from_bits(self.success_rate[origin as usize].load(Relaxed))
    }

    /// How many times the host has been ejected.
    pub fn num_ejections(&self) -> u32 {
        self.times().num_ejections
    }

    /// The current ejection-time multiplier (Envoy's `ejectTimeBackoff`).
    pub fn ejection_backoff(&self) -> u32 {
        self.times().backoff
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_success_rate(&self, origin: Origin, v: f64) {
        self.success_rate[origin as usize].store(v.to_bits(), Relaxed);
    }

    fn reset_consecutive(&self) {
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway_failure.store(0, Relaxed);
        self.consecutive_local_origin_failure.store(0, Relaxed);
    }
}

/// `cluster.<name>.outlier_detection.*`, all created eagerly as Envoy does.
#[derive(Debug)]
pub struct OutlierStats {
    /// `ejections_active` (gauge).
    pub ejections_active: Gauge,
    /// `ejections_overflow`.
    pub ejections_overflow: Counter,
    /// `ejections_enforced_total`.
    pub ejections_enforced_total: Counter,
    /// Deprecated `ejections_total` (consecutive 5xx and success rate, allowed ejections).
    pub ejections_total: Counter,
    /// Deprecated `ejections_consecutive_5xx`.
    pub ejections_consecutive_5xx: Counter,
    /// Deprecated `ejections_success_rate`.
    pub ejections_success_rate: Counter,
    /// `ejections_detected_<type>`, indexed like [`EjectionType`].
    detected: [Counter; 7],
    /// `ejections_enforced_<type>`, indexed like [`EjectionType`].
    enforced: [Counter; 7],
}

impl OutlierStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}.outlier_detection.");
        let c = |s: &str| store.counter(&format!("{p}{s}"));
        let names = [
            "consecutive_5xx",
            "consecutive_gateway_failure",
            "consecutive_local_origin_failure",
            "success_rate",
            "local_origin_success_rate",
            "failure_percentage",
            "local_origin_failure_percentage",
        ];
        let stats = OutlierStats {
            ejections_active: store.gauge(&format!("{p}ejections_active")),
            ejections_overflow: c("ejections_overflow"),
            ejections_enforced_total: c("ejections_enforced_total"),
            ejections_total: c("ejections_total"),
            ejections_consecutive_5xx: c("ejections_consecutive_5xx"),
            ejections_success_rate: c("ejections_success_rate"),
            detected: names.map(|n| c(&format!("ejections_detected_{n}"))),
            enforced: names.map(|n| c(&format!("ejections_enforced_{n}"))),
        };
        // Envoy 1.40 also exports this one (degraded-host detection, not supported here).
        let _ = c("ejections_detected_degradation");
        stats
    }

    /// `ejections_detected_<type>`.
    pub fn detected(&self, t: EjectionType) -> &Counter {
        &self.detected[t as usize]
    }

    /// `ejections_enforced_<type>`.
    pub fn enforced(&self, t: EjectionType) -> &Counter {
        &self.enforced[t as usize]
    }
}

/// The cluster's success-rate figures from the last sweep (−1 when not computed).
#[derive(Clone, Copy, Debug)]
struct SrNums {
    average: f64,
    threshold: f64,
}

const SR_UNSET: SrNums = SrNums {
    average: -1.0,
    threshold: -1.0,
};

#[derive(Debug)]
struct State {
    /// Envoy's `ejections_active_helper_` value (the gauge's contribution of this detector).
    ejections_active: u64,
    sr: [SrNums; 2],
}

/// A cluster's outlier detector (Envoy's `DetectorImpl`).
#[derive(Debug)]
pub struct Detector {
    config: OutlierConfig,
    /// Stats handles.
    pub stats: OutlierStats,
    state: Mutex<State>,
}

impl Detector {
    /// A detector for cluster `cluster`, its stats in `store`.
    pub fn new(config: OutlierConfig, store: &Store, cluster: &str) -> Self {
        Detector {
            stats: OutlierStats::new(store, cluster),
            config,
            state: Mutex::new(State {
                ejections_active: 0,
                sr: [SR_UNSET; 2],
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The cluster's mean success rate from the last sweep, or −1.
    pub fn success_rate_average(&self, origin: Origin) -> f64 {
        self.lock().sr[origin as usize].average
    }

    /// The cluster's success-rate ejection threshold from the last sweep, or −1.
    pub fn success_rate_ejection_threshold(&self, origin: Origin) -> f64 {
        self.lock().sr[origin as usize].threshold
    }

    /// Envoy's count of active ejections (what `max_ejection_percent` is checked against).
    pub fn ejections_active(&self) -> u64 {
        self.lock().ejections_active
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges one attempt's outcome to a host (the request path: atomics only). Returns the
    /// consecutive thresholds it reached; the caller then calls [`Detector::on_consecutive`]
    /// for each, under its writer lock.
    pub fn put(&self, m: &HostMonitor, outcome: Outcome) -> Triggered {
        let mut t = Triggered::default();
        if self.config.split_external_local_origin_errors {
            match outcome {
                Outcome::ConnectFailure | Outcome::ConnectTimeout => {
                    self.local_origin_failure(m, &mut t)
                }
                // These had their connection: Envoy reported `LocalOriginConnectSuccess` first.
                Outcome::Reset | Outcome::Timeout => {
                    self.local_origin_success(m);
                    self.local_origin_failure(m, &mut t);
                }
                Outcome::Response(code) => {
                    self.local_origin_success(m);
                    self.put_http(m, code, &mut t);
                }
            }
        } else {
            self.put_http(m, outcome.effective_status(), &mut t);
        }
        t
    }

    fn put_http(&self, m: &HostMonitor, code: u16, t: &mut Triggered) {
        let external = &m.buckets[Origin::External as usize];
        if (500..600).contains(&code) {
            external.fetch_add(ONE_REQUEST, Relaxed);
            if matches!(code, 502..=504) {
                let n = m
                    .consecutive_gateway_failure
                    .fetch_add(1, Relaxed)
                    .wrapping_add(1);
                t.gateway_failure = n == self.config.consecutive_gateway_failure;
            } else {
                m.consecutive_gateway_failure.store(0, Relaxed);
            }
            let n = m.consecutive_5xx.fetch_add(1, Relaxed).wrapping_add(1);
            t.consecutive_5xx = n == self.config.consecutive_5xx;
        } else {
            external.fetch_add(ONE_SUCCESS, Relaxed);
            m.consecutive_5xx.store(0, Relaxed);
            m.consecutive_gateway_failure.store(0, Relaxed);
        }
    }

    fn local_origin_failure(&self, m: &HostMonitor, t: &mut Triggered) {
        m.buckets[Origin::Local as usize].fetch_add(ONE_REQUEST, Relaxed);
        let n = m
            .consecutive_local_origin_failure
            .fetch_add(1, Relaxed)
            .wrapping_add(1);
        t.local_origin_failure = n == self.config.consecutive_local_origin_failure;
    }

    fn local_origin_success(&self, m: &HostMonitor) {
        m.buckets[Origin::Local as usize].fetch_add(ONE_SUCCESS, Relaxed);
        m.consecutive_local_origin_failure.store(0, Relaxed);
    }

    /// A consecutive threshold fired for `m`, one of the cluster's `hosts` hosts (the caller
    /// has checked it still belongs to the cluster). Returns true when the host was ejected.
    pub fn on_consecutive(
        &self,
        hosts: usize,
        m: &HostMonitor,
        kind: EjectionType,
        now: Instant,
    ) -> bool {
        if m.is_ejected() {
            return false;
        }
        self.stats.detected(kind).inc();
        let ejected = {
            let mut st = self.lock();
            self.eject(&mut st, hosts, m, kind, now)
        };
        match kind {
            EjectionType::Consecutive5xx => {
                self.stats.ejections_consecutive_5xx.inc();
                m.consecutive_5xx.store(0, Relaxed);
            }
            EjectionType::ConsecutiveGatewayFailure => {
                m.consecutive_gateway_failure.store(0, Relaxed)
            }
            EjectionType::ConsecutiveLocalOriginFailure => {
                m.consecutive_local_origin_failure.store(0, Relaxed)
            }
            _ => {}
        }
        ejected
    }

    fn enforcing(&self, kind: EjectionType) -> u32 {
        let c = &self.config;
        match kind {
            EjectionType::Consecutive5xx => c.enforcing_consecutive_5xx,
            EjectionType::ConsecutiveGatewayFailure => c.enforcing_consecutive_gateway_failure,
            EjectionType::ConsecutiveLocalOriginFailure => {
                c.enforcing_consecutive_local_origin_failure
            }
            EjectionType::SuccessRate => c.enforcing_success_rate,
            EjectionType::LocalOriginSuccessRate => ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE,
            EjectionType::FailurePercentage => c.enforcing_failure_percentage,
            EjectionType::LocalOriginFailurePercentage => ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
        }
    }

    /// Envoy's `ejectHost`. Returns true when the host was (again) marked ejected.
    fn eject(
        &self,
        st: &mut State,
        hosts: usize,
        m: &HostMonitor,
        kind: EjectionType,
        now: Instant,
    ) -> bool {
        let max_percent = f64::from(self.config.max_ejection_percent.min(100));
        let percent = 100.0 * (st.ejections_active + 1) as f64 / hosts.max(1) as f64;
        if percent > max_percent {
            self.stats.ejections_overflow.inc();
            return false;
        }
        if matches!(
            kind,
            EjectionType::Consecutive5xx | EjectionType::SuccessRate
        ) {
            self.stats.ejections_total.inc();
        }
        if !roll(self.enforcing(kind)) {
            return false;
        }
        st.ejections_active += 1;
        self.stats.ejections_active.inc();
        self.stats.ejections_enforced_total.inc();
        self.stats.enforced(kind).inc();
        m.ejected.store(true, Relaxed);
        let mut t = m.times();
        t.num_ejections += 1;
        t.last_ejection = Some(now);
        let base = self.config.base_ejection_time;
        if base * t.backoff < self.config.max_ejection_time + base {
            t.backoff += 1;
        }
        true
    }

    fn uneject(&self, st: &mut State, m: &HostMonitor, now: Instant) {
        st.ejections_active = st.ejections_active.saturating_sub(1);
        self.stats.ejections_active.dec();
        m.ejected.store(false, Relaxed);
        m.reset_consecutive();
        m.times().last_unejection = Some(now);
    }

    /// How long a host ejected with this back-off stays out.
    pub fn ejection_time(&self, backoff: u32) -> Duration {
        (self.config.base_ejection_time * backoff).min(self.config.max_ejection_time)
    }

    /// The interval sweep over the cluster's hosts (Envoy's `onIntervalTimer`). Returns true
    /// when a host was ejected or returned.
    pub fn tick(&self, monitors: &[&HostMonitor], now: Instant) -> bool {
        let mut st = self.lock();
        let mut changed = false;
        let mut buckets = Vec::with_capacity(monitors.len());
        for m in monitors {
            if m.is_ejected() {
                let due = {
                    let t = m.times();
                    let since = t
                        .last_ejection
                        .map_or(Duration::MAX, |e| now.saturating_duration_since(e));
                    self.ejection_time(t.backoff) <= since
                };
                if due {
                    self.uneject(&mut st, m, now);
                    changed = true;
                }
            }
            buckets.push([m.buckets[0].swap(0, Relaxed), m.buckets[1].swap(0, Relaxed)]);
            m.set_success_rate(Origin::Local, -1.0);
            m.set_success_rate(Origin::External, -1.0);
        }
        for origin in [Origin::External, Origin::Local] {
            changed |= self.success_rate_sweep(&mut st, monitors, &buckets, origin, now);
        }
        for m in monitors {
            if !m.is_ejected() {
                let mut t = m.times();
                if let Some(u) = t.last_unejection
                    && now.saturating_duration_since(u) >= self.config.interval
                    && t.backoff != 0
                {
                    t.backoff -= 1;
                }
            }
        }
        changed
    }

    /// Envoy's `processSuccessRateEjections` for one origin.
    fn success_rate_sweep(
        &self,
        st: &mut State,
        monitors: &[&HostMonitor],
        buckets: &[[u64; 2]],
        origin: Origin,
        now: Instant,
    ) -> bool {
        let c = &self.config;
        st.sr[origin as usize] = SR_UNSET;
        let hosts = monitors.len();
        let sr_min_hosts = c.success_rate_minimum_hosts as usize;
        let fp_min_hosts = c.failure_percentage_minimum_hosts as usize;
        if hosts < sr_min_hosts && hosts < fp_min_hosts {
            return false;
        }
        let sr_volume = u64::from(c.success_rate_request_volume);
        let fp_volume = u64::from(c.failure_percentage_request_volume);
        let mut sr_hosts: Vec<(usize, f64)> = Vec::new();
        let mut fp_hosts: Vec<(usize, f64)> = Vec::new();
        let mut sum = 0.0;
        for (i, m) in monitors.iter().enumerate() {
            if m.is_ejected() {
                continue;
            }
            let packed = buckets[i][origin as usize];
            let (successes, volume) = (packed >> 32, packed & 0xffff_ffff);
            if volume == 0 {
                continue;
            }
            let rate = successes as f64 * 100.0 / volume as f64;
            if volume >= sr_volume.min(fp_volume) {
                m.set_success_rate(origin, rate);
            }
            if volume >= sr_volume {
                sr_hosts.push((i, rate));
                sum += rate;
            }
            if volume >= fp_volume {
                fp_hosts.push((i, rate));
            }
        }
        let mut changed = false;
        if !sr_hosts.is_empty() && sr_hosts.len() >= sr_min_hosts {
            let nums = success_rate_threshold(
                sum,
                &sr_hosts,
                f64::from(c.success_rate_stdev_factor) / 1000.0,
            );
            st.sr[origin as usize] = nums;
            let kind = match origin {
                Origin::External => EjectionType::SuccessRate,
                Origin::Local => EjectionType::LocalOriginSuccessRate,
            };
            for &(i, rate) in &sr_hosts {
                if rate < nums.threshold {
                    self.stats.ejections_success_rate.inc();
                    self.stats.detected(kind).inc();
                    changed |= self.eject(st, hosts, monitors[i], kind, now);
                }
            }
        }
        if !fp_hosts.is_empty() && fp_hosts.len() >= fp_min_hosts {
            let threshold = f64::from(c.failure_percentage_threshold);
            let kind = match origin {
                Origin::External => EjectionType::FailurePercentage,
                Origin::Local => EjectionType::LocalOriginFailurePercentage,
            };
            for &(i, rate) in &fp_hosts {
                if 100.0 - rate >= threshold {
                    self.stats.detected(kind).inc();
                    // Unlike Envoy, a host the success-rate pass just ejected is not ejected
                    // again (see the module docs).
                    if !monitors[i].is_ejected() {
                        changed |= self.eject(st, hosts, monitors[i], kind, now);
                    }
                }
            }
        }
        changed
    }

    /// Hosts left the cluster: the ejected ones give back their `ejections_active`.
    pub fn hosts_removed(&self, removed: &[&HostMonitor]) {
        let mut st = self.lock();
        for _ in removed.iter().filter(|m| m.is_ejected()) {
            st.ejections_active = st.ejections_active.saturating_sub(1);
            self.stats.ejections_active.dec();
        }
    }

    /// The detector goes away with its cluster (Envoy's `~DetectorImpl`): every ejected host
    /// gives back its `ejections_active`.
    pub fn release(&self, monitors: &[&HostMonitor]) {
        self.hosts_removed(monitors);
    }
}

/// Envoy's `successRateEjectionThreshold`: mean and mean − factor × population stdev.
fn success_rate_threshold(sum: f64, hosts: &[(usize, f64)], factor: f64) -> SrNums {
    let n = hosts.len() as f64;
    let mean = sum / n;
    let variance = hosts.iter().map(|&(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    SrNums {
        average: mean,
        threshold: mean - factor * variance.sqrt(),
    }
}

/// Envoy's `featureEnabled(key, percent)`: true with probability `percent` %.
fn roll(percent: u32) -> bool {
    percent >= 100 || (percent > 0 && rand::random::<u32>() % 100 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{
        CircuitBreakerThresholds, ClusterConfig, Discovery, EndpointConfig, EndpointHealth,
        LbPolicy, UpstreamProtocol,
    };
    use crate::runtime::cluster::Cluster;
    use crate::runtime::host::Host;
    use std::sync::Arc;

    const S: Duration = Duration::from_secs(1);

    fn endpoints(n: usize) -> Vec<EndpointConfig> {
        (0..n)
            .map(|i| EndpointConfig {
                address: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                weight: 1,
                locality_weight: 1,
                priority: 0,
                health: EndpointHealth::Healthy,
            })
            .collect()
    }

    fn config(od: Option<OutlierConfig>, n: usize, panic_threshold: f64) -> ClusterConfig {
        ClusterConfig {
            name: "c".into(),
            discovery: Discovery::Static(endpoints(n)),
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(5),
            protocol: UpstreamProtocol::Http1,
            circuit_breakers: CircuitBreakerThresholds::default(),
            outlier_detection: od,
            panic_threshold,
            buffer_limit: 1 << 20,
            idle_timeout: None,
            max_requests_per_connection: None,
            per_host_max_connections: None,
            tls: None,
        }
    }

    fn cluster_with(od: OutlierConfig, n: usize, panic_threshold: f64) -> (Arc<Cluster>, Store) {
        let store = Store::new();
        let c = Cluster::new(config(Some(od), n, panic_threshold), &store);
        c.set_endpoints(&endpoints(n), &[]);
        (c, store)
    }

    /// `n` hosts, every ejection allowed, no panic mode.
    fn cluster(od: OutlierConfig, n: usize) -> (Arc<Cluster>, Store) {
        cluster_with(
            OutlierConfig {
                max_ejection_percent: 100,
                ..od
            },
            n,
            0.0,
        )
    }

    fn host(c: &Cluster, i: usize) -> Arc<Host> {
        c.hosts().all[i].clone()
    }

    fn stat(store: &Store, name: &str) -> u64 {
        store
            .counter(&format!("cluster.c.outlier_detection.{name}"))
            .value()
    }

    fn active(store: &Store) -> u64 {
        store
            .gauge("cluster.c.outlier_detection.ejections_active")
            .value()
    }

    fn report_n(c: &Cluster, h: &Arc<Host>, outcome: Outcome, n: usize, now: Instant) {
        for _ in 0..n {
            c.report_at(h, outcome, now);
        }
    }

    fn eligible(c: &Cluster) -> Vec<std::net::SocketAddr> {
        c.hosts().eligible.iter().map(|h| h.address).collect()
    }

    #[test]
    fn consecutive_5xx_ejects_at_n_not_before() {
        let (c, store) = cluster(OutlierConfig::default(), 3);
        let h = host(&c, 1);
        let t0 = Instant::now();
        report_n(&c, &h, Outcome::Response(500), 4, t0);
        assert!(!h.outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 0);
        assert_eq!(eligible(&c).len(), 3);
        c.report_at(&h, Outcome::Response(500), t0);
        assert!(h.outlier.is_ejected());
        assert!(!eligible(&c).contains(&h.address));
        for s in [
            "ejections_detected_consecutive_5xx",
            "ejections_enforced_consecutive_5xx",
            "ejections_enforced_total",
            "ejections_total",
            "ejections_consecutive_5xx",
        ] {
            assert_eq!(stat(&store, s), 1, "{s}");
        }
        assert_eq!(active(&store), 1);
        assert_eq!(stat(&store, "ejections_overflow"), 0);
        // Local-origin failures count as 5xx without the split.
        let h2 = host(&c, 2);
        for o in [
            Outcome::ConnectFailure,
            Outcome::ConnectTimeout,
            Outcome::Reset,
            Outcome::Timeout,
        ] {
            c.report_at(&h2, o, t0);
        }
        assert!(!h2.outlier.is_ejected());
        c.report_at(&h2, Outcome::Response(503), t0);
        assert!(h2.outlier.is_ejected());
        assert_eq!(active(&store), 2);
    }

    #[test]
    fn success_resets_consecutive_5xx() {
        let (c, store) = cluster(OutlierConfig::default(), 3);
        let h = host(&c, 0);
        let t0 = Instant::now();
        report_n(&c, &h, Outcome::Response(502), 4, t0);
        c.report_at(&h, Outcome::Response(404), t0);
        report_n(&c, &h, Outcome::Response(500), 4, t0);
        assert!(!h.outlier.is_ejected());
        c.report_at(&h, Outcome::Response(200), t0);
        report_n(&c, &h, Outcome::Response(503), 4, t0);
        assert!(!h.outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 0);
        c.report_at(&h, Outcome::Response(503), t0);
        assert!(h.outlier.is_ejected());
    }

    #[test]
    fn enforcing_zero_detects_without_ejecting_and_resets_the_count() {
        let od = OutlierConfig {
            consecutive_5xx: 2,
            enforcing_consecutive_5xx: 0,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 2);
        let h = host(&c, 0);
        let t0 = Instant::now();
        report_n(&c, &h, Outcome::Response(500), 5, t0);
        assert!(!h.outlier.is_ejected());
        // Fires at 2 and 4 (the counter is reset after each detection).
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 2);
        assert_eq!(stat(&store, "ejections_consecutive_5xx"), 2);
        assert_eq!(stat(&store, "ejections_total"), 2);
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 0);
        assert_eq!(stat(&store, "ejections_enforced_total"), 0);
        assert_eq!(active(&store), 0);
        assert_eq!(eligible(&c).len(), 2);
    }

    #[test]
    fn gateway_failure_detected_by_default_enforced_when_asked() {
        // Defaults: gateway failure detected at 5 but not enforced; the 5xx count ejects.
        let (c, store) = cluster(OutlierConfig::default(), 2);
        let h = host(&c, 0);
        let t0 = Instant::now();
        report_n(&c, &h, Outcome::Response(503), 5, t0);
        assert_eq!(
            stat(&store, "ejections_detected_consecutive_gateway_failure"),
            1
        );
        assert_eq!(
            stat(&store, "ejections_enforced_consecutive_gateway_failure"),
            0
        );
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);
        assert!(h.outlier.is_ejected());

        let od = OutlierConfig {
            consecutive_5xx: 100,
            consecutive_gateway_failure: 3,
            enforcing_consecutive_gateway_failure: 100,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 2);
        let h = host(&c, 0);
        // A 500 is a 5xx but not a gateway error: it resets the gateway count.
        report_n(&c, &h, Outcome::Response(502), 2, t0);
        c.report_at(&h, Outcome::Response(500), t0);
        report_n(&c, &h, Outcome::Response(504), 2, t0);
        assert!(!h.outlier.is_ejected());
        // A timeout is charged as 504.
        c.report_at(&h, Outcome::Timeout, t0);
        assert!(h.outlier.is_ejected());
        assert_eq!(
            stat(&store, "ejections_enforced_consecutive_gateway_failure"),
            1
        );
        assert_eq!(stat(&store, "ejections_total"), 0, "only 5xx/SR count here");
        assert_eq!(stat(&store, "ejections_enforced_total"), 1);
    }

    #[test]
    fn split_local_origin_errors() {
        let od = OutlierConfig {
            split_external_local_origin_errors: true,
            consecutive_5xx: 3,
            consecutive_local_origin_failure: 3,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 3);
        let t0 = Instant::now();
        // Local-origin failures do not count as 5xx.
        let a = host(&c, 0);
        report_n(&c, &a, Outcome::ConnectFailure, 2, t0);
        report_n(&c, &a, Outcome::Response(500), 2, t0);
        c.report_at(&a, Outcome::ConnectTimeout, t0);
        assert!(!a.outlier.is_ejected());
        c.report_at(&a, Outcome::Response(500), t0);
        assert!(a.outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);
        assert_eq!(
            stat(
                &store,
                "ejections_detected_consecutive_local_origin_failure"
            ),
            0
        );
        // A response means the connection succeeded: it resets the local-origin count.
        let b = host(&c, 1);
        report_n(&c, &b, Outcome::ConnectFailure, 2, t0);
        c.report_at(&b, Outcome::Response(200), t0);
        report_n(&c, &b, Outcome::ConnectFailure, 2, t0);
        assert!(!b.outlier.is_ejected());
        c.report_at(&b, Outcome::ConnectTimeout, t0);
        assert!(b.outlier.is_ejected());
        assert_eq!(
            stat(
                &store,
                "ejections_detected_consecutive_local_origin_failure"
            ),
            1
        );
        assert_eq!(
            stat(
                &store,
                "ejections_enforced_consecutive_local_origin_failure"
            ),
            1
        );
        assert_eq!(stat(&store, "ejections_total"), 1, "only the 5xx one");
        // Resets and timeouts happen on an obtained connection: they never add up.
        let d = host(&c, 2);
        report_n(&c, &d, Outcome::Reset, 5, t0);
        report_n(&c, &d, Outcome::Timeout, 5, t0);
        assert!(!d.outlier.is_ejected());
    }

    /// Feeds `volume` requests of which `ok` succeed to host `i`.
    fn feed(c: &Cluster, i: usize, ok: usize, volume: usize, now: Instant) {
        let h = host(c, i);
        for k in 0..volume {
            let o = if k < ok {
                Outcome::Response(200)
            } else {
                Outcome::Response(500)
            };
            c.report_at(&h, o, now);
        }
    }

    #[test]
    fn success_rate_on_a_known_distribution() {
        // Rates 100, 100, 100, 90, 50 (volume 10 each, 5 hosts).
        // mean = 440 / 5 = 88; deviations 12, 12, 12, 2, -38; squares 144 × 3 + 4 + 1444 = 1880;
        // variance = 376; stdev = 19.390719…; factor 1.9 → threshold = 88 − 36.842366… =
        // 51.157634…: only the 50 % host is below it.
        let od = OutlierConfig {
            consecutive_5xx: 1000,
            consecutive_gateway_failure: 1000,
            success_rate_request_volume: 10,
            interval: 10 * S,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 5);
        let t0 = Instant::now();
        for (i, ok) in [10, 10, 10, 9, 5].into_iter().enumerate() {
            feed(&c, i, ok, 10, t0);
        }
        let d = c.outlier().unwrap();
        assert_eq!(d.success_rate_average(Origin::External), -1.0);
        c.outlier_tick(t0 + 10 * S);
        let expected_threshold = 88.0 - 1.9 * 376f64.sqrt();
        assert_eq!(d.success_rate_average(Origin::External), 88.0);
        assert!(
            (d.success_rate_ejection_threshold(Origin::External) - expected_threshold).abs() < 1e-9
        );
        assert!((expected_threshold - 51.157_634).abs() < 1e-5);
        assert!(host(&c, 4).outlier.is_ejected());
        assert!((0..4).all(|i| !host(&c, i).outlier.is_ejected()));
        assert_eq!(host(&c, 3).outlier.success_rate(Origin::External), 90.0);
        assert_eq!(host(&c, 4).outlier.success_rate(Origin::External), 50.0);
        assert_eq!(host(&c, 0).outlier.success_rate(Origin::Local), -1.0);
        assert_eq!(stat(&store, "ejections_detected_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_enforced_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_total"), 1);
        // Failure percentage was not evaluated (volume 10 < 50).
        assert_eq!(stat(&store, "ejections_detected_failure_percentage"), 0);
        // Next sweep without traffic: figures go back to −1.
        c.outlier_tick(t0 + 20 * S);
        assert_eq!(d.success_rate_average(Origin::External), -1.0);
        assert_eq!(host(&c, 3).outlier.success_rate(Origin::External), -1.0);
    }

    #[test]
    fn success_rate_needs_volume_and_minimum_hosts() {
        let od = OutlierConfig {
            consecutive_5xx: 1000,
            consecutive_gateway_failure: 1000,
            success_rate_request_volume: 10,
            failure_percentage_request_volume: 10,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 5);
        let t0 = Instant::now();
        // Only four hosts reach the volume: no success-rate evaluation.
        for (i, ok) in [10, 10, 10, 0].into_iter().enumerate() {
            feed(&c, i, ok, 10, t0);
        }
        feed(&c, 4, 9, 9, t0);
        c.outlier_tick(t0 + 10 * S);
        let d = c.outlier().unwrap();
        assert_eq!(d.success_rate_average(Origin::External), -1.0);
        assert_eq!(stat(&store, "ejections_detected_success_rate"), 0);
        assert_eq!(host(&c, 3).outlier.success_rate(Origin::External), 0.0);
        assert_eq!(host(&c, 4).outlier.success_rate(Origin::External), -1.0);
        assert!(!host(&c, 3).outlier.is_ejected());
    }

    #[test]
    fn failure_percentage() {
        let od = OutlierConfig {
            consecutive_5xx: 1000,
            consecutive_gateway_failure: 1000,
            failure_percentage_request_volume: 20,
            failure_percentage_threshold: 50,
            failure_percentage_minimum_hosts: 4,
            enforcing_failure_percentage: 100,
            enforcing_success_rate: 0,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 5);
        let t0 = Instant::now();
        // Failure 50 % (ejected: ≥ threshold), 45 % (kept), 100 % on too little volume (kept).
        feed(&c, 0, 10, 20, t0);
        feed(&c, 1, 11, 20, t0);
        feed(&c, 2, 20, 20, t0);
        feed(&c, 3, 20, 20, t0);
        feed(&c, 4, 0, 19, t0);
        c.outlier_tick(t0 + 10 * S);
        assert!(host(&c, 0).outlier.is_ejected());
        assert!((1..5).all(|i| !host(&c, i).outlier.is_ejected()));
        assert_eq!(stat(&store, "ejections_detected_failure_percentage"), 1);
        assert_eq!(stat(&store, "ejections_enforced_failure_percentage"), 1);
        assert_eq!(stat(&store, "ejections_total"), 0);
        // The success rate was not evaluated (volume 100 not reached): −1.
        assert_eq!(
            c.outlier().unwrap().success_rate_average(Origin::External),
            -1.0
        );
        assert_eq!(host(&c, 1).outlier.success_rate(Origin::External), 55.0);
    }

    #[test]
    fn success_rate_and_failure_percentage_eject_once() {
        // Rates 100 × 4 and 0: SR threshold 80 − 1.9 × 40 = 4 ejects the 0 % host, and the
        // failure-percentage pass (100 % ≥ 85 %) detects it too. Envoy 1.40 "ejects" it a second
        // time (measured: ejections_active 2); we count the detection but eject once.
        let od = OutlierConfig {
            consecutive_5xx: 1000,
            consecutive_gateway_failure: 1000,
            success_rate_request_volume: 10,
            failure_percentage_request_volume: 10,
            enforcing_failure_percentage: 100,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 5);
        let t0 = Instant::now();
        for (i, ok) in [10, 0, 10, 10, 10].into_iter().enumerate() {
            feed(&c, i, ok, 10, t0);
        }
        c.outlier_tick(t0 + 10 * S);
        let d = c.outlier().unwrap();
        assert_eq!(d.success_rate_average(Origin::External), 80.0);
        assert_eq!(d.success_rate_ejection_threshold(Origin::External), 4.0);
        assert!(host(&c, 1).outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_enforced_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_detected_failure_percentage"), 1);
        assert_eq!(stat(&store, "ejections_enforced_failure_percentage"), 0);
        assert_eq!(stat(&store, "ejections_enforced_total"), 1);
        assert_eq!(active(&store), 1);
        assert_eq!(host(&c, 1).outlier.ejection_backoff(), 1);
    }

    #[test]
    fn ejection_time_multiplies_caps_and_decays() {
        let od = OutlierConfig {
            consecutive_5xx: 1,
            interval: 10 * S,
            base_ejection_time: 30 * S,
            max_ejection_time: 70 * S,
            ..OutlierConfig::default()
        };
        let (c, _store) = cluster(od, 2);
        let h = host(&c, 0);
        let t0 = Instant::now();
        // Ejected at t0 with back-off 1: 30 s.
        c.report_at(&h, Outcome::Response(500), t0);
        c.outlier_tick(t0 + 29 * S);
        assert!(h.outlier.is_ejected());
        // Un-ejected at the first sweep after 30 s have passed.
        c.outlier_tick(t0 + 31 * S);
        assert!(!h.outlier.is_ejected());
        // Ejected again at once: back-off 2 → 60 s.
        let t1 = t0 + 32 * S;
        c.report_at(&h, Outcome::Response(500), t1);
        assert_eq!(h.outlier.ejection_backoff(), 2);
        c.outlier_tick(t1 + 59 * S);
        assert!(h.outlier.is_ejected());
        c.outlier_tick(t1 + 60 * S);
        assert!(!h.outlier.is_ejected());
        // Third: back-off 3 → 90 s capped at 70 s; a fourth stops growing (3 × 30 ≥ 70 + 30).
        let t2 = t1 + 61 * S;
        c.report_at(&h, Outcome::Response(500), t2);
        assert_eq!(h.outlier.ejection_backoff(), 3);
        c.outlier_tick(t2 + 69 * S);
        assert!(h.outlier.is_ejected());
        c.outlier_tick(t2 + 70 * S);
        assert!(!h.outlier.is_ejected());
        let t3 = t2 + 71 * S;
        c.report_at(&h, Outcome::Response(500), t3);
        assert_eq!(h.outlier.ejection_backoff(), 4);
        c.outlier_tick(t3 + 70 * S);
        assert!(!h.outlier.is_ejected());
        let t4 = t3 + 71 * S;
        c.report_at(&h, Outcome::Response(500), t4);
        assert_eq!(
            h.outlier.ejection_backoff(),
            4,
            "4 × 30 ≥ 70 + 30: no more growth"
        );
        assert_eq!(h.outlier.num_ejections(), 5);
        c.outlier_tick(t4 + 70 * S);
        assert!(!h.outlier.is_ejected());
        // Healthy sweeps: none in the first interval after the un-ejection, then −1 each.
        let u = t4 + 70 * S;
        c.outlier_tick(u + 5 * S);
        assert_eq!(h.outlier.ejection_backoff(), 4);
        c.outlier_tick(u + 10 * S);
        assert_eq!(h.outlier.ejection_backoff(), 3);
        c.outlier_tick(u + 20 * S);
        c.outlier_tick(u + 30 * S);
        assert_eq!(h.outlier.ejection_backoff(), 1);
        c.outlier_tick(u + 40 * S);
        c.outlier_tick(u + 50 * S);
        assert_eq!(h.outlier.ejection_backoff(), 0);
        // Back to the base time.
        let t5 = u + 51 * S;
        c.report_at(&h, Outcome::Response(500), t5);
        assert_eq!(h.outlier.ejection_backoff(), 1);
        c.outlier_tick(t5 + 30 * S);
        assert!(!h.outlier.is_ejected());
    }

    #[test]
    fn unejection_waits_for_the_sweep_and_resets_counters() {
        let od = OutlierConfig {
            consecutive_5xx: 3,
            base_ejection_time: 30 * S,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 2);
        let h = host(&c, 0);
        let t0 = Instant::now();
        report_n(&c, &h, Outcome::Response(500), 3, t0);
        assert!(h.outlier.is_ejected());
        // Failures while ejected: the count reaches 3 again, but an ejected host is ignored.
        report_n(&c, &h, Outcome::Response(500), 5, t0 + S);
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
        // Time is up at t0 + 30 s, but nothing happens before a sweep.
        c.report_at(&h, Outcome::Response(500), t0 + 40 * S);
        assert!(h.outlier.is_ejected());
        c.outlier_tick(t0 + 40 * S);
        assert!(!h.outlier.is_ejected());
        assert_eq!(active(&store), 0);
        assert_eq!(eligible(&c).len(), 2);
        // The un-ejection reset the count: three more are needed.
        report_n(&c, &h, Outcome::Response(500), 2, t0 + 41 * S);
        assert!(!h.outlier.is_ejected());
        c.report_at(&h, Outcome::Response(500), t0 + 41 * S);
        assert!(h.outlier.is_ejected());
    }

    #[test]
    fn max_ejection_percent_overflow() {
        let t0 = Instant::now();
        // Default 10 % with two hosts: (0 + 1) / 2 = 50 % > 10 %: overflow, nothing ejected.
        let od = OutlierConfig {
            consecutive_5xx: 1,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster_with(od.clone(), 2, 0.0);
        let h = host(&c, 0);
        c.report_at(&h, Outcome::Response(500), t0);
        assert!(!h.outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_overflow"), 1);
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(stat(&store, "ejections_consecutive_5xx"), 1);
        assert_eq!(stat(&store, "ejections_total"), 0);
        assert_eq!(active(&store), 0);
        // 50 % of 4 hosts: two ejections, the third overflows.
        let (c, store) = cluster_with(
            OutlierConfig {
                max_ejection_percent: 50,
                ..od.clone()
            },
            4,
            0.0,
        );
        for i in 0..3 {
            c.report_at(&host(&c, i), Outcome::Response(500), t0);
        }
        let ejected: Vec<bool> = (0..4).map(|i| host(&c, i).outlier.is_ejected()).collect();
        assert_eq!(ejected, [true, true, false, false]);
        assert_eq!(stat(&store, "ejections_overflow"), 1);
        assert_eq!(active(&store), 2);
        // 10 % of 10 hosts: exactly one.
        let (c, store) = cluster_with(od, 10, 0.0);
        for i in 0..2 {
            c.report_at(&host(&c, i), Outcome::Response(500), t0);
        }
        assert!(host(&c, 0).outlier.is_ejected());
        assert!(!host(&c, 1).outlier.is_ejected());
        assert_eq!(stat(&store, "ejections_overflow"), 1);
    }

    #[test]
    fn panic_mode_balances_over_all_hosts() {
        // Two of four hosts ejected: 50 % healthy is not below the 50 % threshold.
        let od = OutlierConfig {
            consecutive_5xx: 1,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster_with(od, 4, 50.0);
        let t0 = Instant::now();
        for i in 0..2 {
            c.report_at(&host(&c, i), Outcome::Response(503), t0);
        }
        assert!(!c.hosts().panic);
        assert_eq!(eligible(&c), vec![host(&c, 2).address, host(&c, 3).address]);
        assert_eq!(store.gauge("cluster.c.membership_healthy").value(), 2);
        let panics = store.counter("cluster.c.lb_healthy_panic");
        c.pick(None, &[]).unwrap();
        assert_eq!(panics.value(), 0);
        // A third: 25 % < 50 % → panic, every host is balanced over again.
        c.report_at(&host(&c, 2), Outcome::Response(503), t0);
        assert!(c.hosts().panic);
        assert_eq!(eligible(&c).len(), 4);
        assert_eq!(store.gauge("cluster.c.membership_healthy").value(), 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            seen.insert(c.pick(None, &[]).unwrap().address);
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(panics.value(), 8);
    }

    #[test]
    fn lb_never_picks_an_ejected_host_while_others_are_healthy() {
        let od = OutlierConfig {
            consecutive_5xx: 2,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster_with(
            OutlierConfig {
                max_ejection_percent: 50,
                ..od
            },
            3,
            50.0,
        );
        let t0 = Instant::now();
        let bad = host(&c, 1);
        report_n(&c, &bad, Outcome::ConnectFailure, 2, t0);
        assert!(bad.outlier.is_ejected());
        for _ in 0..100 {
            let h = c.pick(None, &[]).unwrap();
            assert_ne!(h.address, bad.address);
            c.report_at(&h, Outcome::Response(200), t0);
        }
        assert_eq!(store.counter("cluster.c.lb_healthy_panic").value(), 0);
        // Back after its time, picked again.
        c.outlier_tick(t0 + 31 * S);
        assert!((0..10).any(|_| c.pick(None, &[]).unwrap().address == bad.address));
    }

    #[test]
    fn endpoint_updates_keep_state_and_release_removed_ejections() {
        let od = OutlierConfig {
            consecutive_5xx: 3,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 3);
        let t0 = Instant::now();
        let a = host(&c, 0);
        let b = host(&c, 1);
        report_n(&c, &a, Outcome::Response(500), 3, t0);
        report_n(&c, &b, Outcome::Response(500), 2, t0);
        assert_eq!(active(&store), 1);
        // Same endpoints plus one: state kept (a still ejected, b one failure away).
        let mut eps = endpoints(4);
        c.set_endpoints(&eps, &[]);
        assert!(Arc::ptr_eq(&host(&c, 0), &a));
        assert!(host(&c, 0).outlier.is_ejected());
        assert!(!eligible(&c).contains(&a.address));
        c.report_at(&b, Outcome::Response(500), t0);
        assert!(b.outlier.is_ejected());
        assert_eq!(active(&store), 2);
        // b's EDS weight changes: a new Host, same detector state.
        eps[1].weight = 7;
        c.set_endpoints(&eps, &[]);
        let b2 = host(&c, 1);
        assert!(!Arc::ptr_eq(&b2, &b));
        assert!(b2.outlier.is_ejected());
        assert!(!eligible(&c).contains(&b2.address));
        // a is removed: its ejection is given back.
        c.set_endpoints(&eps[1..], &[]);
        assert_eq!(active(&store), 1);
        // Reports for a host that left are ignored.
        report_n(&c, &a, Outcome::Response(500), 10, t0);
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 2);
        // The cluster goes away: the remaining ejection is given back too.
        drop(c);
        assert_eq!(active(&store), 0);
    }

    #[test]
    fn stats_are_created_eagerly() {
        let (_c, store) = cluster(OutlierConfig::default(), 1);
        let text = store.render_text(None, false);
        let names: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("cluster.c.outlier_detection."))
            .collect();
        assert_eq!(names.len(), 21, "{names:#?}");
        assert!(text.contains("cluster.c.outlier_detection.ejections_detected_degradation: 0"));
    }

    #[test]
    fn no_detector_no_effect() {
        let store = Store::new();
        let plain = Cluster::new(config(None, 2, 50.0), &store);
        plain.set_endpoints(&endpoints(2), &[]);
        let h = host(&plain, 0);
        report_n(&plain, &h, Outcome::Response(500), 50, Instant::now());
        assert!(!h.outlier.is_ejected());
        assert!(plain.outlier().is_none());
        assert_eq!(plain.hosts().eligible.len(), 2);
        assert!(!store.render_text(None, false).contains("outlier_detection"));
    }

    #[tokio::test]
    async fn the_timer_task_sweeps_and_stops_with_the_cluster() {
        // The only test on the real clock: it checks the wiring of the timer task.
        let ms = Duration::from_millis(10);
        let od = OutlierConfig {
            consecutive_5xx: 1,
            interval: ms,
            base_ejection_time: ms,
            ..OutlierConfig::default()
        };
        let (c, store) = cluster(od, 2);
        let h = host(&c, 0);
        c.report(&h, Outcome::Response(500));
        assert!(h.outlier.is_ejected());
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.outlier.is_ejected() && Instant::now() < deadline {
            tokio::time::sleep(ms).await;
        }
        assert!(!h.outlier.is_ejected(), "the sweep returned the host");
        c.report(&h, Outcome::Response(500));
        assert_eq!(active(&store), 1);
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(
            weak.upgrade().is_none(),
            "the task holds no strong reference"
        );
        assert_eq!(active(&store), 0);
        tokio::time::sleep(3 * ms).await;
    }
}
