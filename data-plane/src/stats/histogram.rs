//! Lock-free histogram storage with Envoy's (libcircllhist's) log-linear bins, and the maths
//! Envoy's admin applies to them (quantiles, bucket counts, sum).
//!
//! # Bins
//!
//! Envoy records every histogram value `v` (an integer, milliseconds for `_ms`/`_time` stats)
//! with `hist_insert_intscale(v, 0)`: the value is kept to two significant digits. So
//! `0` has its own bin, `1..=9` get one bin each (`[v, v + 0.1)` in circllhist's terms), and
//! every further decade has 90 bins (`[10,11)`, …, `[99,100)`, `[100,110)`, …). A `u64` needs
//! `1 + 9 + 19 × 90 = 1720` bins. The first ten are inline; each further decade is allocated the
//! first time a value falls into it (once, never per record), so a histogram costs ~250 bytes
//! until it sees large values.
//!
//! # What the admin shows (measured against Envoy 1.40)
//!
//! * Quantile `q` of `N` samples: rank `x = max(1, ceil(q × N))`; in the bin holding rank `x`
//!   (left edge `L`, width `w`, `c` samples, `before` samples in earlier bins) the value is
//!   `L + w × (x − before) / (c + 1)` — the samples are taken as evenly spaced inside the bin.
//!   The zero bin has width 0.
//! * Prometheus bucket `le = B` counts the bins whose left edge is `≤ B` (so a 1 ms request is
//!   in `le="1"`).
//! * `_sum` adds, per sample, `L + w·L / (2L + w)` — the harmonic mean `2·L·R / (L + R)` of
//!   its bin's edges, computed in that order (the order matters for the last digits).
//!
//! All three reproduce Envoy's output digit for digit on the captured fixtures
//! (`fixtures/envoy_histograms_detailed.txt`), including the last bits of the doubles, so the
//! arithmetic below is written in the same order as the C code it mirrors.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Number of bins needed for all `u64` values.
#[cfg(test)]
pub(crate) const NUM_BINS: usize = 10 + 19 * 90;

/// Envoy's supported quantiles, as fractions.
pub(crate) const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Envoy's default histogram bucket bounds (`stats_config.histogram_bucket_settings` unset).
pub(crate) const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// circllhist's `power_of_ten` table (exact for these exponents).
const POW10_F: [f64; 20] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19,
];

const POW10_U: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

type Decade = [AtomicU64; 90];

/// Sparse bin counts: `(bin index, count)` in increasing bin order, no zero counts.
pub(crate) type Bins = Vec<(u16, u64)>;

/// The shared state behind a [`super::Histogram`] handle.
pub(crate) struct HistogramCell {
    /// Bin 0 (value 0) and bins 1..=9 (values 1..=9).
    low: [AtomicU64; 10],
    /// Decade `e` (values with `ilog10 == e`, `e` in 1..=19) at index `e - 1`.
    decades: [OnceLock<Box<Decade>>; 19],
    /// Set by the first `record`.
    used: AtomicBool,
    /// Interval/cumulative views, refreshed by `flush` (the stats flush, every 5 s by default).
    snapshot: Mutex<Snapshot>,
}

/// What the admin endpoints show: the state at the last flush.
#[derive(Default, Clone, Debug)]
pub(crate) struct Snapshot {
    /// All samples recorded up to the last flush.
    pub cumulative: Bins,
    /// Samples recorded between the last two flushes.
    pub interval: Bins,
}

impl HistogramCell {
    pub(crate) fn new() -> Self {
        HistogramCell {
            low: std::array::from_fn(|_| AtomicU64::new(0)),
            decades: std::array::from_fn(|_| OnceLock::new()),
            used: AtomicBool::new(false),
            snapshot: Mutex::new(Snapshot::default()),
        }
    }

    /// Records one value. Lock-free: one atomic add (plus, the first time a decade is hit, its
    /// allocation).
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        if value < 10 {
            self.low[value as usize].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let e = value.ilog10() as usize; // 1..=19
        let val = (value / POW10_U[e - 1]) as usize; // first two digits, 10..=99
        let decade = self.decades[e - 1]
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        decade[val - 10].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether anything was ever recorded.
    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Current (live) counts.
    pub(crate) fn live_bins(&self) -> Bins {
        let mut out = Vec::new();
        for (i, c) in self.low.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                out.push((i as u16, c));
            }
        }
        for (d, decade) in self.decades.iter().enumerate() {
            if let Some(decade) = decade.get() {
                for (j, c) in decade.iter().enumerate() {
                    let c = c.load(Ordering::Relaxed);
                    if c > 0 {
                        out.push(((10 + d * 90 + j) as u16, c));
                    }
                }
            }
        }
        out
    }

    /// Envoy's histogram merge at a stats flush: the interval becomes what was recorded since
    /// the previous flush, the cumulative view everything so far.
    pub(crate) fn flush(&self) {
        let live = self.live_bins();
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snap.interval = subtract(&live, &snap.cumulative);
        snap.cumulative = live;
    }

    /// The state at the last flush.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `a - b` per bin (counts only grow, so `b ≤ a`).
fn subtract(a: &Bins, b: &Bins) -> Bins {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(bin, count) in a {
        while j < b.len() && b[j].0 < bin {
            j += 1;
        }
        let prev = if j < b.len() && b[j].0 == bin {
            b[j].1
        } else {
            0
        };
        let d = count.saturating_sub(prev);
        if d > 0 {
            out.push((bin, d));
        }
    }
    out
}

/// The bin a value falls into.
#[cfg(test)]
pub(crate) fn bin_of(value: u64) -> u16 {
    if value < 10 {
        return value as u16;
    }
    let e = value.ilog10() as usize;
    let val = (value / POW10_U[e - 1]) as usize;
    (10 + (e - 1) * 90 + (val - 10)) as u16
}

/// A value inside `bin` (its smallest integer), for tests and fixture replays.
#[cfg(test)]
pub(crate) fn bin_floor(bin: u16) -> u64 {
    let bin = bin as usize;
    if bin < 10 {
        return bin as u64;
    }
    let e = (bin - 10) / 90 + 1;
    let val = ((bin - 10) % 90 + 10) as u64;
    val * POW10_U[e - 1]
}

/// `(left edge, width)` of a bin, computed as circllhist does
/// (`hist_bucket_to_double`, `hist_bucket_to_double_bin_width`).
pub(crate) fn bin_geometry(bin: u16) -> (f64, f64) {
    let bin = bin as usize;
    if bin == 0 {
        return (0.0, 0.0);
    }
    let (val, exp) = if bin < 10 {
        (bin as f64 * 10.0, 0)
    } else {
        (((bin - 10) % 90 + 10) as f64, (bin - 10) / 90 + 1)
    };
    ((val / 10.0) * POW10_F[exp], POW10_F[exp] / 10.0)
}

/// Envoy's ten quantiles of `bins` (NaN when empty).
pub(crate) fn quantiles(bins: &Bins) -> [f64; 10] {
    let mut out = [f64::NAN; 10];
    let total: u64 = bins.iter().map(|b| b.1).sum();
    if total == 0 {
        return out;
    }
    for (slot, q) in out.iter_mut().zip(QUANTILES) {
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut before = 0u64;
        for &(bin, count) in bins {
            if before + count >= rank {
                let (left, width) = bin_geometry(bin);
                *slot = left + width * (rank - before) as f64 / (count + 1) as f64;
                break;
            }
            before += count;
        }
    }
    out
}

/// Sample count.
pub(crate) fn count(bins: &Bins) -> u64 {
    bins.iter().map(|b| b.1).sum()
}

/// Envoy's approximate sum (harmonic mean of the bin edges per sample, as `L + w·L/(2L + w)`).
pub(crate) fn approx_sum(bins: &Bins) -> f64 {
    let mut sum = 0.0;
    for &(bin, count) in bins {
        let (l, w) = bin_geometry(bin);
        let rep = if l == 0.0 {
            0.0
        } else {
            l + w * l / (2.0 * l + w)
        };
        sum += count as f64 * rep;
    }
    sum
}

/// Cumulative counts for [`DEFAULT_BUCKETS`] (bins whose left edge is `≤` the bound).
pub(crate) fn bucket_counts(bins: &Bins) -> [u64; DEFAULT_BUCKETS.len()] {
    let mut out = [0u64; DEFAULT_BUCKETS.len()];
    for &(bin, count) in bins {
        let (left, _) = bin_geometry(bin);
        for (slot, bound) in out.iter_mut().zip(DEFAULT_BUCKETS) {
            if left <= bound {
                *slot += count;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_round_trip() {
        for v in [
            0u64,
            1,
            9,
            10,
            11,
            99,
            100,
            109,
            110,
            999,
            1000,
            12345,
            u64::MAX,
        ] {
            let b = bin_of(v);
            assert!((b as usize) < NUM_BINS);
            let floor = bin_floor(b);
            assert!(floor <= v, "{v}");
            assert_eq!(bin_of(floor), b, "{v}");
        }
        assert_eq!(bin_of(u64::MAX) as usize, 10 + 18 * 90 + 8);
        assert!((bin_of(u64::MAX) as usize) < NUM_BINS);
        assert_eq!(bin_geometry(bin_of(4)), (4.0, 0.1));
        assert_eq!(bin_geometry(bin_of(61)), (61.0, 1.0));
        assert_eq!(bin_geometry(bin_of(1234)), (1200.0, 100.0));
    }

    #[test]
    fn record_and_flush() {
        let h = HistogramCell::new();
        assert!(!h.used());
        for v in [0, 1, 1, 12, 1234, u64::MAX] {
            h.record(v);
        }
        assert!(h.used());
        assert!(h.snapshot().cumulative.is_empty());
        h.flush();
        let s = h.snapshot();
        assert_eq!(count(&s.cumulative), 6);
        assert_eq!(s.interval, s.cumulative);
        h.record(1);
        h.flush();
        let s = h.snapshot();
        assert_eq!(count(&s.cumulative), 7);
        assert_eq!(s.interval, vec![(1, 1)]);
        h.flush();
        assert!(h.snapshot().interval.is_empty());
    }

    #[test]
    fn quantiles_match_envoy_examples() {
        // Envoy 1.40: 16 zeros and 9 ones give P75 1.03, P90 1.07, P100 1.09.
        let bins = vec![(0, 16), (1, 9)];
        let q = quantiles(&bins);
        assert_eq!(q[0], 0.0);
        assert_eq!(q[3], 1.03);
        assert_eq!(q[4], 1.07);
        assert_eq!(q[9], 1.09);
        // A single sample sits in the middle of its bin.
        assert_eq!(quantiles(&vec![(bin_of(4), 1)])[9], 4.05);
        assert!(quantiles(&Vec::new())[0].is_nan());
    }
}
