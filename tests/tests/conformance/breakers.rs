//! Circuit breakers: max_requests, max_pending_requests (with max_connections), max_retries
//! and the retry budget, and what an overflow looks like to the client.

use std::sync::Arc;
use std::time::Duration;

use legate_e2e::{Flavor, HttpResponse};

use crate::common::{Fixture, PAYMENTS_PATH, assert_not_retried, flavors, test_id};

/// How long a request is held at the upstream while the breaker is full.
const HOLD_MS: &str = "1000";

/// Envoy's local reply for a request rejected by a circuit breaker.
const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// Sends a GET in the background.
fn spawn_get(
    fx: &Arc<Fixture>,
    headers: Vec<(String, String)>,
) -> tokio::task::JoinHandle<HttpResponse> {
    let fx = fx.clone();
    tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fx.get(PAYMENTS_PATH, &h).await
    })
}

fn held(id: &str) -> Vec<(String, String)> {
    vec![
        ("x-test-id".into(), id.into()),
        ("x-fault-delay-ms".into(), HOLD_MS.into()),
    ]
}

/// Asserts `r` is Envoy's overflow reply.
fn assert_overflow(r: &HttpResponse) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.header("x-envoy-overloaded"),
        Some("true"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.body, OVERFLOW_BODY);
}

flavors!(
    max_requests_overflow,
    max_requests_overflow_envoy,
    max_requests_overflow_legate
);

/// max_requests 1: while one request is in flight, a second one is rejected at once.
async fn max_requests_overflow(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "circuit_breaker:\n  max_requests: 1\n").await;
    let fx = Arc::new(fx);
    let first = test_id(flavor, "first");
    let slow = spawn_get(&fx, held(&first));
    fx.wait_arrived(&up, &first).await;
    fx.expect_stats(&[("cluster.payments.circuit_breakers.default.rq_open", 1)])
        .await;
    let second = test_id(flavor, "second");
    let r = fx.get_payments(&second, &[]).await;
    assert_overflow(&r);
    assert_eq!(up.log().count(&second), 0);
    let r = slow.await.expect("first request");
    assert_eq!(r.status, 200, "{}", r.body);
    // Envoy 1.40 counts a max_requests rejection as `upstream_rq_active_overflow` (not
    // `upstream_rq_pending_overflow`), and charges the local 503 as an upstream code.
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_active_overflow", 1),
        ("cluster.payments.upstream_rq_pending_overflow", 0),
        ("cluster.payments.upstream_rq_total", 1),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.upstream_rq_503", 1),
        ("cluster.payments.upstream_rq_completed", 2),
        ("cluster.payments.upstream_rq_active", 0),
        ("cluster.payments.circuit_breakers.default.rq_open", 0),
    ])
    .await;
}

flavors!(
    max_pending_overflow,
    max_pending_overflow_envoy,
    max_pending_overflow_legate
);

/// max_connections 1, max_pending_requests 1 over HTTP/1.1: the first request holds the
/// only connection, the second waits for it, the third is rejected; the first two succeed.
async fn max_pending_overflow(flavor: Flavor) {
    let (up, fx) = Fixture::payments(
        flavor,
        "circuit_breaker:\n  max_connections: 1\n  max_pending_requests: 1\n",
    )
    .await;
    let fx = Arc::new(fx);
    let first = test_id(flavor, "first");
    let r1 = spawn_get(&fx, held(&first));
    fx.wait_arrived(&up, &first).await;
    let second = test_id(flavor, "second");
    let r2 = spawn_get(&fx, vec![("x-test-id".into(), second.clone())]);
    // Let the second request queue behind the first (which holds the upstream for 1 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = fx.stats().await;
    let third = test_id(flavor, "third");
    let r = fx.get_payments(&third, &[]).await;
    assert_overflow(&r);
    assert_eq!(up.log().count(&third), 0);
    let r = r1.await.expect("first request");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = r2.await.expect("second request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.connections(), 1, "one upstream connection, reused");
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_pending_overflow", 1),
        // Only the second request wanted a connection over the limit; the third was refused
        // by the pending limit first. The refused request is not an upstream request.
        ("cluster.payments.upstream_cx_overflow", 1),
        ("cluster.payments.upstream_rq_total", 2),
        ("cluster.payments.upstream_rq_200", 2),
        ("cluster.payments.upstream_cx_total", 1),
        ("cluster.payments.upstream_rq_pending_total", 2),
        ("cluster.payments.upstream_rq_pending_active", 0),
        ("cluster.payments.upstream_rq_active", 0),
        // The local 503 is charged as the upstream's code.
        ("cluster.payments.upstream_rq_503", 1),
        ("cluster.payments.upstream_rq_completed", 3),
        (
            "cluster.payments.circuit_breakers.default.rq_pending_open",
            0,
        ),
    ])
    .await;
    fx.assert_snapshot(
        "while the second request waited",
        &queued,
        &[
            ("cluster.payments.upstream_rq_pending_active", 1),
            // A queued request is not an upstream request yet.
            ("cluster.payments.upstream_rq_active", 1),
            ("cluster.payments.upstream_rq_total", 1),
            ("cluster.payments.circuit_breakers.default.cx_open", 1),
            (
                "cluster.payments.circuit_breakers.default.rq_pending_open",
                1,
            ),
        ],
    );
}

/// A retry the breaker does not allow: the upstream's 503 is returned as it is, after one
/// attempt, and counted as a retry overflow.
async fn retry_overflow(flavor: Flavor, keys: &str) {
    let (up, fx) = Fixture::payments(flavor, keys).await;
    let id = test_id(flavor, "retry-overflow");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "503,200")])
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["attempt"], 1, "the upstream's own 503: {}", r.body);
    assert_eq!(r.header("x-envoy-overloaded"), None, "{:?}", r.headers);
    assert_not_retried(&up, &id).await;
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 1),
        ("cluster.payments.upstream_rq_retry", 0),
        ("cluster.payments.upstream_rq_retry_overflow", 1),
        ("cluster.payments.upstream_rq_retry_limit_exceeded", 0),
        ("cluster.payments.upstream_rq_503", 1),
    ])
    .await;
}

async fn max_retries_overflow(flavor: Flavor) {
    retry_overflow(
        flavor,
        "retries:\n  attempts: 3\n  on: [5xx]\ncircuit_breaker:\n  max_retries: 0\n",
    )
    .await
}

flavors!(
    max_retries_overflow,
    max_retries_overflow_envoy,
    max_retries_overflow_legate
);

async fn retry_budget_overflow(flavor: Flavor) {
    retry_overflow(
        flavor,
        "retries:\n  attempts: 3\n  on: [5xx]\n  budget: { percent: 0, min_concurrency: 0 }\n",
    )
    .await
}

flavors!(
    retry_budget_overflow,
    retry_budget_overflow_envoy,
    retry_budget_overflow_legate
);
