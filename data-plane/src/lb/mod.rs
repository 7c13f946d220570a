//! Load-balancing algorithms with Envoy's semantics.
//!
//! [`build`] turns a policy and a host list into a [`LoadBalancer`]; the caller rebuilds it
//! when the hosts change (building is the only place that allocates). [`LoadBalancer::pick`]
//! is on the request path: it takes no lock and allocates nothing. Shared mutable state is a
//! single atomic cursor (round robin); randomness comes from a per-thread generator.
//!
//! | policy | algorithm | vs Envoy |
//! |---|---|---|
//! | `ROUND_ROBIN` | equal weights: strict rotation; unequal: a precomputed earliest-deadline-first schedule walked by an atomic cursor | same order of picks as one Envoy EDF pass (ties broken by host order); starts at a random offset like Envoy |
//! | `LEAST_REQUEST` | power of two choices | equal weights: Envoy's P2C exactly; unequal: weighted draws, lowest load per weight wins (Envoy: EDF over `weight / (active + 1)`) |
//! | `RANDOM` | uniform, weights ignored | as Envoy |
//! | `RING_HASH` | ketama ring, XXH64 of `"<address>_<i>"`, Envoy's ring sizing | same ring as Envoy for the same hosts and weights |
//! | `MAGLEV` | Maglev population (table 65537) with Envoy's weighted fill | same table as Envoy for the same hosts and weights |
//!
//! Ring hash and Maglev hash host keys exactly as Envoy does (XXH64, seed 0, of the address
//! string), so when the request hash is also computed as Envoy does ([`xxh64`] of the header
//! value for a header hash policy) a request lands on the same host as it would with Envoy.
//! Without a request hash they pick with a random hash, as Envoy does.

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
mod xxhash;

#[cfg(test)]
mod tests;

use crate::config::types::LbPolicy;
use std::cell::Cell;
use std::net::SocketAddr;

pub use xxhash::xxh64;

/// What an LB needs to know about a host at pick time.
pub struct PickContext<'a> {
    /// Request hash for ring_hash / maglev (`None` → random).
    pub hash: Option<u64>,
    /// Outstanding requests of host `i` (least_request).
    pub active_requests: &'a dyn Fn(usize) -> u64,
    /// Host `i` must not be chosen (retry `previous_hosts`); if every host is excluded, the LB
    /// picks as if none were.
    pub excluded: &'a dyn Fn(usize) -> bool,
}

fn no_load(_: usize) -> u64 {
    0
}

fn none_excluded(_: usize) -> bool {
    false
}

const NO_LOAD: &(dyn Fn(usize) -> u64 + Sync) = &no_load;
const NONE_EXCLUDED: &(dyn Fn(usize) -> bool + Sync) = &none_excluded;

impl PickContext<'static> {
    /// A context with no hash, no load information and no exclusions.
    pub fn plain() -> Self {
        PickContext {
            hash: None,
            active_requests: NO_LOAD,
            excluded: NONE_EXCLUDED,
        }
    }

    /// A context with a request hash and nothing else.
    pub fn with_hash(hash: u64) -> Self {
        PickContext {
            hash: Some(hash),
            ..PickContext::plain()
        }
    }
}

/// A load balancer over a fixed host list.
pub trait LoadBalancer: Send + Sync + std::fmt::Debug {
    /// Index into the host list given to `build`, or `None` if the list is empty.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize>;
}

/// Builds an LB for hosts given as (address, weight) in a fixed order (the caller rebuilds on
/// change). A weight of 0 counts as 1 (Envoy rejects 0).
pub fn build(policy: LbPolicy, hosts: &[(SocketAddr, u32)]) -> Box<dyn LoadBalancer> {
    if hosts.is_empty() {
        return Box::new(Empty);
    }
    let weights: Vec<u32> = hosts.iter().map(|h| h.1.max(1)).collect();
    match policy {
        LbPolicy::RoundRobin => Box::new(round_robin::RoundRobin::new(&weights)),
        LbPolicy::LeastRequest => Box::new(least_request::LeastRequest::new(&weights)),
        LbPolicy::Random => Box::new(random::Random::new(hosts.len())),
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => Box::new(ring_hash::RingHash::new(
            hosts,
            &weights,
            min_ring_size,
            max_ring_size,
        )),
        LbPolicy::Maglev => Box::new(maglev::Maglev::new(hosts, &weights)),
    }
}

/// The LB of an empty host list.
#[derive(Debug)]
struct Empty;

impl LoadBalancer for Empty {
    fn pick(&self, _ctx: &PickContext<'_>) -> Option<usize> {
        None
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rand::random::<u64>());
}

/// A fast per-thread random `u64` (wyrand), no lock, no allocation.
#[inline]
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xA076_1D64_78BD_642F);
        s.set(x);
        let t = (x as u128).wrapping_mul((x ^ 0xE703_7ED1_A0B4_28DB) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A uniform index below `n` (`n > 0`).
#[inline]
pub(crate) fn random_below(n: usize) -> usize {
    ((random_u64() as u128 * n as u128) >> 64) as usize
}

/// The `k`-th host in `0..n` at or after `start` (cyclically) that is not excluded, if any.
#[inline]
pub(crate) fn next_allowed(
    n: usize,
    start: usize,
    excluded: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    (0..n).map(|k| (start + k) % n).find(|&i| !excluded(i))
}

/// Greatest common divisor.
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
