//! LEAST_REQUEST: power of two choices (`choice_count` 2).
//!
//! Two candidates are drawn at random (with replacement) and the less loaded one wins; on a tie
//! the first draw wins. With equal weights this is exactly Envoy's algorithm (uniform draws,
//! compare outstanding requests).
//!
//! With unequal weights Envoy switches to an EDF scheduler over the effective weights
//! `weight / (active + 1)^active_request_bias` (bias 1.0), which needs a lock. Here the lock-free
//! equivalent keeps P2C and folds the weight in twice: the candidates are drawn in proportion
//! to their weights (Vose alias table, O(1)), and the winner is the one with the lower load per
//! unit of weight (`active / weight`, compared exactly as `a₁·w₂ < a₂·w₁`). Idle hosts are thus
//! picked in proportion to their weights, as with Envoy's scheduler, and under load a host
//! attracts requests until its outstanding requests are proportional to its weight, which is
//! what dividing the weight by the load achieves in Envoy. (The `+ 1` of Envoy's formula only
//! avoids a division by zero there; with the multiplication form it would bias idle choices
//! toward the heavier candidate, so it is left out.)

use super::{LoadBalancer, PickContext, next_allowed, random_below, random_u64};

pub(crate) struct LeastRequest {
    weights: Box<[u32]>,
    /// `None` when all weights are equal (uniform draws).
    alias: Option<Alias>,
}

impl std::fmt::Debug for LeastRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeastRequest")
            .field("hosts", &self.weights.len())
            .field("weighted", &self.alias.is_some())
            .finish()
    }
}

/// Vose's alias table for O(1) weighted draws.
pub(crate) struct Alias {
    /// Probability (scaled to 2^32) of keeping column `i` rather than taking its alias.
    keep: Box<[u64]>,
    alias: Box<[u32]>,
}

impl Alias {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|&w| w as f64 * n as f64 / total)
            .collect();
        let mut keep = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * (1u64 << 32) as f64) as u64;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers (rounding) keep their own column.
        Alias {
            keep: keep.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
        }
    }

    #[inline]
    pub(crate) fn draw(&self) -> usize {
        let r = random_u64();
        let col = (((r >> 32) * self.keep.len() as u64) >> 32) as usize;
        if (r & 0xFFFF_FFFF) < self.keep[col] {
            col
        } else {
            self.alias[col] as usize
        }
    }
}

impl LeastRequest {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let equal = weights.iter().all(|&w| w == weights[0]);
        LeastRequest {
            weights: weights.into(),
            alias: (!equal).then(|| Alias::new(weights)),
        }
    }

    #[inline]
    fn draw(&self) -> usize {
        match &self.alias {
            None => random_below(self.weights.len()),
            Some(a) => a.draw(),
        }
    }

    /// A draw that avoids excluded hosts: a few redraws, then a weighted scan over the allowed
    /// hosts; `None` if every host is excluded.
    fn draw_allowed(&self, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..4 {
            let i = self.draw();
            if !excluded(i) {
                return Some(i);
            }
        }
        if self.alias.is_none() {
            return next_allowed(
                self.weights.len(),
                random_below(self.weights.len()),
                excluded,
            );
        }
        let allowed: u64 = (0..self.weights.len())
            .filter(|&i| !excluded(i))
            .map(|i| self.weights[i] as u64)
            .sum();
        if allowed == 0 {
            return None;
        }
        let mut r = ((random_u64() as u128 * allowed as u128) >> 64) as u64;
        for i in 0..self.weights.len() {
            if excluded(i) {
                continue;
            }
            let w = self.weights[i] as u64;
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

impl LoadBalancer for LeastRequest {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = match self.draw_allowed(ctx.excluded) {
            Some(a) => (a, self.draw_allowed(ctx.excluded).unwrap_or(a)),
            // Everything excluded: pick as if nothing were.
            None => (self.draw(), self.draw()),
        };
        if a == b {
            return Some(a);
        }
        let (la, lb) = ((ctx.active_requests)(a), (ctx.active_requests)(b));
        let (wa, wb) = (self.weights[a] as u128, self.weights[b] as u128);
        // b replaces a only if strictly less loaded per unit of weight.
        if (lb as u128) * wa < (la as u128) * wb {
            Some(b)
        } else {
            Some(a)
        }
    }
}
