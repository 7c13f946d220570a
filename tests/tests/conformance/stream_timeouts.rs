//! The connection manager's stream timeouts: `stream_idle_timeout` (replaced by a route's
//! `idle_timeout`) ends a stream on which nothing moved for that long, `request_timeout` a
//! request that has not arrived in full in that time. Before the response head the client
//! gets a local reply (408 while the request is still arriving, 504 once it is complete);
//! after it, the stream is reset. The router charges nothing for either.

use std::time::Duration;

use legate_e2e::{Flavor, h2c_send};
use serde_json::json;

use crate::common::{Fixture, Step, flavors, manager, merged, raw_exchange};

/// The stream timeouts the scenarios configure: short, so that a wait of three times as long
/// shows them.
const TIMEOUT: &str = "1s";
/// How long the upstream stays silent where a timeout should fire first.
const SILENCE_MS: &str = "3000";

/// Asserts that `got` is Envoy's 408 with `body`, closing the connection.
fn assert_408(flavor: Flavor, case: &str, got: &str, body: &str) {
    let name = flavor.name();
    assert!(
        got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{name}: {case}: {got:?}"
    );
    assert!(
        got.contains("\r\nconnection: close\r\n"),
        "{name}: {case}: {got:?}"
    );
    assert!(
        got.ends_with(&format!("\r\n\r\n{body}")),
        "{name}: {case}: {got:?}"
    );
}

/// A `POST` whose 5-byte body comes one byte every 400 ms (2 s in all), the connection
/// closing after the response when `close`.
fn trickled_post(close: bool) -> Vec<Step<'static>> {
    let wait = || Step::Wait(Duration::from_millis(400));
    let mut steps = vec![Step::Send(if close {
        b"POST /payments/x HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    } else {
        b"POST /payments/x HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"
    })];
    for byte in [b"1", b"2", b"3", b"4", b"5"] {
        steps.push(wait());
        steps.push(Step::Send(byte));
    }
    steps
}

/// A request head whose first part (no blank line) is followed by 2 s of silence.
fn head_in_parts() -> [Step<'static>; 2] {
    [
        Step::Send(b"GET /payments/x HTTP/1.1\r\nhost: x\r\n"),
        Step::Wait(Duration::from_millis(2000)),
    ]
}

/// A route to the `payments` cluster for `prefix`, without a route timeout (only the stream
/// timeouts are left), with `extra` merged into its action.
fn route(prefix: &str, extra: serde_json::Value) -> serde_json::Value {
    let action = merged(json!({"cluster": "payments", "timeout": "0s"}), &extra);
    json!({"match": {"prefix": prefix}, "route": action})
}

/// A connection manager with `settings` and `routes`.
fn hcm(settings: serde_json::Value, routes: &[serde_json::Value]) -> serde_json::Value {
    manager(&["*"], routes, &settings)
}

async fn upstream() -> legate_e2e::upstream::Upstream {
    legate_e2e::upstream::Upstream::start("p1")
        .await
        .expect("upstream")
}

/// A request received in full waits for an upstream that stays silent: the stream idle
/// timeout answers 504 `stream timeout` (over HTTP/1.1 and h2c; the connection stays open),
/// counted as `downstream_rq_idle_timeout` and charged to no cluster. A route's `idle_timeout`
/// replaces the connection manager's (3 s lets a 2 s wait through); zero disables it.
async fn stream_idle_timeout_ends_a_silent_wait(flavor: Flavor) {
    let up = upstream().await;
    let routes = [
        route("/longer/", json!({"idle_timeout": "3s"})),
        route("/off/", json!({"idle_timeout": "0s"})),
        route("/", json!({})),
    ];
    let manager = hcm(json!({"stream_idle_timeout": TIMEOUT}), &routes);
    let fx = Fixture::start_static(flavor, &[up.addr], manager).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let silent = [("x-fault-delay-ms", SILENCE_MS)];
    let r = fx.get("/payments/x", &silent).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "stream timeout"),
        "{name}"
    );
    assert!(
        r.headers.get("connection").is_none(),
        "{name}: the connection stays open: {:?}",
        r.headers
    );
    let two_seconds = [("x-fault-delay-ms", "2000")];
    assert_eq!(
        fx.get("/longer/x", &two_seconds).await.status,
        200,
        "{name}"
    );
    assert_eq!(fx.get("/off/x", &two_seconds).await.status, 200, "{name}");
    let req = http::Request::get("/payments/x")
        .header("x-fault-delay-ms", SILENCE_MS)
        .body(bytes::Bytes::new())
        .expect("request");
    let r = h2c_send(fx.listener, req).await.expect("h2c request");
    assert_eq!(
        (r.status, r.body.as_ref()),
        (504, b"stream timeout".as_ref()),
        "{name}: h2c"
    );
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_idle_timeout", 2),
            ("http.app.downstream_rq_5xx", 2),
            ("http.app.downstream_rq_rx_reset", 0),
            ("cluster.payments.upstream_rq_200", 2),
            ("cluster.payments.upstream_rq_504", 0),
            ("cluster.payments.upstream_rq_timeout", 0),
            ("cluster.payments.upstream_rq_active", 0),
            (
                "cluster.payments.upstream_cx_destroy_local_with_active_rq",
                2,
            ),
        ],
    )
    .await;
}

flavors!(
    stream_idle_timeout_ends_a_silent_wait,
    stream_idle_timeout_ends_a_silent_wait_envoy,
    stream_idle_timeout_ends_a_silent_wait_legate
);

/// A request that stops arriving (a head in parts, a body that stalls, whether streamed
/// upstream or buffered for retries) is answered 408 `stream timeout` and its connection
/// closed; a head's later parts do not restart the timer, a body's frames do (a body that
/// trickles in for twice the timeout goes through).
async fn stream_idle_timeout_ends_a_stalled_request(flavor: Flavor) {
    let up = upstream().await;
    let routes = [
        route(
            "/retried/",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 1}}),
        ),
        route("/", json!({})),
    ];
    let manager = hcm(json!({"stream_idle_timeout": TIMEOUT}), &routes);
    let fx = Fixture::start_static(flavor, &[up.addr], manager).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let wait = |ms| Step::Wait(Duration::from_millis(ms));
    for path in ["/payments/x", "/retried/x"] {
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n");
        let got = raw_exchange(&fx, &[Step::Send(head.as_bytes()), Step::Send(b"12345")]).await;
        assert_408(flavor, path, &got, "stream timeout");
    }
    let got = raw_exchange(
        &fx,
        &[
            Step::Send(b"GET /payments/x HTTP/1.1\r\n"),
            wait(600),
            Step::Send(b"host: x\r\n"),
            wait(600),
            Step::Send(b"a: b\r\n"),
        ],
    )
    .await;
    assert_408(flavor, "a head in parts", &got, "stream timeout");
    let got = raw_exchange(&fx, &trickled_post(true)).await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n"),
        "{name}: trickle: {got:?}"
    );
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_idle_timeout", 3),
            ("http.app.downstream_rq_4xx", 3),
            ("http.app.downstream_rq_2xx", 1),
            ("http.app.downstream_rq_response_before_rq_complete", 3),
            ("http.app.downstream_rq_rx_reset", 3),
            ("cluster.payments.upstream_rq_200", 1),
            ("cluster.payments.upstream_rq_active", 0),
        ],
    )
    .await;
}

flavors!(
    stream_idle_timeout_ends_a_stalled_request,
    stream_idle_timeout_ends_a_stalled_request_envoy,
    stream_idle_timeout_ends_a_stalled_request_legate
);

/// A response body that stalls is cut by the stream idle timeout: the client gets the head
/// and the first chunk, then the connection closes without the last chunk. Counted as
/// `downstream_rq_idle_timeout` and `downstream_rq_tx_reset`; not as an upstream timeout.
async fn stream_idle_timeout_resets_a_stalled_response(flavor: Flavor) {
    let up = upstream().await;
    let manager = hcm(
        json!({"stream_idle_timeout": TIMEOUT}),
        &[route("/", json!({}))],
    );
    let fx = Fixture::start_static(flavor, &[up.addr], manager).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let request = format!(
        "GET /payments/x HTTP/1.1\r\nhost: x\r\nx-fault-body-delay-ms: {SILENCE_MS}\r\n\r\n"
    );
    let got = raw_exchange(&fx, &[Step::Send(request.as_bytes())]).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {got:?}");
    assert!(
        got.contains("transfer-encoding: chunked"),
        "{name}: a streamed body: {got:?}"
    );
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "{name}: a complete body: {got:?}"
    );
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_idle_timeout", 1),
            ("http.app.downstream_rq_tx_reset", 1),
            ("cluster.payments.upstream_rq_200", 1),
            ("cluster.payments.upstream_rq_timeout", 0),
            ("cluster.payments.upstream_rq_active", 0),
            ("http.app.downstream_rq_active", 0),
        ],
    )
    .await;
}

flavors!(
    stream_idle_timeout_resets_a_stalled_response,
    stream_idle_timeout_resets_a_stalled_response_envoy,
    stream_idle_timeout_resets_a_stalled_response_legate
);

/// `request_timeout` bounds the time a request takes to arrive, head and body, however busy
/// it keeps the stream: a body trickling in past it, and a head arriving in parts, are answered
/// 408 `request timeout` (`downstream_rq_timeout`). It stops once the request is complete: a
/// slower upstream is not cut.
async fn request_timeout_ends_a_slow_request(flavor: Flavor) {
    let up = upstream().await;
    let settings = json!({"request_timeout": TIMEOUT, "stream_idle_timeout": "0s"});
    let fx =
        Fixture::start_static(flavor, &[up.addr], hcm(settings, &[route("/", json!({}))])).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let got = raw_exchange(&fx, &trickled_post(false)).await;
    assert_408(flavor, "a trickling body", &got, "request timeout");
    let parts = head_in_parts();
    assert_408(
        flavor,
        "a head in parts",
        &raw_exchange(&fx, &parts).await,
        "request timeout",
    );
    let r = fx.get("/payments/x", &[("x-fault-delay-ms", "2000")]).await;
    assert_eq!(r.status, 200, "{name}: a slow upstream");
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_timeout", 2),
            ("http.app.downstream_rq_idle_timeout", 0),
            ("http.app.downstream_rq_4xx", 2),
            ("http.app.downstream_rq_rx_reset", 2),
            ("cluster.payments.upstream_rq_200", 1),
            ("cluster.payments.upstream_rq_active", 0),
        ],
    )
    .await;
}

flavors!(
    request_timeout_ends_a_slow_request,
    request_timeout_ends_a_slow_request_envoy,
    request_timeout_ends_a_slow_request_legate
);

/// `request_headers_timeout` bounds the time a request head takes to arrive, from its first
/// byte: a head arriving in parts (however busy) is answered 408 `request header timeout`
/// (`downstream_rq_header_timeout`) and the connection closed. It stops once the head is
/// complete: a slower upstream is not cut.
async fn request_headers_timeout_ends_a_slow_head(flavor: Flavor) {
    let up = upstream().await;
    let settings = json!({"request_headers_timeout": TIMEOUT});
    let fx =
        Fixture::start_static(flavor, &[up.addr], hcm(settings, &[route("/", json!({}))])).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let wait = |ms| Step::Wait(Duration::from_millis(ms));
    let parts = head_in_parts();
    assert_408(
        flavor,
        "a head in parts",
        &raw_exchange(&fx, &parts).await,
        "request header timeout",
    );
    let trickle = [
        Step::Send(b"GET /payments/x HTTP/1.1\r\n"),
        wait(400),
        Step::Send(b"host: x\r\n"),
        wait(400),
        Step::Send(b"a: b\r\n"),
        wait(400),
        Step::Send(b"c: d\r\n"),
    ];
    assert_408(
        flavor,
        "a trickling head",
        &raw_exchange(&fx, &trickle).await,
        "request header timeout",
    );
    let r = fx.get("/payments/x", &[("x-fault-delay-ms", "2000")]).await;
    assert_eq!(r.status, 200, "{name}: a slow upstream");
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_header_timeout", 2),
            ("http.app.downstream_rq_timeout", 0),
            ("http.app.downstream_rq_idle_timeout", 0),
            ("http.app.downstream_rq_4xx", 2),
            ("http.app.downstream_rq_response_before_rq_complete", 2),
            ("http.app.downstream_rq_rx_reset", 2),
            ("cluster.payments.upstream_rq_200", 1),
        ],
    )
    .await;
}

flavors!(
    request_headers_timeout_ends_a_slow_head,
    request_headers_timeout_ends_a_slow_head_envoy,
    request_headers_timeout_ends_a_slow_head_legate
);
