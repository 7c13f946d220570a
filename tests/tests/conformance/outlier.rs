//! Outlier detection: consecutive 5xx ejection and its expiry, the max_ejection_percent
//! cap, and success-rate ejection — as `/clusters` and the `outlier_detection.*` stats show.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use legate_e2e::Flavor;
use legate_e2e::upstream::{FaultConfig, Upstream};

use crate::common::{FAILED_OUTLIER_CHECK, Fixture, flavors, svc};

/// An upstream that answers every request (without fault headers) with 503.
async fn always_503(name: &str) -> Upstream {
    Upstream::builder(name)
        .faults(FaultConfig {
            fail_rate: 1.0,
            ..FaultConfig::default()
        })
        .start()
        .await
        .expect("upstream")
}

async fn healthy(name: &str) -> Upstream {
    Upstream::start(name).await.expect("upstream")
}

/// The hosts of `payments` flagged `/failed_outlier_check`.
async fn ejected(fx: &Fixture) -> Vec<SocketAddr> {
    flagged(&fx.health_flags("payments").await)
}

fn flagged(flags: &BTreeMap<SocketAddr, String>) -> Vec<SocketAddr> {
    flags
        .iter()
        .filter(|(_, f)| f.contains(FAILED_OUTLIER_CHECK))
        .map(|(a, _)| *a)
        .collect()
}

/// Sends plain GETs to payments until `done` says so (at most `max` requests).
async fn send_until(fx: &Fixture, max: usize, mut done: impl FnMut() -> bool) -> usize {
    for n in 0..max {
        if done() {
            return n;
        }
        let r = fx.get("/payments/x", &[]).await;
        assert!(
            r.status == 200 || r.status == 503,
            "{}: {}",
            r.status,
            r.body
        );
    }
    assert!(done(), "condition not met after {max} requests");
    max
}

flavors!(
    consecutive_5xx_ejection,
    consecutive_5xx_ejection_envoy,
    consecutive_5xx_ejection_legate
);

/// Three hosts, one always 503. After three consecutive 5xx it is ejected (immediately,
/// not at the next interval), gets no traffic, and is back after base_ejection_time (1 s),
/// at an interval tick.
async fn consecutive_5xx_ejection(flavor: Flavor) {
    let a = healthy("good-a").await;
    let b = healthy("good-b").await;
    let bad = always_503("bad").await;
    let fx = Fixture::start(
        flavor,
        &[svc(
            "payments",
            &[a.addr, b.addr, bad.addr],
            "outlier_detection:\n  consecutive_5xx: 3\n  interval: 500ms\n  \
             base_ejection_time: 1s\n  max_ejection_percent: 100\n",
        )],
    )
    .await;
    send_until(&fx, 30, || bad.requests() >= 3).await;
    assert_eq!(bad.requests(), 3);
    fx.wait_stat(
        "cluster.payments.outlier_detection.ejections_active",
        1..=1,
        Duration::from_secs(2),
    )
    .await;
    let ejected_at = Instant::now();
    assert_eq!(ejected(&fx).await, [bad.addr]);
    fx.expect_stats(&[
        ("cluster.payments.outlier_detection.ejections_active", 1),
        (
            "cluster.payments.outlier_detection.ejections_enforced_consecutive_5xx",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_detected_consecutive_5xx",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_enforced_total",
            1,
        ),
        ("cluster.payments.outlier_detection.ejections_overflow", 0),
        // Deprecated, still exported by Envoy 1.40.
        ("cluster.payments.outlier_detection.ejections_total", 1),
        (
            "cluster.payments.outlier_detection.ejections_consecutive_5xx",
            1,
        ),
        ("cluster.payments.membership_healthy", 2),
    ])
    .await;
    // While ejected, the host gets nothing.
    for _ in 0..6 {
        let r = fx.get("/payments/x", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        ejected_at.elapsed() < Duration::from_millis(900),
        "too slow to check the ejection window"
    );
    assert_eq!(bad.requests(), 3);
    // Back after base_ejection_time × 1, checked at the 500 ms interval.
    fx.wait_stat(
        "cluster.payments.outlier_detection.ejections_active",
        0..=0,
        Duration::from_secs(5),
    )
    .await;
    let back_after = ejected_at.elapsed();
    assert!(
        back_after >= Duration::from_millis(800) && back_after < Duration::from_millis(2500),
        "un-ejected after {back_after:?}"
    );
    assert_eq!(ejected(&fx).await, Vec::<SocketAddr>::new());
    send_until(&fx, 10, || bad.requests() > 3).await;
}

flavors!(
    max_ejection_percent_cap,
    max_ejection_percent_cap_envoy,
    max_ejection_percent_cap_legate
);

/// Four hosts, two always 503, max_ejection_percent 25: only one may be ejected; the
/// other's ejection is an overflow.
async fn max_ejection_percent_cap(flavor: Flavor) {
    let a = healthy("good-a").await;
    let b = healthy("good-b").await;
    let bad_a = always_503("bad-a").await;
    let bad_b = always_503("bad-b").await;
    let fx = Fixture::start(
        flavor,
        &[svc(
            "payments",
            &[a.addr, bad_a.addr, b.addr, bad_b.addr],
            "outlier_detection:\n  consecutive_5xx: 3\n  interval: 500ms\n  \
             base_ejection_time: 30s\n  max_ejection_percent: 25\n",
        )],
    )
    .await;
    send_until(&fx, 60, || bad_a.requests() >= 3 && bad_b.requests() >= 3).await;
    fx.wait_stat(
        "cluster.payments.outlier_detection.ejections_overflow",
        1..=u64::MAX,
        Duration::from_secs(2),
    )
    .await;
    let out = ejected(&fx).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0] == bad_a.addr || out[0] == bad_b.addr, "{out:?}");
    fx.expect_stats(&[
        ("cluster.payments.outlier_detection.ejections_active", 1),
        (
            "cluster.payments.outlier_detection.ejections_enforced_consecutive_5xx",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_detected_consecutive_5xx",
            2,
        ),
        (
            "cluster.payments.outlier_detection.ejections_enforced_total",
            1,
        ),
        ("cluster.payments.outlier_detection.ejections_overflow", 1),
        // Deprecated, still exported: the first counts detections, the second ejections
        // that passed the cap.
        (
            "cluster.payments.outlier_detection.ejections_consecutive_5xx",
            2,
        ),
        ("cluster.payments.outlier_detection.ejections_total", 1),
        ("cluster.payments.membership_healthy", 3),
    ])
    .await;
}

flavors!(
    success_rate_ejection,
    success_rate_ejection_envoy,
    success_rate_ejection_legate
);

/// Five hosts, one failing about half its requests. With four perfect peers any host below
/// 100 % is below mean − 1.9 × stdev, so the success-rate detector ejects it at an interval
/// tick once every host has request_volume requests in the interval.
async fn success_rate_ejection(flavor: Flavor) {
    let mut good = Vec::new();
    for n in 0..4 {
        good.push(healthy(&format!("good-{n}")).await);
    }
    let flaky = Upstream::builder("flaky")
        .faults(FaultConfig {
            fail_rate: 0.5,
            seed: 7,
            ..FaultConfig::default()
        })
        .start()
        .await
        .expect("upstream");
    let mut endpoints: Vec<SocketAddr> = good.iter().map(|u| u.addr).collect();
    endpoints.insert(2, flaky.addr);
    let fx = Arc::new(
        Fixture::start(
            flavor,
            &[svc(
                "payments",
                &endpoints,
                "outlier_detection:\n  interval: 1s\n  base_ejection_time: 30s\n  \
                 max_ejection_percent: 100\n  \
                 success_rate: { minimum_hosts: 5, request_volume: 10 }\n  \
                 enforcing: { consecutive_5xx: 0 }\n",
            )],
        )
        .await,
    );
    // Four senders keep traffic flowing until the detector ejects the flaky host.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let fx = fx.clone();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = fx.get("/payments/x", &[]).await;
                assert!(r.status == 200 || r.status == 503, "{}", r.status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let waited = fx
        .proxy
        .process()
        .wait_until(
            "the flaky host to be ejected by success rate",
            Duration::from_secs(10),
            || async {
                let v = fx
                    .stats()
                    .await
                    .get("cluster.payments.outlier_detection.ejections_enforced_success_rate")
                    .copied();
                v.filter(|v| *v >= 1)
            },
        )
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        s.await.expect("sender");
    }
    assert_eq!(waited, 1);
    assert_eq!(ejected(&fx).await, [flaky.addr]);
    fx.expect_stats(&[
        ("cluster.payments.outlier_detection.ejections_active", 1),
        (
            "cluster.payments.outlier_detection.ejections_enforced_success_rate",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_detected_success_rate",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_enforced_total",
            1,
        ),
        (
            "cluster.payments.outlier_detection.ejections_enforced_consecutive_5xx",
            0,
        ),
        ("cluster.payments.membership_healthy", 4),
    ])
    .await;
}
