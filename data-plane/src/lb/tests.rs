//! Load-balancer tests. `fixtures/envoy_hash_picks.txt` holds, for 120 keys, the upstream that
//! Envoy 1.40 chose with a header hash policy for ring hash and Maglev clusters of four hosts
//! (equal weights and weights 1, 2, 3, 5); the tests check that the same keys pick the same
//! hosts here.

use super::*;
use std::collections::HashMap;

const ALL: [LbPolicy; 5] = [
    LbPolicy::RoundRobin,
    LbPolicy::LeastRequest,
    LbPolicy::Random,
    LbPolicy::RingHash {
        min_ring_size: 1024,
        max_ring_size: 8 * 1024 * 1024,
    },
    LbPolicy::Maglev,
];

const RING: LbPolicy = LbPolicy::RingHash {
    min_ring_size: 1024,
    max_ring_size: 8 * 1024 * 1024,
};

fn hosts(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)), w))
        .collect()
}

fn counts(lb: &dyn LoadBalancer, n: usize, picks: usize, ctx: &PickContext<'_>) -> Vec<usize> {
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[lb.pick(ctx).unwrap()] += 1;
    }
    c
}

/// Asserts each share is within `tol` (relative) of its weight's share.
fn assert_proportional(counts: &[usize], weights: &[u32], tol: f64) {
    let total: usize = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let expected = total as f64 * w as f64 / wsum as f64;
        let err = (c as f64 - expected).abs() / expected;
        assert!(
            err <= tol,
            "host {i}: {c} picks, expected ~{expected:.0} (counts {counts:?})"
        );
    }
}

#[test]
fn empty_host_list_picks_none() {
    for policy in ALL {
        let lb = build(policy, &[]);
        assert_eq!(lb.pick(&PickContext::plain()), None, "{policy:?}");
        assert_eq!(lb.pick(&PickContext::with_hash(7)), None, "{policy:?}");
    }
}

#[test]
fn single_host_always_picked() {
    for policy in ALL {
        let lb = build(policy, &hosts(&[3]));
        for h in 0..50 {
            assert_eq!(lb.pick(&PickContext::with_hash(h)), Some(0));
            assert_eq!(lb.pick(&PickContext::plain()), Some(0));
        }
    }
}

#[test]
fn round_robin_rotates() {
    let lb = build(LbPolicy::RoundRobin, &hosts(&[1, 1, 1, 1, 1]));
    let ctx = PickContext::plain();
    let first = lb.pick(&ctx).unwrap();
    for k in 1..23 {
        assert_eq!(lb.pick(&ctx).unwrap(), (first + k) % 5);
    }
    // Equal weights other than 1 are still a plain rotation.
    let lb = build(LbPolicy::RoundRobin, &hosts(&[7, 7, 7]));
    let first = lb.pick(&ctx).unwrap();
    assert_eq!(lb.pick(&ctx).unwrap(), (first + 1) % 3);
    assert_eq!(lb.pick(&ctx).unwrap(), (first + 2) % 3);
}

#[test]
fn round_robin_weighted_is_exact_and_smooth() {
    let weights = [1, 2, 3, 4];
    let lb = build(LbPolicy::RoundRobin, &hosts(&weights));
    let ctx = PickContext::plain();
    // Any 10 consecutive picks (one period) contain each host exactly `weight` times.
    let seq: Vec<usize> = (0..100).map(|_| lb.pick(&ctx).unwrap()).collect();
    for window in seq.windows(10) {
        let mut c = [0; 4];
        for &h in window {
            c[h] += 1;
        }
        assert_eq!(c, [1, 2, 3, 4], "{seq:?}");
    }
    // Smooth: the heaviest host is never picked more than twice in a row.
    assert!(
        seq.windows(3)
            .all(|w| !(w[0] == 3 && w[1] == 3 && w[2] == 3))
    );
    // The EDF period itself: deadlines k/w in order, ties by host order.
    assert_eq!(
        round_robin::edf_schedule(&[1, 2, 3, 4]),
        vec![3, 2, 1, 3, 2, 3, 0, 1, 2, 3]
    );
    // Large weights are reduced by their gcd / scaled, and stay proportional.
    let weights = [100_000, 300_000];
    let lb = build(LbPolicy::RoundRobin, &hosts(&weights));
    assert_proportional(&counts(&*lb, 2, 4000, &ctx), &weights, 0.001);
    let weights = [1, 1_000_000];
    let lb = build(LbPolicy::RoundRobin, &hosts(&weights));
    let c = counts(&*lb, 2, 1 << 17, &ctx);
    assert!(c[0] >= 1 && c[0] <= 4, "{c:?}");
}

#[test]
fn round_robin_skips_excluded() {
    let lb = build(LbPolicy::RoundRobin, &hosts(&[1, 1, 1, 1]));
    let excluded = |i: usize| i == 1 || i == 2;
    let ctx = PickContext {
        excluded: &excluded,
        ..PickContext::plain()
    };
    let c = counts(&*lb, 4, 1000, &ctx);
    assert_eq!(c[1] + c[2], 0);
    assert!(c[0] > 0 && c[3] > 0);
    let lb = build(LbPolicy::RoundRobin, &hosts(&[1, 5, 1]));
    let c = counts(
        &*lb,
        3,
        700,
        &PickContext {
            excluded: &|i| i == 1,
            ..PickContext::plain()
        },
    );
    assert_eq!(c[1], 0);
}

#[test]
fn every_policy_respects_exclusion_and_falls_back_when_all_excluded() {
    let weights = [1, 2, 3, 4, 5];
    for policy in ALL {
        let lb = build(policy, &hosts(&weights));
        let only_three = |i: usize| i != 3;
        for h in 0..300u64 {
            let ctx = PickContext {
                hash: Some(h.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                active_requests: &|_| 0,
                excluded: &only_three,
            };
            assert_eq!(lb.pick(&ctx), Some(3), "{policy:?}");
            let ctx = PickContext { hash: None, ..ctx };
            assert_eq!(lb.pick(&ctx), Some(3), "{policy:?}");
            let all = |_: usize| true;
            let ctx = PickContext {
                excluded: &all,
                ..PickContext::with_hash(h)
            };
            assert!(lb.pick(&ctx).is_some(), "{policy:?}");
        }
    }
}

#[test]
fn hash_lbs_pick_like_without_exclusion_when_nothing_excluded() {
    // With a hash and all hosts excluded, the pick is the unexcluded pick.
    for policy in [RING, LbPolicy::Maglev] {
        let lb = build(policy, &hosts(&[1, 2, 3]));
        for h in 0..200u64 {
            let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let all = |_: usize| true;
            let ctx = PickContext {
                excluded: &all,
                ..PickContext::with_hash(h)
            };
            assert_eq!(lb.pick(&ctx), lb.pick(&PickContext::with_hash(h)));
        }
    }
}

#[test]
fn random_is_uniform_and_ignores_weights() {
    let weights = [1, 10, 100, 1];
    let lb = build(LbPolicy::Random, &hosts(&weights));
    let c = counts(&*lb, 4, 80_000, &PickContext::plain());
    assert_proportional(&c, &[1, 1, 1, 1], 0.05);
}

#[test]
fn least_request_prefers_less_loaded() {
    // Two hosts: the loaded one wins only when both draws land on it (1/4).
    let lb = build(LbPolicy::LeastRequest, &hosts(&[1, 1]));
    let load = |i: usize| if i == 0 { 5 } else { 0 };
    let ctx = PickContext {
        active_requests: &load,
        ..PickContext::plain()
    };
    let c = counts(&*lb, 2, 40_000, &ctx);
    let share0 = c[0] as f64 / 40_000.0;
    assert!((share0 - 0.25).abs() < 0.02, "{c:?}");

    // Ten hosts with load i: host i is picked with probability (2(n-i)-1)/n².
    let lb = build(LbPolicy::LeastRequest, &hosts(&[1; 10]));
    let load = |i: usize| i as u64;
    let ctx = PickContext {
        active_requests: &load,
        ..PickContext::plain()
    };
    let c = counts(&*lb, 10, 100_000, &ctx);
    for (i, &ci) in c.iter().enumerate() {
        let expected = (2.0 * (10 - i) as f64 - 1.0) / 100.0 * 100_000.0;
        assert!(
            (ci as f64 - expected).abs() / expected < 0.1,
            "host {i}: {ci} vs {expected} ({c:?})"
        );
    }

    // Idle: uniform.
    let c = counts(&*lb, 10, 50_000, &PickContext::plain());
    assert_proportional(&c, &[1; 10], 0.08);
}

#[test]
fn least_request_weighted() {
    // Idle hosts are picked in proportion to their weights.
    let weights = [1, 3, 6];
    let lb = build(LbPolicy::LeastRequest, &hosts(&weights));
    let c = counts(&*lb, 3, 100_000, &PickContext::plain());
    assert_proportional(&c, &weights, 0.05);

    // Load per unit of weight decides: host 1 (4/4) is less loaded than host 0 (2/1).
    let lb = build(LbPolicy::LeastRequest, &hosts(&[1, 4]));
    let load = |i: usize| if i == 0 { 2 } else { 4 };
    let ctx = PickContext {
        active_requests: &load,
        ..PickContext::plain()
    };
    // Host 0 only when both draws are host 0: (1/5)².
    let c = counts(&*lb, 2, 50_000, &ctx);
    let share0 = c[0] as f64 / 50_000.0;
    assert!((share0 - 0.04).abs() < 0.01, "{c:?}");

    // Closed-loop: sending to the least loaded per weight keeps load proportional to weight.
    let weights = [1u32, 2, 5];
    let lb = build(LbPolicy::LeastRequest, &hosts(&weights));
    let active: Vec<std::sync::atomic::AtomicU64> = (0..3)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let load = |i: usize| active[i].load(std::sync::atomic::Ordering::Relaxed);
    let ctx = PickContext {
        active_requests: &load,
        ..PickContext::plain()
    };
    for _ in 0..800 {
        let i = lb.pick(&ctx).unwrap();
        active[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let got: Vec<usize> = (0..3).map(|i| load(i) as usize).collect();
    assert_proportional(&got, &weights, 0.1);
}

#[test]
fn alias_table_draws_in_proportion() {
    let weights = [5, 1, 1, 13, 0, 7];
    let alias = least_request::Alias::new(&weights.map(|w: u32| w.max(1)));
    let mut c = [0usize; 6];
    for _ in 0..200_000 {
        c[alias.draw()] += 1;
    }
    assert_proportional(&c, &weights.map(|w: u32| w.max(1)), 0.05);
}

#[test]
fn ring_hash_distribution_and_sizes_match_envoy() {
    // Envoy 1.40: four equal hosts → ring 1024, 256 per host; weights 1,2,3,5 → 1034, 94..470.
    let ring = ring_hash::RingHash::new(&hosts(&[1, 1, 1, 1]), &[1, 1, 1, 1], 1024, 8 << 20);
    assert_eq!(ring.len(), 1024);
    let weights = [1, 2, 3, 5];
    let ring = ring_hash::RingHash::new(&hosts(&weights), &weights, 1024, 8 << 20);
    assert_eq!(ring.len(), 1034);
    // The single-host ring of the stats fixture has 1024 entries too.
    let ring = ring_hash::RingHash::new(&hosts(&[1]), &[1], 1024, 8 << 20);
    assert_eq!(ring.len(), 1024);
    // max_ring_size caps.
    let ring = ring_hash::RingHash::new(&hosts(&[1, 1000]), &[1, 1000], 1024, 8 << 20);
    assert_eq!(ring.len(), 2002);
    let ring = ring_hash::RingHash::new(&hosts(&[1, 10000]), &[1, 10000], 1024, 4096);
    assert_eq!(ring.len(), 4096);

    let lb = build(RING, &hosts(&weights));
    let c = counts(&*lb, 4, 200_000, &PickContext::plain());
    assert_proportional(&c, &weights, 0.2);
}

#[test]
fn hash_lbs_are_stable_and_move_few_keys() {
    for policy in [RING, LbPolicy::Maglev] {
        let all = hosts(&[1, 1, 1, 1, 1]);
        let lb = build(policy, &all);
        let lb_again = build(policy, &all);
        let keys: Vec<u64> = (0..20_000u64)
            .map(|k| xxh64(format!("user-{k}").as_bytes(), 0))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&h| lb.pick(&PickContext::with_hash(h)).unwrap())
            .collect();
        for (&h, &b) in keys.iter().zip(&before) {
            assert_eq!(lb.pick(&PickContext::with_hash(h)), Some(b));
            assert_eq!(lb_again.pick(&PickContext::with_hash(h)), Some(b));
        }
        // Remove host 2 (indices of later hosts shift down by one).
        let mut fewer = all.clone();
        fewer.remove(2);
        let lb2 = build(policy, &fewer);
        let mut moved = 0;
        for (&h, &b) in keys.iter().zip(&before) {
            let after = lb2.pick(&PickContext::with_hash(h)).unwrap();
            let after_orig = if after >= 2 { after + 1 } else { after };
            if after_orig != b {
                moved += 1;
            }
        }
        let moved_share = moved as f64 / keys.len() as f64;
        // About 1/5 of the keys lived on host 2; a few more may move.
        assert!(
            (0.15..0.32).contains(&moved_share),
            "{policy:?}: moved {moved_share}"
        );
        // Keys of the removed host all moved; spread over the survivors.
        let mut c = vec![0; 5];
        for &b in &before {
            c[b] += 1;
        }
        assert_proportional(&c, &[1; 5], 0.25);
    }
}

#[test]
fn maglev_weighted_distribution() {
    let weights = [1, 2, 3, 5];
    let lb = build(LbPolicy::Maglev, &hosts(&weights));
    let c = counts(&*lb, 4, 200_000, &PickContext::plain());
    assert_proportional(&c, &weights, 0.05);
}

/// Hosts of the Envoy capture.
fn envoy_hosts(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (SocketAddr::from(([127, 0, 0, 1], 19001 + i as u16)), w))
        .collect()
}

#[test]
fn same_keys_pick_same_hosts_as_envoy() {
    let fixture = include_str!("fixtures/envoy_hash_picks.txt");
    let lbs: HashMap<&str, Box<dyn LoadBalancer>> = [
        ("ring_eq", build(RING, &envoy_hosts(&[1, 1, 1, 1]))),
        ("ring_w", build(RING, &envoy_hosts(&[1, 2, 3, 5]))),
        (
            "maglev_eq",
            build(LbPolicy::Maglev, &envoy_hosts(&[1, 1, 1, 1])),
        ),
        (
            "maglev_w",
            build(LbPolicy::Maglev, &envoy_hosts(&[1, 2, 3, 5])),
        ),
    ]
    .into_iter()
    .collect();
    let mut checked = 0;
    for line in fixture.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split(' ');
        let (cluster, key, port) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap().parse::<usize>().unwrap(),
        );
        let h = xxh64(key.as_bytes(), 0);
        let picked = lbs[cluster].pick(&PickContext::with_hash(h)).unwrap();
        assert_eq!(picked, port - 19001, "{cluster} {key}");
        checked += 1;
    }
    assert_eq!(checked, 480);
}

#[test]
fn picks_are_lock_free_across_threads() {
    let lb: std::sync::Arc<dyn LoadBalancer> =
        std::sync::Arc::from(build(LbPolicy::RoundRobin, &hosts(&[1, 1, 1])));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let lb = lb.clone();
            std::thread::spawn(move || {
                let mut c = [0usize; 3];
                for _ in 0..30_000 {
                    c[lb.pick(&PickContext::plain()).unwrap()] += 1;
                }
                c
            })
        })
        .collect();
    let mut total = [0usize; 3];
    for h in handles {
        for (t, c) in total.iter_mut().zip(h.join().unwrap()) {
            *t += c;
        }
    }
    // A shared cursor: exactly equal over 120k picks.
    assert_eq!(total, [40_000; 3]);
}
