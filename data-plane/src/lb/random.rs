//! RANDOM: a uniformly random host; weights are ignored, as in Envoy.

use super::{LoadBalancer, PickContext, next_allowed, random_below};

#[derive(Debug)]
pub(crate) struct Random {
    n: usize,
}

impl Random {
    pub(crate) fn new(n: usize) -> Self {
        Random { n }
    }
}

impl LoadBalancer for Random {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let first = random_below(self.n);
        if !(ctx.excluded)(first) {
            return Some(first);
        }
        for _ in 0..3 {
            let i = random_below(self.n);
            if !(ctx.excluded)(i) {
                return Some(i);
            }
        }
        // Few hosts left: scan from a random point; everything excluded → the first draw.
        next_allowed(self.n, random_below(self.n), ctx.excluded).or(Some(first))
    }
}
