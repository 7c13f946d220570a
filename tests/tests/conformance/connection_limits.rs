//! The connection manager's `common_http_protocol_options` and `drain_timeout`: a connection's
//! idle timeout, max duration and max requests, a stream's max duration, and the request header
//! limits (`max_headers_count`, `headers_with_underscores_action`).
//!
//! Where Envoy closes an HTTP/1.1 connection it first waits up to its `delayed_close_timeout`
//! (1 s) for the client to close; legate-proxy sends its FIN at once (docs/compat.md). The
//! close times asserted here allow for both.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use legate_e2e::{Flavor, h2c_send};
use serde_json::json;
use tokio::net::TcpStream;

use crate::common::{Fixture, Step, flavors, manager, raw_exchange, raw_exchange_timed};

const GET: &[u8] = b"GET /payments/x HTTP/1.1\r\nhost: x\r\n\r\n";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A connection manager routing everything to `payments`, with `settings` merged in.
fn hcm(settings: serde_json::Value) -> serde_json::Value {
    let route =
        json!({"match": {"prefix": "/"}, "route": {"cluster": "payments", "timeout": "0s"}});
    manager(&["*"], &[route], &settings)
}

async fn fixture(
    flavor: Flavor,
    settings: serde_json::Value,
) -> (legate_e2e::upstream::Upstream, Fixture) {
    let up = legate_e2e::upstream::Upstream::start("p1")
        .await
        .expect("upstream");
    let fx = Fixture::start_static(flavor, &[up.addr], hcm(settings)).await;
    (up, fx)
}

fn assert_within(flavor: Flavor, case: &str, took: Duration, range: Range<Duration>) {
    assert!(
        range.contains(&took),
        "{}: {case}: closed after {took:?}, expected within {range:?}",
        flavor.name()
    );
}

/// The HTTP/1.1 responses in `raw`, split at each status line.
fn responses(raw: &str) -> Vec<&str> {
    raw.split("HTTP/1.1 ").filter(|r| !r.is_empty()).collect()
}

/// Opens an h2c connection, sends `requests` `GET`s one after the other, and returns their
/// statuses and how long after the connection opened the proxy ended it (GOAWAY, then close).
async fn h2c_connection_lifetime(addr: SocketAddr, requests: usize) -> (Vec<u16>, Duration) {
    let start = tokio::time::Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let mut conn = tokio::spawn(conn);
    let mut statuses = Vec::new();
    for _ in 0..requests {
        let req = http::Request::get(format!("http://{addr}/payments/x"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2c response");
        statuses.push(resp.status().as_u16());
        resp.into_body().collect().await.expect("h2c body");
    }
    // The sender is kept: a client that drops it closes the connection itself.
    let ended = tokio::time::timeout(secs(15.0), &mut conn)
        .await
        .expect("the proxy never ended the h2c connection")
        .expect("driver task");
    let took = start.elapsed();
    drop((sender, ended));
    (statuses, took)
}

/// `idle_timeout: 1s`, `drain_timeout: 1s`: a connection that carried a request is drained
/// after a second without one and closed at the drain's end; one that never sent a byte is
/// closed at once; h2c is shut down (GOAWAY) the same way. Each counts
/// `downstream_cx_idle_timeout`.
async fn idle_timeout_closes_idle_connections(flavor: Flavor) {
    let settings = json!({"common_http_protocol_options": {"idle_timeout": "1s"},
        "drain_timeout": "1s"});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let (raw, took) = raw_exchange_timed(&fx, &[Step::Send(GET)]).await;
    let got = responses(&raw);
    assert_eq!(got.len(), 1, "{}: {raw:?}", flavor.name());
    assert!(
        got[0].starts_with("200 OK\r\n"),
        "{}: {raw:?}",
        flavor.name()
    );
    assert!(
        !got[0].contains("connection: close"),
        "{}: {raw:?}",
        flavor.name()
    );
    // 1 s idle, 1 s drain (Envoy: then up to 1 s of delayed close).
    assert_within(flavor, "after a request", took, secs(1.9)..secs(3.8));
    let (raw, took) = raw_exchange_timed(&fx, &[]).await;
    assert_eq!(raw, "", "{}", flavor.name());
    assert_within(flavor, "never used", took, secs(0.9)..secs(1.9));
    let (statuses, took) = h2c_connection_lifetime(fx.listener, 1).await;
    assert_eq!(statuses, [200], "{}", flavor.name());
    assert_within(flavor, "h2c", took, secs(0.9)..secs(4.0));
    fx.expect_growth(&before, &[("http.app.downstream_cx_idle_timeout", 3)])
        .await;
}

flavors!(
    idle_timeout_closes_idle_connections,
    idle_timeout_closes_idle_connections_envoy,
    idle_timeout_closes_idle_connections_legate
);

/// `max_connection_duration: 1s`, `drain_timeout: 1s`: a second after it was accepted the
/// connection drains — each response now says `connection: close` — and it closes at the
/// drain's end; h2c is shut down. Counted as `downstream_cx_max_duration_reached`.
async fn max_connection_duration_drains_the_connection(flavor: Flavor) {
    let settings = json!({"common_http_protocol_options": {"max_connection_duration": "1s"},
        "drain_timeout": "1s"});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let steps = [Step::Send(GET), Step::Wait(secs(1.4)), Step::Send(GET)];
    let (raw, took) = raw_exchange_timed(&fx, &steps).await;
    let got = responses(&raw);
    let name = flavor.name();
    assert_eq!(got.len(), 2, "{name}: {raw:?}");
    assert!(
        got.iter().all(|r| r.starts_with("200 OK\r\n")),
        "{name}: {raw:?}"
    );
    assert!(!got[0].contains("connection: close"), "{name}: {raw:?}");
    assert!(
        got[1].contains("\r\nconnection: close\r\n"),
        "{name}: draining: {raw:?}"
    );
    assert_within(flavor, "HTTP/1.1", took, secs(1.9)..secs(3.8));
    let (statuses, took) = h2c_connection_lifetime(fx.listener, 1).await;
    assert_eq!(statuses, [200], "{name}");
    assert_within(flavor, "h2c", took, secs(0.9)..secs(4.0));
    fx.expect_growth(
        &before,
        &[("http.app.downstream_cx_max_duration_reached", 2)],
    )
    .await;
}

flavors!(
    max_connection_duration_drains_the_connection,
    max_connection_duration_drains_the_connection_envoy,
    max_connection_duration_drains_the_connection_legate
);

/// `max_requests_per_connection: 2`: the second response says `connection: close` and the
/// connection closes after it; a third request pipelined behind it is not answered. Counted
/// as `downstream_cx_max_requests_reached`.
async fn max_requests_per_connection_closes_after_the_last(flavor: Flavor) {
    let settings = json!({"common_http_protocol_options": {"max_requests_per_connection": 2}});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let three = [GET, GET, GET].concat();
    let (raw, took) = raw_exchange_timed(&fx, &[Step::Send(&three)]).await;
    let got = responses(&raw);
    let name = flavor.name();
    assert_eq!(got.len(), 2, "{name}: {raw:?}");
    assert!(!got[0].contains("connection: close"), "{name}: {raw:?}");
    assert!(
        got[1].contains("\r\nconnection: close\r\n"),
        "{name}: {raw:?}"
    );
    assert_within(flavor, "after the second", took, Duration::ZERO..secs(1.5));
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_cx_max_requests_reached", 1),
            ("http.app.downstream_rq_2xx", 2),
        ],
    )
    .await;
}

/// Over h2c, `max_requests_per_connection: 2`: the second stream is served, then the
/// connection is shut down (GOAWAY) and closes; counted as `downstream_cx_max_requests_reached`.
async fn max_requests_per_connection_drains_h2c(flavor: Flavor) {
    let settings = json!({"common_http_protocol_options": {"max_requests_per_connection": 2}});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let (statuses, _) = h2c_connection_lifetime(fx.listener, 2).await;
    assert_eq!(statuses, [200, 200], "{name}");
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_cx_max_requests_reached", 1),
            ("http.app.downstream_rq_2xx", 2),
        ],
    )
    .await;
}

flavors!(
    max_requests_per_connection_drains_h2c,
    max_requests_per_connection_drains_h2c_envoy,
    max_requests_per_connection_drains_h2c_legate
);

flavors!(
    max_requests_per_connection_closes_after_the_last,
    max_requests_per_connection_closes_after_the_last_envoy,
    max_requests_per_connection_closes_after_the_last_legate
);

/// `max_stream_duration: 1s` ends a stream, whatever it is doing: before the response head
/// with 504 `downstream duration timeout` (408 while the request is still arriving, closing
/// the connection), after it by resetting the stream. Counted as
/// `downstream_rq_max_duration_reached`.
async fn max_stream_duration_ends_long_streams(flavor: Flavor) {
    let settings = json!({"common_http_protocol_options": {"max_stream_duration": "1s"}});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let r = fx.get("/payments/x", &[("x-fault-delay-ms", "3000")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "downstream duration timeout"),
        "{name}"
    );
    let req = http::Request::get("/payments/x")
        .header("x-fault-delay-ms", "3000")
        .body(Bytes::new())
        .expect("request");
    let r = h2c_send(fx.listener, req).await.expect("h2c request");
    assert_eq!(
        (r.status, r.body.as_ref()),
        (504, b"downstream duration timeout".as_ref()),
        "{name}: h2c"
    );
    let wait = || Step::Wait(secs(0.4));
    let trickle = [
        Step::Send(b"POST /payments/x HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"),
        wait(),
        Step::Send(b"1"),
        wait(),
        Step::Send(b"2"),
        wait(),
        Step::Send(b"3"),
        wait(),
        Step::Send(b"4"),
    ];
    let raw = raw_exchange(&fx, &trickle).await;
    assert!(
        raw.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{name}: {raw:?}"
    );
    assert!(raw.contains("\r\nconnection: close\r\n"), "{name}: {raw:?}");
    assert!(
        raw.ends_with("\r\n\r\ndownstream duration timeout"),
        "{name}: {raw:?}"
    );
    // Two chunks, 3 s apart: the stream is reset after the first.
    let stalled = b"GET /payments/x HTTP/1.1\r\nhost: x\r\nx-fault-body-chunks: 2\r\n\
        x-fault-body-delay-ms: 3000\r\n\r\n";
    let (raw, took) = raw_exchange_timed(&fx, &[Step::Send(stalled)]).await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {raw:?}");
    assert_within(flavor, "a stalled body", took, secs(0.9)..secs(2.8));
    fx.expect_growth(
        &before,
        &[
            ("http.app.downstream_rq_max_duration_reached", 4),
            ("http.app.downstream_rq_5xx", 2),
            ("http.app.downstream_rq_4xx", 1),
            ("http.app.downstream_rq_tx_reset", 1),
        ],
    )
    .await;
}

flavors!(
    max_stream_duration_ends_long_streams,
    max_stream_duration_ends_long_streams_envoy,
    max_stream_duration_ends_long_streams_legate
);

/// `max_request_headers_kb: 2`, `max_headers_count: 8` and `headers_with_underscores_action:
/// REJECT_REQUEST`: over HTTP/1.1 a head over 2 KiB and a ninth header are answered 431, an
/// underscore 400 `Bad Request` (each counted as a response before the request was complete:
/// the codec stops reading the head); over h2c (pseudo-headers count) the stream is reset.
/// Each codec counts what it refused.
async fn header_limits_refuse_requests(flavor: Flavor) {
    let settings = json!({"max_request_headers_kb": 2,
        "common_http_protocol_options": {"max_headers_count": 8,
        "headers_with_underscores_action": "REJECT_REQUEST"}});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let mut nine = b"GET /payments/x HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..8 {
        nine.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    nine.extend_from_slice(b"\r\n");
    let raw = raw_exchange(&fx, &[Step::Send(&nine)]).await;
    assert!(
        raw.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{name}: {raw:?}"
    );
    let big = format!(
        "GET /payments/x HTTP/1.1\r\nhost: x\r\na: {}\r\n\r\n",
        "x".repeat(3000)
    );
    let raw = raw_exchange(&fx, &[Step::Send(big.as_bytes())]).await;
    assert!(
        raw.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{name}: {raw:?}"
    );
    let fits = "x".repeat(1900);
    assert_eq!(
        fx.get("/payments/x", &[("a", &fits)]).await.status,
        200,
        "{name}"
    );
    let underscored = b"GET /payments/x HTTP/1.1\r\nhost: x\r\nmy_header: 1\r\n\r\n";
    let raw = raw_exchange(&fx, &[Step::Send(underscored)]).await;
    assert!(
        raw.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{name}: {raw:?}"
    );
    assert!(raw.ends_with("\r\n\r\nBad Request"), "{name}: {raw:?}");
    assert_eq!(
        fx.get("/payments/x", &[("a", "1")]).await.status,
        200,
        "{name}"
    );
    let h2 = |headers: &[(&str, &str)]| {
        let mut req = http::Request::get("/payments/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Bytes::new()).expect("request")
    };
    let many = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")];
    let too_large = "x".repeat(3000);
    let cases = [
        ("too many", h2(&many)),
        ("underscore", h2(&[("my_header", "1")])),
        ("too large", h2(&[("a", &too_large)])),
    ];
    for (case, req) in cases {
        let err = h2c_send(fx.listener, req).await.err();
        let err = format!("{err:?}");
        assert!(
            err.contains("Reset(") && err.contains("INTERNAL_ERROR"),
            "{name}: h2c {case}: the stream is reset: {err}"
        );
    }
    let ok = h2c_send(fx.listener, h2(&[("a", "1")])).await.expect("h2c");
    assert_eq!(ok.status, 200, "{name}");
    fx.expect_growth(
        &before,
        &[
            ("http1.requests_rejected_with_underscores_in_headers", 1),
            ("http2.requests_rejected_with_underscores_in_headers", 1),
            ("http2.header_overflow", 1),
            ("http2.header_list_size_too_large", 1),
            ("http.app.downstream_rq_4xx", 3),
            ("http.app.downstream_rq_2xx", 3),
            ("http.app.downstream_rq_rx_reset", 6),
            ("http.app.downstream_rq_response_before_rq_complete", 3),
        ],
    )
    .await;
}

flavors!(
    header_limits_refuse_requests,
    header_limits_refuse_requests_envoy,
    header_limits_refuse_requests_legate
);

/// `headers_with_underscores_action: DROP_HEADER`: the header does not reach the upstream, the
/// request does; counted as `<codec>.dropped_headers_with_underscores`. (And the default header
/// size limit over h2c.)
async fn headers_with_underscores_are_dropped(flavor: Flavor) {
    let settings =
        json!({"common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"}});
    let (_up, fx) = fixture(flavor, settings).await;
    let before = fx.stats().await;
    let name = flavor.name();
    let r = fx
        .get("/payments/x", &[("my_header", "1"), ("ok-header", "2")])
        .await;
    assert_eq!(r.status, 200, "{name}");
    assert!(!r.body.contains("my_header"), "{name}: {}", r.body);
    assert!(r.body.contains("ok-header"), "{name}: {}", r.body);
    let req = http::Request::get("/payments/x")
        .header("my_header", "1")
        .body(Bytes::new())
        .expect("request");
    let r = h2c_send(fx.listener, req).await.expect("h2c");
    assert_eq!(r.status, 200, "{name}: h2c");
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("my_header"), "{name}: h2c: {body}");
    // Under the default `max_request_headers_kb` (60) a 20 KB header list passes over h2c too
    // (hyper's own limit, 16 KiB, refused it before session 11).
    let req = http::Request::get("/payments/x")
        .header("a", "x".repeat(20_000))
        .body(Bytes::new())
        .expect("request");
    let r = h2c_send(fx.listener, req).await.expect("h2c");
    assert_eq!(r.status, 200, "{name}: h2c, 20 KB of headers");
    fx.expect_growth(
        &before,
        &[
            ("http1.dropped_headers_with_underscores", 1),
            ("http2.dropped_headers_with_underscores", 1),
        ],
    )
    .await;
}

flavors!(
    headers_with_underscores_are_dropped,
    headers_with_underscores_are_dropped_envoy,
    headers_with_underscores_are_dropped_legate
);
