//! gRPC retries (`protocol: grpc`, `on: [unavailable]`) over h2c on both sides.

use legate_e2e::upstream::{Outcome, Upstream};
use legate_e2e::{Flavor, H2Response, grpc_frame, h2c_send};

use crate::common::{Fixture, SETTLE, assert_not_retried, flavors, outcomes, svc, test_id};

/// A unary gRPC call through the proxy with the given fault headers.
async fn call(fx: &Fixture, id: &str, faults: &[(&str, &str)]) -> H2Response {
    let mut req = http::Request::post("/greeter/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-test-id", id);
    for (k, v) in faults {
        req = req.header(*k, *v);
    }
    let req = req.body(grpc_frame(b"")).expect("request");
    h2c_send(fx.listener, req)
        .await
        .unwrap_or_else(|e| panic!("{}: gRPC call: {e}", fx.flavor.name()))
}

flavors!(
    grpc_unavailable_retried,
    grpc_unavailable_retried_envoy,
    grpc_unavailable_retried_legate
);

/// UNAVAILABLE (14) in a trailers-only response is retried; INTERNAL (13) is not (not in
/// `on`); UNAVAILABLE in the trailers of a started response is not (the response has begun).
async fn grpc_unavailable_retried(flavor: Flavor) {
    let up = Upstream::start("g1").await.expect("upstream");
    let fx = Fixture::start(
        flavor,
        &[svc(
            "greeter",
            &[up.addr],
            "protocol: grpc\nretries:\n  attempts: 1\n  on: [unavailable]\n",
        )],
    )
    .await;

    let id = test_id(flavor, "unavailable");
    let r = call(
        &fx,
        &id,
        &[
            ("x-fault-grpc-status-sequence", "14,0"),
            ("x-fault-grpc-status-in-headers", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    let attempts = up.log().wait_settled(&id, 2, SETTLE).await;
    assert_eq!(outcomes(&attempts), [Outcome::Grpc(14), Outcome::Grpc(0)]);
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.instance.as_str())
            .collect::<Vec<_>>(),
        ["g1", "g1"]
    );
    assert_eq!(up.stats().http2_requests, 2, "h2c to the upstream");

    let id = test_id(flavor, "internal");
    let r = call(
        &fx,
        &id,
        &[
            ("x-fault-grpc-status-sequence", "13,0"),
            ("x-fault-grpc-status-in-headers", "1"),
        ],
    )
    .await;
    assert_eq!(r.grpc_status(), Some(13), "{r:?}");
    assert_not_retried(&up, &id).await;

    let id = test_id(flavor, "trailers");
    let r = call(&fx, &id, &[("x-fault-grpc-status-sequence", "14,0")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.trailer("grpc-status"), Some("14"), "{r:?}");
    assert_not_retried(&up, &id).await;

    fx.expect_stats(&[
        ("cluster.greeter.upstream_rq_total", 4),
        ("cluster.greeter.upstream_rq_retry", 1),
        ("cluster.greeter.upstream_rq_retry_success", 1),
        // The retried attempt's code is not charged.
        ("cluster.greeter.upstream_rq_200", 3),
        ("cluster.greeter.retry.upstream_rq_200", 1),
    ])
    .await;
    // Three calls, each on its own h2c connection (the fixture's readiness probes are HTTP/1.1).
    fx.wait_stat(
        "http.app.downstream_cx_http2_total",
        3..=3,
        crate::common::STATS_SETTLE,
    )
    .await;
}
