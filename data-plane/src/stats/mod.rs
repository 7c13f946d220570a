//! Envoy-named stats: counters, gauges, histograms, and their admin renderings.
//!
//! The request path holds [`Counter`], [`Gauge`] and [`Histogram`] handles (cheap `Arc` clones,
//! obtained once from the [`Store`] by name) and never looks names up. Every update is a single
//! relaxed atomic operation on the handle's own cell: no lock, no allocation.
//!
//! The [`Store`] renders what Envoy's admin serves, byte for byte (checked against output
//! captured from Envoy 1.40 in `fixtures/`):
//!
//! * [`Store::render_text`] — `GET /stats` (`?filter=`, `?usedonly`),
//! * [`Store::render_json`] — `GET /stats?format=json`,
//! * [`Store::render_prometheus`] — `GET /stats/prometheus`, with Envoy's default tag
//!   extraction (cluster names containing dots: see [`Store::set_dotted_cluster_names`]).
//!
//! # Histogram flushes
//!
//! As in Envoy, histogram values shown by the admin are those of the last *stats flush*
//! (`stats_flush_interval`, 5 s by default): the `interval` figures cover the last flush period
//! and the `cumulative` ones everything up to the last flush. The proxy must call
//! [`Store::flush_histograms`] on that period (or use [`Store::spawn_flush_task`]); until the
//! first flush a used histogram shows `nan` quantiles, exactly like Envoy's.

mod codes;
mod histogram;
mod render;
mod tags;

pub use codes::CodeStats;

#[cfg(test)]
mod tests;

use dashmap::DashMap;
use histogram::HistogramCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// A monotonically increasing counter (Envoy `Counter`).
#[derive(Clone, Default)]
pub struct Counter(Arc<CounterCell>);

#[derive(Default)]
struct CounterCell {
    value: AtomicU64,
    /// Set by `add(0)`; a non-zero value also means "used".
    touched: AtomicBool,
}

impl Counter {
    /// A counter that belongs to no store (for tests and optional instrumentation).
    pub fn detached() -> Self {
        Counter::default()
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.value.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (`add(0)` still marks the counter used, as in Envoy).
    #[inline]
    pub fn add(&self, n: u64) {
        if n == 0 {
            self.0.touched.store(true, Ordering::Relaxed);
        } else {
            self.0.value.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Current value.
    #[inline]
    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    /// Whether the counter was ever added to (Envoy's `used()`, for `?usedonly`).
    pub fn used(&self) -> bool {
        self.value() != 0 || self.0.touched.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.value()).finish()
    }
}

/// A value that goes up and down (Envoy `Gauge`, unsigned). Decrementing below zero wraps, as
/// it would in Envoy's release builds; callers keep increments and decrements paired.
#[derive(Clone, Default)]
pub struct Gauge(Arc<GaugeCell>);

#[derive(Default)]
struct GaugeCell {
    value: AtomicU64,
    used: AtomicBool,
}

impl GaugeCell {
    #[inline]
    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}

impl Gauge {
    /// A gauge that belongs to no store.
    pub fn detached() -> Self {
        Gauge::default()
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.value.store(v, Ordering::Relaxed);
        self.0.touch();
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        self.0.touch();
    }

    /// Subtracts `n`.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.value.fetch_sub(n, Ordering::Relaxed);
        self.0.touch();
    }

    /// Current value.
    #[inline]
    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    /// Whether the gauge was ever changed (Envoy's `used()`).
    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Gauge").field(&self.value()).finish()
    }
}

/// A distribution of values in milliseconds (or counts, e.g. `upstream_rq_per_cx`), kept in
/// Envoy's log-linear bins (two significant digits) so that the admin shows Envoy's exact
/// quantiles, and Prometheus buckets on Envoy's default bounds (0.5, 1, 5, 10, 25, 50, 100, 250,
/// 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000).
#[derive(Clone)]
pub struct Histogram(Arc<HistogramCell>);

impl Histogram {
    /// A histogram that belongs to no store.
    pub fn detached() -> Self {
        Histogram(Arc::new(HistogramCell::new()))
    }

    /// Records one value. Lock-free, allocation-free (except once per decade of magnitude).
    #[inline]
    pub fn record(&self, value: u64) {
        self.0.record(value);
    }

    /// Whether anything was ever recorded.
    pub fn used(&self) -> bool {
        self.0.used()
    }

    /// Number of values recorded so far (live, not as of the last flush).
    pub fn sample_count(&self) -> u64 {
        histogram::count(&self.0.live_bins())
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Histogram")
            .field(&self.sample_count())
            .finish()
    }
}

/// All stats of the proxy, by name.
///
/// A cheap handle: clones share the same stats. Lookups (`counter`, `gauge`, `histogram`) are
/// get-or-create and take a shard lock of the name map: they belong to configuration time, not
/// to the request path, which keeps the returned handles.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    counters: DashMap<Box<str>, Counter>,
    gauges: DashMap<Box<str>, Gauge>,
    histograms: DashMap<Box<str>, Histogram>,
    /// Cluster names (containing dots) to tag whole in Prometheus output, longest first.
    dotted_clusters: RwLock<Vec<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("counters", &self.inner.counters.len())
            .field("gauges", &self.inner.gauges.len())
            .field("histograms", &self.inner.histograms.len())
            .finish()
    }
}

fn tag_extractor() -> &'static tags::TagExtractor {
    static EXTRACTOR: OnceLock<tags::TagExtractor> = OnceLock::new();
    EXTRACTOR.get_or_init(tags::TagExtractor::new)
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// The counter named `name`, created (at 0, unused) if needed.
    pub fn counter(&self, name: &str) -> Counter {
        if let Some(c) = self.inner.counters.get(name) {
            return c.clone();
        }
        self.inner.counters.entry(name.into()).or_default().clone()
    }

    /// The gauge named `name`, created (at 0, unused) if needed.
    pub fn gauge(&self, name: &str) -> Gauge {
        if let Some(g) = self.inner.gauges.get(name) {
            return g.clone();
        }
        self.inner.gauges.entry(name.into()).or_default().clone()
    }

    /// The histogram named `name`, created (empty) if needed.
    pub fn histogram(&self, name: &str) -> Histogram {
        if let Some(h) = self.inner.histograms.get(name) {
            return h.clone();
        }
        self.inner
            .histograms
            .entry(name.into())
            .or_insert_with(Histogram::detached)
            .clone()
    }

    /// Removes every stat whose name starts with `prefix` (e.g. `cluster.foo.` when cluster
    /// `foo` is removed, as Envoy drops a deleted cluster's scope). Handles still held keep
    /// working but are no longer rendered.
    pub fn remove_prefix(&self, prefix: &str) {
        self.inner.counters.retain(|k, _| !k.starts_with(prefix));
        self.inner.gauges.retain(|k, _| !k.starts_with(prefix));
        self.inner.histograms.retain(|k, _| !k.starts_with(prefix));
    }

    /// Envoy's stats flush for histograms: makes what was recorded since the previous flush the
    /// new `interval` and adds it to `cumulative`. Call every `stats_flush_interval` (5 s).
    pub fn flush_histograms(&self) {
        for h in self.inner.histograms.iter() {
            h.value().0.flush();
        }
    }

    /// Spawns a tokio task calling [`Store::flush_histograms`] every `every` (Envoy's
    /// `stats_flush_interval`, default 5 s). Must be called within a tokio runtime.
    /// The task ends when every handle of the store is dropped.
    pub fn spawn_flush_task(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.upgrade() {
                    Some(inner) => Store { inner }.flush_histograms(),
                    None => return,
                }
            }
        })
    }

    /// Opt-in (a Legate extension; the default is Envoy's behaviour): in Prometheus output,
    /// stats of these clusters are tagged with the whole cluster name even though it contains
    /// dots. Stock Envoy tags `cluster.payments.v1.upstream_rq_total` as cluster `payments`
    /// with metric `envoy_cluster_v1_upstream_rq_total`; with `payments.v1` registered here it
    /// becomes `envoy_cluster_upstream_rq_total{envoy_cluster_name="payments.v1"}`. Names
    /// without dots are ignored (they are already tagged whole). Replaces the previous list.
    pub fn set_dotted_cluster_names<I, S>(&self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut v: Vec<String> = names
            .into_iter()
            .map(Into::into)
            .filter(|n| n.contains('.'))
            .collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        *self
            .inner
            .dotted_clusters
            .write()
            .unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// `GET /stats`: `name: value` lines for counters and gauges sorted by name, then histogram
    /// lines (`name: P0(interval,cumulative) P25(…) …` or `name: No recorded values`) sorted by
    /// name. `filter` is matched anywhere in the name (Envoy's `?filter=`); `used_only` (Envoy's
    /// `?usedonly`) skips stats that were never touched.
    pub fn render_text(&self, filter: Option<&regex::Regex>, used_only: bool) -> String {
        render::text(self, filter, used_only)
    }

    /// `GET /stats?format=json`: `{"stats":[{"name":…,"value":…},…,{"histograms":{…}}]}`.
    pub fn render_json(&self, filter: Option<&regex::Regex>, used_only: bool) -> serde_json::Value {
        render::json(self, filter, used_only)
    }

    /// `GET /stats/prometheus`: Envoy's text exposition with its default tag extraction.
    pub fn render_prometheus(&self) -> String {
        render::prometheus(self, None, false)
    }

    /// `GET /stats/prometheus?filter=…&usedonly`.
    pub fn render_prometheus_filtered(
        &self,
        filter: Option<&regex::Regex>,
        used_only: bool,
    ) -> String {
        render::prometheus(self, filter, used_only)
    }
}

/// The stat-name form of a listener address, as Envoy builds `listener.<address>.` stats:
/// `127.0.0.1_10000`, `[__1]_10000` (`:` becomes `_`).
pub fn listener_address_stat_name(addr: &SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}
