//! RING_HASH: Envoy's ketama-style ring.
//!
//! Built as Envoy builds it: with normalized weights `wᵢ / Σw`, the ring gets
//! `scale = min(ceil(min_w · min_ring_size) / min_w, max_ring_size)` entries in total, host `i`
//! contributing `scale · wᵢ` of them (running sums keep the total exact), entry `k` of a host
//! hashed as XXH64(`"<address>_<k>"`, seed 0) with the address printed as Envoy prints it
//! (`127.0.0.1:80`, `[::1]:80`). A request hash selects the first entry whose hash is `≥` it,
//! wrapping to the first entry. The ring is therefore the one Envoy builds for the same hosts.
//!
//! Excluded hosts (retries with `previous_hosts`) are skipped by walking forward along the ring,
//! as Envoy does for retry attempts. Without a request hash a random one is used.

use super::{LoadBalancer, PickContext, next_allowed, random_u64, xxh64};
use std::net::SocketAddr;

pub(crate) struct RingHash {
    /// Sorted entry hashes.
    hashes: Box<[u64]>,
    /// Host of each entry.
    hosts: Box<[u32]>,
    /// Number of hosts.
    n: usize,
}

impl std::fmt::Debug for RingHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingHash")
            .field("ring_size", &self.hashes.len())
            .finish()
    }
}

impl RingHash {
    pub(crate) fn new(
        hosts: &[(SocketAddr, u32)],
        weights: &[u32],
        min_ring_size: u64,
        max_ring_size: u64,
    ) -> Self {
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let normalized: Vec<f64> = weights.iter().map(|&w| w as f64 / total).collect();
        let min_w = normalized.iter().cloned().fold(f64::INFINITY, f64::min);
        let scale = ((min_w * min_ring_size as f64).ceil() / min_w).min(max_ring_size as f64);
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(scale.ceil() as usize);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        let mut key = String::new();
        for (i, ((addr, _), w)) in hosts.iter().zip(&normalized).enumerate() {
            target += scale * w;
            let mut k = 0u64;
            while current < target {
                key.clear();
                use std::fmt::Write as _;
                let _ = write!(key, "{addr}_{k}");
                entries.push((xxh64(key.as_bytes(), 0), i as u32));
                k += 1;
                current += 1.0;
            }
        }
        entries.sort_by_key(|e| e.0);
        RingHash {
            hashes: entries.iter().map(|e| e.0).collect(),
            hosts: entries.iter().map(|e| e.1).collect(),
            n: hosts.len(),
        }
    }

    /// Number of ring entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }
}

impl LoadBalancer for RingHash {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let h = ctx.hash.unwrap_or_else(random_u64);
        let mut idx = self.hashes.partition_point(|&x| x < h);
        if idx == len {
            idx = 0;
        }
        let first = self.hosts[idx] as usize;
        if !(ctx.excluded)(first) {
            return Some(first);
        }
        if next_allowed(self.n, 0, ctx.excluded).is_none() {
            return Some(first);
        }
        (1..len)
            .map(|k| self.hosts[(idx + k) % len] as usize)
            .find(|&host| !(ctx.excluded)(host))
            .or(Some(first))
    }
}
