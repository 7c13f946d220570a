//! ROUND_ROBIN.
//!
//! Equal weights: strict rotation `i, i+1, …` from a random start (Envoy also starts each
//! round-robin index at a random offset, so that a fleet of proxies rebuilt at the same moment
//! does not send its first requests to the same host).
//!
//! Unequal weights: Envoy runs an earliest-deadline-first scheduler (host `i` is due every
//! `1/wᵢ`). One period of that scheduler — the deadlines `k/wᵢ` for `k = 1..=wᵢ` in time
//! order, ties broken by host order — is precomputed once into a table of `Σwᵢ` entries (after
//! dividing by the weights' gcd) and walked with an atomic cursor. The result is a smooth,
//! deterministic weighted sequence in which host `i` appears exactly `wᵢ` times per period,
//! identical to one EDF pass. If `Σwᵢ` exceeds [`MAX_SCHEDULE`], weights are scaled down
//! proportionally (each at least 1) to bound memory; proportions are then approximate.

use super::{LoadBalancer, PickContext, gcd, next_allowed, random_below};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Largest weighted schedule (entries); larger weight sums are scaled down.
pub(crate) const MAX_SCHEDULE: u64 = 1 << 16;

pub(crate) struct RoundRobin {
    n: usize,
    /// Weighted schedule of host indices; `None` for equal weights (plain rotation).
    schedule: Option<Box<[u32]>>,
    cursor: AtomicUsize,
}

impl std::fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobin")
            .field("hosts", &self.n)
            .field("schedule_len", &self.schedule.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// A pending deadline `k / w` of host `host` (ordered earliest first, then by host order).
#[derive(PartialEq, Eq)]
struct Due {
    k: u64,
    w: u64,
    host: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reverse: BinaryHeap is a max-heap, we want the earliest deadline on top.
        let lhs = self.k as u128 * other.w as u128;
        let rhs = other.k as u128 * self.w as u128;
        rhs.cmp(&lhs).then_with(|| other.host.cmp(&self.host))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One EDF period for integer weights: host `i` appears `weights[i]` times.
pub(crate) fn edf_schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut heap: BinaryHeap<Due> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Due {
            k: 1,
            w,
            host: i as u32,
        })
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while let Some(mut due) = heap.pop() {
        out.push(due.host);
        if due.k < due.w {
            due.k += 1;
            heap.push(due);
        }
    }
    out
}

/// Integer weights reduced by their gcd and, if needed, scaled so that their sum fits
/// `MAX_SCHEDULE` (or the host count, if larger).
fn reduced_weights(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, w as u64)).max(1);
    let mut w: Vec<u64> = weights.iter().map(|&w| w as u64 / g).collect();
    let total: u64 = w.iter().sum();
    let cap = MAX_SCHEDULE.max(weights.len() as u64);
    if total > cap {
        let budget = cap as f64;
        w = w
            .iter()
            .map(|&x| ((x as f64 * budget / total as f64).floor() as u64).max(1))
            .collect();
    }
    w
}

impl RoundRobin {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let equal = weights.iter().all(|&w| w == weights[0]);
        let schedule = if equal {
            None
        } else {
            Some(edf_schedule(&reduced_weights(weights)).into_boxed_slice())
        };
        let len = schedule.as_ref().map_or(n, |s| s.len());
        RoundRobin {
            n,
            schedule,
            cursor: AtomicUsize::new(random_below(len)),
        }
    }

    #[inline]
    fn host_at(&self, pos: usize) -> usize {
        match &self.schedule {
            None => pos % self.n,
            Some(s) => s[pos % s.len()] as usize,
        }
    }
}

impl LoadBalancer for RoundRobin {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let pos = self.cursor.fetch_add(1, AtomicOrdering::Relaxed);
        let first = self.host_at(pos);
        if !(ctx.excluded)(first) {
            return Some(first);
        }
        if next_allowed(self.n, 0, ctx.excluded).is_none() {
            return Some(first);
        }
        // Next allowed host along the sequence (without consuming cursor positions).
        let len = self.schedule.as_ref().map_or(self.n, |s| s.len());
        (1..len)
            .map(|k| self.host_at(pos.wrapping_add(k)))
            .find(|&h| !(ctx.excluded)(h))
            .or(Some(first))
    }
}
