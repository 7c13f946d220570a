//! The connection manager's internal-request rule with `internal_address_config` set: only a
//! request whose single `x-forwarded-for` address is internal may steer the router with
//! `x-envoy-*` headers (`retries::retry_by_request_headers` covers the default, where no
//! request is internal).

use legate_e2e::Flavor;
use legate_e2e::upstream::Upstream;
use serde_json::json;

use crate::common::{Fixture, SETTLE, flavors, test_id};

flavors!(
    internal_requests_steer_the_router,
    internal_requests_steer_the_router_envoy,
    internal_requests_steer_the_router_legate
);

/// `internal_address_config` with `cidr_ranges: [10.0.0.0/8]` and no retry policy on the
/// route. From `x-forwarded-for: 10.1.2.3` the request is internal: the upstream sees
/// `x-envoy-internal: true`, and `x-envoy-retry-on` / `x-envoy-max-retries` /
/// `x-envoy-upstream-rq-timeout-ms` take effect and are consumed. From an address outside the
/// ranges (even a private one: the ranges replace the built-in list), from two addresses, or
/// without `x-forwarded-for`, it is external: the headers (and the client's own
/// `x-envoy-internal`) are stripped. Codes are charged under `internal.` / `external.`.
async fn internal_requests_steer_the_router(flavor: Flavor) {
    let up = Upstream::start("p1").await.expect("upstream");
    let hcm = json!({"internal_address_config": {
        "cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]
    }});
    let fx = Fixture::start_static(flavor, &[up.addr], hcm).await;
    let steer = [
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-max-retries", "2"),
        ("x-envoy-internal", "true"),
    ];
    let cases: [(&str, Option<&str>, u64); 4] = [
        ("in-range", Some("10.1.2.3"), 3),
        ("private-out-of-range", Some("192.168.1.1"), 1),
        ("two-addresses", Some("10.1.2.3, 10.0.0.1"), 1),
        ("no-xff", None, 1),
    ];
    for (what, xff, attempts) in cases {
        let id = test_id(flavor, what);
        let mut h = vec![("x-fault-sequence", "503,503,200")];
        h.extend_from_slice(&steer);
        if let Some(xff) = xff {
            h.push(("x-forwarded-for", xff));
        }
        let r = fx.get_payments(&id, &h).await;
        let internal = attempts > 1;
        assert_eq!(
            r.status,
            if internal { 200 } else { 503 },
            "{what}: {}",
            r.body
        );
        let json = r.json();
        assert_eq!(json["attempt"], attempts, "{what}: {json}");
        let headers = &json["headers"];
        let expected_internal = internal.then_some("true");
        assert_eq!(
            headers["x-envoy-internal"].as_str(),
            expected_internal,
            "{what}: {headers}"
        );
        for name in ["x-envoy-retry-on", "x-envoy-max-retries"] {
            assert!(headers.get(name).is_none(), "{what}: {name} in {headers}");
        }
        let got = up.log().wait_settled(&id, attempts as usize, SETTLE).await;
        assert_eq!(got.len() as u64, attempts, "{what}: {got:?}");
    }

    // The route timeout from an internal request's header cuts a 300 ms answer short; from
    // an external one it is ignored.
    for (what, xff, status) in [
        ("timeout-internal", "10.1.2.3", 504),
        ("timeout-external", "192.168.1.1", 200),
    ] {
        let id = test_id(flavor, what);
        let r = fx
            .get_payments(
                &id,
                &[
                    ("x-fault-delay-ms", "300"),
                    ("x-envoy-upstream-rq-timeout-ms", "100"),
                    ("x-forwarded-for", xff),
                ],
            )
            .await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if status == 504 {
            assert_eq!(r.body, "upstream request timeout");
        }
    }

    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 8),
        ("cluster.payments.upstream_rq_retry", 2),
        ("cluster.payments.retry.upstream_rq_503", 2),
        ("cluster.payments.upstream_rq_timeout", 1),
        ("cluster.payments.internal.upstream_rq_200", 1),
        ("cluster.payments.internal.upstream_rq_504", 1),
        ("cluster.payments.internal.upstream_rq_completed", 2),
        ("cluster.payments.external.upstream_rq_503", 3),
        ("cluster.payments.external.upstream_rq_200", 1),
        ("cluster.payments.external.upstream_rq_completed", 4),
        ("cluster.payments.upstream_rq_completed", 6),
    ])
    .await;
}
