//! Retry policy and timeouts: what is retried, how often, and the counters Envoy keeps.

use std::time::Duration;

use bytes::Bytes;
use legate_e2e::upstream::{Outcome, ResetKind, Upstream, dead_addr};
use legate_e2e::{Flavor, Recorder, http_send};

use crate::common::{
    Fixture, NO_RETRY_WAIT, SETTLE, assert_not_retried, flavors, outcomes, svc, test_id,
};

/// How early a timeout may seem to fire. Envoy's timers run on its event loop's cached clock:
/// its 300 ms route timeout was seen answering 299.8 ms after the client sent the request.
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// Asserts a response that a `timer` cut short took `elapsed`: at least the timer (less
/// [`TIMER_SLACK`]) and less than `below`.
fn assert_fired_in_time(elapsed: Duration, timer: Duration, below: Duration) {
    assert!(
        elapsed >= timer - TIMER_SLACK && elapsed < below,
        "took {elapsed:?}"
    );
}

flavors!(
    retry_503_then_success,
    retry_503_then_success_envoy,
    retry_503_then_success_legate
);

/// 503, 503, 200 with three retries allowed → 200 after three attempts.
async fn retry_503_then_success(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "retries:\n  attempts: 3\n  on: [5xx]\n").await;
    let id = test_id(flavor, "r503");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "503,503,200")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let json = r.json();
    assert_eq!(json["attempt"], 3, "{json}");
    assert_eq!(json["headers"]["x-envoy-attempt-count"], "3", "{json}");
    let attempts = up.log().wait_settled(&id, 3, SETTLE).await;
    assert_eq!(
        outcomes(&attempts),
        [
            Outcome::Status(503),
            Outcome::Status(503),
            Outcome::Status(200)
        ]
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 3),
        ("cluster.payments.upstream_rq_retry", 2),
        ("cluster.payments.upstream_rq_retry_success", 1),
        ("cluster.payments.upstream_rq_retry_limit_exceeded", 0),
        ("cluster.payments.upstream_rq_retry_overflow", 0),
        ("cluster.payments.upstream_rq_retry_backoff_exponential", 2),
        // Envoy charges the final attempt's code as `upstream_rq_<code>` and the retried
        // ones as `retry.upstream_rq_<code>`.
        ("cluster.payments.upstream_rq_503", 0),
        ("cluster.payments.upstream_rq_5xx", 0),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.upstream_rq_2xx", 1),
        ("cluster.payments.upstream_rq_completed", 1),
        ("cluster.payments.retry.upstream_rq_503", 2),
        ("cluster.payments.retry.upstream_rq_5xx", 2),
        ("cluster.payments.retry.upstream_rq_completed", 2),
    ])
    .await;
}

flavors!(
    retries_exhausted,
    retries_exhausted_envoy,
    retries_exhausted_legate
);

/// Always 503 with two retries → the last 503 reaches the client after 1 + 2 attempts.
async fn retries_exhausted(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "retries:\n  attempts: 2\n  on: [5xx]\n").await;
    let id = test_id(flavor, "exhausted");
    let r = fx.get_payments(&id, &[("x-fault-status", "503")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The upstream's own response is forwarded (its JSON body, not a local reply).
    assert_eq!(r.json()["attempt"], 3, "{}", r.body);
    assert_eq!(r.header("x-envoy-overloaded"), None);
    let attempts = up.log().wait_settled(&id, 3, SETTLE).await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 3),
        ("cluster.payments.upstream_rq_retry", 2),
        ("cluster.payments.upstream_rq_retry_success", 0),
        ("cluster.payments.upstream_rq_retry_limit_exceeded", 1),
        ("cluster.payments.upstream_rq_retry_backoff_exponential", 2),
        // The final attempt's code; the retried ones under `retry.`.
        ("cluster.payments.upstream_rq_503", 1),
        ("cluster.payments.upstream_rq_completed", 1),
        ("cluster.payments.retry.upstream_rq_503", 2),
    ])
    .await;
}

flavors!(
    per_try_timeout_retried,
    per_try_timeout_retried_envoy,
    per_try_timeout_retried_legate
);

/// The first attempt hangs past the 200 ms per-try timeout and is retried; the second
/// answers at once.
async fn per_try_timeout_retried(flavor: Flavor) {
    let (up, fx) = Fixture::payments(
        flavor,
        "retries:\n  attempts: 1\n  on: [5xx]\n  per_try_timeout: 200ms\n",
    )
    .await;
    let id = test_id(flavor, "pertry");
    let (r, elapsed) = fx
        .timed_get_payments(&id, &[("x-fault-delay-sequence", "2000,0")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["attempt"], 2, "{}", r.body);
    assert_fired_in_time(
        elapsed,
        Duration::from_millis(200),
        Duration::from_millis(1500),
    );
    let attempts = up.log().attempts(&id);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1].outcome, Outcome::Status(200));
    let gap = attempts[1].at - attempts[0].at;
    assert!(
        gap >= Duration::from_millis(200) - TIMER_SLACK,
        "second attempt after {gap:?}"
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 2),
        ("cluster.payments.upstream_rq_per_try_timeout", 1),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_retry_success", 1),
        ("cluster.payments.upstream_rq_timeout", 0),
        ("cluster.payments.upstream_rq_200", 1),
        // The timed-out attempt never completed and its code is not charged.
        ("cluster.payments.upstream_rq_completed", 1),
        ("cluster.payments.retry.upstream_rq_completed", 0),
        ("cluster.payments.upstream_rq_504", 0),
        ("cluster.payments.upstream_rq_active", 0),
    ])
    .await;
}

flavors!(
    route_timeout_not_retried,
    route_timeout_not_retried_envoy,
    route_timeout_not_retried_legate
);

/// The route timeout (300 ms) covers all attempts and is never retried, even with a retry
/// policy on 5xx: 504 `upstream request timeout` after one attempt.
async fn route_timeout_not_retried(flavor: Flavor) {
    let (up, fx) = Fixture::payments(
        flavor,
        "timeout: 300ms\nretries:\n  attempts: 2\n  on: [5xx, reset]\n",
    )
    .await;
    let id = test_id(flavor, "route-timeout");
    let (r, elapsed) = fx
        .timed_get_payments(&id, &[("x-fault-delay-ms", "1000")])
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body, "upstream request timeout");
    assert_fired_in_time(
        elapsed,
        Duration::from_millis(300),
        Duration::from_millis(1000),
    );
    // Give a (wrong) retry time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.log().count(&id), 1, "{:?}", up.log().attempts(&id));
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 1),
        ("cluster.payments.upstream_rq_timeout", 1),
        ("cluster.payments.upstream_rq_per_try_timeout", 0),
        ("cluster.payments.upstream_rq_retry", 0),
        // The local 504 is charged as the upstream's code.
        ("cluster.payments.upstream_rq_504", 1),
        ("cluster.payments.upstream_rq_completed", 1),
        ("cluster.payments.upstream_rq_active", 0),
    ])
    .await;
}

flavors!(
    connect_failure_retried,
    connect_failure_retried_envoy,
    connect_failure_retried_legate
);

/// One dead endpoint next to a live one, retry on connect-failure: every request ends 200
/// from the live host, each connect failure was retried.
async fn connect_failure_retried(flavor: Flavor) {
    let live = Upstream::start("live").await.expect("upstream");
    let dead = dead_addr();
    let fx = Fixture::start(
        flavor,
        &[svc(
            "payments",
            &[dead, live.addr],
            "connect_timeout: 1s\nretries:\n  attempts: 3\n  on: [connect-failure]\n",
        )],
    )
    .await;
    const N: u64 = 4;
    for n in 0..N {
        let id = test_id(flavor, &format!("cf-{n}"));
        let r = fx.get_payments(&id, &[]).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
        assert_eq!(r.header("x-upstream-instance"), Some("live"));
        assert_eq!(live.log().count(&id), 1);
    }
    let stats = fx.stats().await;
    let retries = stats
        .get("cluster.payments.upstream_rq_retry")
        .copied()
        .unwrap_or(0);
    // Round robin over {dead, live}: every request after the first meets the dead host
    // first; the first one may or may not.
    fx.expect_stat_ranges(&[
        ("cluster.payments.upstream_rq_retry", N - 1..=N),
        (
            "cluster.payments.upstream_cx_connect_fail",
            retries..=retries,
        ),
        (
            "cluster.payments.upstream_rq_pending_failure_eject",
            retries..=retries,
        ),
        (
            "cluster.payments.upstream_rq_retry_success",
            retries..=retries,
        ),
        ("cluster.payments.upstream_rq_200", N..=N),
        // Connect failures are neither upstream requests nor charged codes.
        ("cluster.payments.upstream_rq_total", N..=N),
        ("cluster.payments.upstream_rq_completed", N..=N),
        ("cluster.payments.upstream_rq_503", 0..=0),
    ])
    .await;
}

flavors!(reset_retried, reset_retried_envoy, reset_retried_legate);

/// The upstream closes the connection before answering the first attempt; `reset` retries.
async fn reset_retried(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "retries:\n  attempts: 1\n  on: [reset]\n").await;
    let id = test_id(flavor, "reset");
    let r = fx
        .get_payments(&id, &[("x-fault-reset-sequence", "before-headers,none")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let attempts = up.log().wait_settled(&id, 2, SETTLE).await;
    assert_eq!(
        outcomes(&attempts),
        [
            Outcome::Reset(ResetKind::BeforeHeaders),
            Outcome::Status(200)
        ]
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 2),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_retry_success", 1),
        (
            "cluster.payments.upstream_cx_destroy_remote_with_active_rq",
            1,
        ),
        ("cluster.payments.upstream_cx_destroy_with_active_rq", 1),
        ("cluster.payments.upstream_rq_200", 1),
        // The reset attempt did not complete and its code is not charged.
        ("cluster.payments.upstream_rq_completed", 1),
        ("cluster.payments.upstream_rq_503", 0),
    ])
    .await;
}

flavors!(
    reset_not_retried_without_policy,
    reset_not_retried_without_policy_envoy,
    reset_not_retried_without_policy_legate
);

/// Without a retry policy a reset is not retried: 503 with Envoy's reset local reply.
async fn reset_not_retried_without_policy(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "").await;
    let id = test_id(flavor, "reset-once");
    let r = fx
        .get_payments(&id, &[("x-fault-reset", "before-headers")])
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    );
    assert_not_retried(&up, &id).await;
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 1),
        ("cluster.payments.upstream_rq_retry", 0),
        (
            "cluster.payments.upstream_cx_destroy_remote_with_active_rq",
            1,
        ),
        ("cluster.payments.upstream_cx_destroy_with_active_rq", 1),
        // The local 503 is charged as the upstream's code.
        ("cluster.payments.upstream_rq_503", 1),
    ])
    .await;
}

flavors!(
    gateway_error_only,
    gateway_error_only_envoy,
    gateway_error_only_legate
);

/// `gateway-error` retries 502/503/504 but not 500: a 500 comes back after one attempt,
/// a 502 is retried.
async fn gateway_error_only(flavor: Flavor) {
    let (up, fx) =
        Fixture::payments(flavor, "retries:\n  attempts: 2\n  on: [gateway-error]\n").await;
    let id = test_id(flavor, "500");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "500,200")])
        .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_not_retried(&up, &id).await;

    let id = test_id(flavor, "502");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "502,200")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.log().wait_settled(&id, 2, SETTLE).await.len(), 2);
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 3),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_retry_success", 1),
        ("cluster.payments.upstream_rq_500", 1),
        ("cluster.payments.upstream_rq_502", 0),
        ("cluster.payments.retry.upstream_rq_502", 1),
        ("cluster.payments.upstream_rq_200", 1),
    ])
    .await;
}

flavors!(
    retriable_status_codes,
    retriable_status_codes_envoy,
    retriable_status_codes_legate
);

/// `status_codes: [409]` retries a 409 (not a 5xx condition), and nothing else.
async fn retriable_status_codes(flavor: Flavor) {
    let (up, fx) =
        Fixture::payments(flavor, "retries:\n  attempts: 2\n  status_codes: [409]\n").await;
    let id = test_id(flavor, "409");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "409,200")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = test_id(flavor, "503");
    let r = fx
        .get_payments(&id, &[("x-fault-sequence", "503,200")])
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_not_retried(&up, &id).await;
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 3),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_409", 0),
        ("cluster.payments.retry.upstream_rq_409", 1),
        ("cluster.payments.upstream_rq_503", 1),
        ("cluster.payments.upstream_rq_200", 1),
    ])
    .await;
}

flavors!(
    post_body_replayed,
    post_body_replayed_envoy,
    post_body_replayed_legate
);

/// A POST with a 64 KiB body is retried after a 503: the upstream gets the same bytes (and
/// the same content-length) on both attempts.
async fn post_body_replayed(flavor: Flavor) {
    let rec = Recorder::start(&[503, 200]).await.expect("recorder");
    let fx = Fixture::start(
        flavor,
        &[svc(
            "payments",
            &[rec.addr],
            "retries:\n  attempts: 1\n  on: [5xx]\n",
        )],
    )
    .await;
    let body: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let body = Bytes::from(body);
    let req = http::Request::post("/payments/upload")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .expect("request");
    let r = http_send(fx.listener, req).await.expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    let got = rec.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    for (n, req) in got.iter().enumerate() {
        assert_eq!(req.method, http::Method::POST, "attempt {}", n + 1);
        assert_eq!(req.path, "/upload", "attempt {}", n + 1);
        assert_eq!(
            req.headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(body.len().to_string().as_str()),
            "attempt {}",
            n + 1
        );
        assert!(
            req.body == body,
            "attempt {}: body differs ({} bytes received, {} sent)",
            n + 1,
            req.body.len(),
            body.len()
        );
    }
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 2),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_retry_success", 1),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.retry.upstream_rq_503", 1),
    ])
    .await;
}

flavors!(
    retry_by_request_headers,
    retry_by_request_headers_envoy,
    retry_by_request_headers_legate
);

/// No retry policy on the route, and the application asks for retries with
/// `x-envoy-retry-on` / `x-envoy-max-retries`. Envoy 1.40 honours these only from an
/// internal request, and with the connection manager legate-cp generates (no
/// `internal_address_config`, no `use_remote_address`) no request is internal — not even one
/// with `x-forwarded-for` naming a private address. So the headers are stripped and ignored.
async fn retry_by_request_headers(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "").await;
    const RETRY: [(&str, &str); 2] = [("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")];
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("none", vec![]),
        ("retry-on", vec![RETRY[0]]),
        ("max-retries", RETRY.to_vec()),
        (
            "private-xff",
            vec![RETRY[0], RETRY[1], ("x-forwarded-for", "10.1.2.3")],
        ),
    ];
    for (what, extra) in &cases {
        let id = test_id(flavor, what);
        let mut h = vec![("x-fault-sequence", "503,503,200")];
        h.extend_from_slice(extra);
        let r = fx.get_payments(&id, &h).await;
        assert_eq!(r.status, 503, "{what}: {}", r.body);
        let json = r.json();
        assert_eq!(json["attempt"], 1, "{what}: {json}");
        let headers = &json["headers"];
        assert!(
            headers.get("x-envoy-retry-on").is_none(),
            "{what}: {headers}"
        );
        assert!(
            headers.get("x-envoy-max-retries").is_none(),
            "{what}: {headers}"
        );
        assert_eq!(
            headers["x-envoy-expected-rq-timeout-ms"], "15000",
            "{headers}"
        );
    }
    tokio::time::sleep(NO_RETRY_WAIT).await;
    for (what, _) in &cases {
        assert_eq!(up.log().count(&test_id(flavor, what)), 1, "{what}");
    }
    // The same holds for the timeout headers: a 100 ms timeout asked for by header does not
    // cut a 300 ms answer short.
    let id = test_id(flavor, "timeout");
    let r = fx
        .get_payments(
            &id,
            &[
                ("x-fault-delay-ms", "300"),
                ("x-envoy-upstream-rq-timeout-ms", "100"),
                ("x-envoy-upstream-rq-per-try-timeout-ms", "100"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 5),
        ("cluster.payments.upstream_rq_retry", 0),
        ("cluster.payments.upstream_rq_503", 4),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.upstream_rq_timeout", 0),
    ])
    .await;
}
