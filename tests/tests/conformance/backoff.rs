//! Retry back-off, measured: base 25 ms, max 250 ms, four retries of an always-503
//! request, many requests; the gap between consecutive attempt arrivals at the upstream
//! is the back-off plus a little proxy and loopback overhead.
//!
//! Run with `--nocapture` to see the distribution (min / p10 / median / p90 / max per
//! retry index); docs/compat.md records a measurement. The checks: for retry n, waits look
//! uniform in [0, 25 ms × 2^(n-1)) — min near 0, median near half the interval, p90 near
//! 0.9 × interval, and at most 1 in 40 longer than the interval plus 15 ms of overhead.

use std::sync::Arc;
use std::time::Duration;

use legate_e2e::Flavor;

use crate::common::{Fixture, flavors, test_id};

/// Requests measured per run.
const REQUESTS: usize = 120;
/// Requests in flight at once.
const CONCURRENCY: usize = 4;
/// Retries per request.
const RETRIES: usize = 4;
/// Envoy's interval for retry n (1-based): base × 2^(n-1), capped at max.
const INTERVAL_MS: [f64; RETRIES] = [25.0, 50.0, 100.0, 200.0];
/// Overhead allowed on top of a wait (proxy, loopback, a loaded 2-core machine).
const SLACK_MS: f64 = 15.0;

flavors!(
    backoff_distribution,
    backoff_distribution_envoy,
    backoff_distribution_legate
);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn backoff_distribution(flavor: Flavor) {
    let (up, fx) = Fixture::payments(
        flavor,
        "retries:\n  attempts: 4\n  on: [5xx]\n  backoff: { base: 25ms, max: 250ms }\n\
         circuit_breaker:\n  max_retries: 1000\n",
    )
    .await;
    let fx = Arc::new(fx);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let fx = fx.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= REQUESTS {
                    break;
                }
                let id = test_id(fx.flavor, &format!("backoff-{n}"));
                let r = fx.get_payments(&id, &[("x-fault-status", "503")]).await;
                assert_eq!(r.status, 503, "{}", r.body);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); RETRIES];
    for n in 0..REQUESTS {
        let id = test_id(flavor, &format!("backoff-{n}"));
        let attempts = up
            .log()
            .wait_settled(&id, RETRIES + 1, Duration::from_secs(2))
            .await;
        assert_eq!(attempts.len(), RETRIES + 1, "request {n}: {attempts:?}");
        for (i, pair) in attempts.windows(2).enumerate() {
            gaps[i].push((pair[1].at - pair[0].at).as_secs_f64() * 1000.0);
        }
    }
    let mut report = format!(
        "{}: back-off gaps in ms over {REQUESTS} requests (retry: min / p10 / median / p90 / max / mean)\n",
        flavor.name()
    );
    let mut problems = Vec::new();
    for (i, g) in gaps.iter_mut().enumerate() {
        g.sort_by(f64::total_cmp);
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let (min, p10, med, p90, max) = (
            g[0],
            percentile(g, 0.1),
            percentile(g, 0.5),
            percentile(g, 0.9),
            g[g.len() - 1],
        );
        report += &format!(
            "  retry {}: {min:.1} / {p10:.1} / {med:.1} / {p90:.1} / {max:.1} / {mean:.1}\n",
            i + 1
        );
        // A uniform wait in [0, interval): min near 0, median near half, p90 near the top,
        // nothing beyond the interval (plus overhead) but for a few scheduling hiccups.
        let interval = INTERVAL_MS[i];
        let over = g.iter().filter(|x| **x > interval + SLACK_MS).count();
        if over > g.len() / 40 {
            problems.push(format!(
                "retry {}: {over} of {} waits longer than the {interval} ms interval (+{SLACK_MS} ms)",
                i + 1,
                g.len()
            ));
        }
        if min > 0.15 * interval + SLACK_MS / 3.0 {
            problems.push(format!("retry {}: min {min:.1} ms, expected near 0", i + 1));
        }
        if med < 0.3 * interval || med > 0.7 * interval + SLACK_MS / 3.0 {
            problems.push(format!(
                "retry {}: median {med:.1} ms, expected near {:.1}",
                i + 1,
                interval / 2.0
            ));
        }
        if p90 < 0.7 * interval {
            problems.push(format!(
                "retry {}: p90 {p90:.1} ms, expected near {:.1}",
                i + 1,
                0.9 * interval
            ));
        }
    }
    eprintln!("{report}");
    assert!(problems.is_empty(), "{report}{}", problems.join("\n"));
    fx.expect_stats(&[
        (
            "cluster.payments.upstream_rq_retry",
            (REQUESTS * RETRIES) as u64,
        ),
        (
            "cluster.payments.upstream_rq_retry_limit_exceeded",
            REQUESTS as u64,
        ),
        ("cluster.payments.upstream_rq_retry_overflow", 0),
    ])
    .await;
}
