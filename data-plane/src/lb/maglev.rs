//! MAGLEV: Envoy's Maglev table (size 65537) with its weighted population.
//!
//! Host `i` gets `offset = XXH64(address, 0) mod M` and `skip = XXH64(address, 1) mod (M − 1) + 1`
//! and fills slots along `offset + j·skip`. Hosts take turns in host order; with normalized
//! weights, a host whose weight is `1/k` of the largest takes a turn every `k`th round (Envoy's
//! `target_weight` bookkeeping, reproduced with the same floating-point steps), so the table is
//! the one Envoy builds. A request hash `h` selects slot `h mod M`.
//!
//! Excluded hosts are avoided the way Envoy's retry attempts do it: the hash is perturbed as
//! `h ^ (!0 − attempt + 1)` for attempt 1, 2, …; after a few attempts the table is scanned
//! forward from the original slot. Without a request hash a random one is used.

use super::{LoadBalancer, PickContext, next_allowed, random_u64, xxh64};
use std::net::SocketAddr;

/// Envoy's default (and prime) Maglev table size.
pub(crate) const TABLE_SIZE: u64 = 65537;

pub(crate) struct Maglev {
    table: Box<[u32]>,
    n: usize,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .finish()
    }
}

struct BuildEntry {
    offset: u64,
    skip: u64,
    weight: f64,
    target_weight: f64,
    next: u64,
}

impl Maglev {
    pub(crate) fn new(hosts: &[(SocketAddr, u32)], weights: &[u32]) -> Self {
        let m = TABLE_SIZE;
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut entries: Vec<BuildEntry> = hosts
            .iter()
            .zip(weights)
            .map(|((addr, _), &w)| {
                let key = addr.to_string();
                BuildEntry {
                    offset: xxh64(key.as_bytes(), 0) % m,
                    skip: xxh64(key.as_bytes(), 1) % (m - 1) + 1,
                    weight: w as f64 / total,
                    target_weight: 0.0,
                    next: 0,
                }
            })
            .collect();
        let max_weight = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for (i, e) in entries.iter_mut().enumerate() {
                if filled >= m {
                    break;
                }
                if (iteration as f64) * e.weight < e.target_weight {
                    continue;
                }
                e.target_weight += max_weight;
                let mut c = (e.offset + e.skip * e.next) % m;
                while table[c as usize] != EMPTY {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % m;
                }
                table[c as usize] = i as u32;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Maglev {
            table: table.into_boxed_slice(),
            n: hosts.len(),
        }
    }

    #[inline]
    fn slot(&self, h: u64) -> usize {
        self.table[(h % TABLE_SIZE) as usize] as usize
    }
}

impl LoadBalancer for Maglev {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let h = ctx.hash.unwrap_or_else(random_u64);
        let first = self.slot(h);
        if !(ctx.excluded)(first) {
            return Some(first);
        }
        for attempt in 1..=8u64 {
            let host = self.slot(h ^ (!0u64 - attempt + 1));
            if !(ctx.excluded)(host) {
                return Some(host);
            }
        }
        if next_allowed(self.n, 0, ctx.excluded).is_none() {
            return Some(first);
        }
        let start = (h % TABLE_SIZE) as usize;
        let len = self.table.len();
        (1..len)
            .map(|k| self.table[(start + k) % len] as usize)
            .find(|&host| !(ctx.excluded)(host))
            .or(Some(first))
    }
}
