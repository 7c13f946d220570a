//! A request lives until its response has been sent in full, as Envoy keeps a stream: it is
//! active downstream and upstream (`downstream_rq_active`, `upstream_rq_active`, the host's
//! `rq_active`) while its body streams, its `upstream_rq_time` is taken once, at the end of the
//! response, from the start of the request (retries included), and whichever side goes away
//! mid-body ends it at once, counted as Envoy counts a reset.

use std::time::Duration;

use legate_e2e::{Flavor, h2c_send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, PAYMENTS_PATH, flavors, test_id};

/// Upper bound of each raw exchange and of each wait for a histogram flush (Envoy flushes
/// histograms every 5 s).
const DEADLINE: Duration = Duration::from_secs(15);

/// How long the test upstream waits between the two chunks of a slow body: long enough for
/// the stats to be read while the body is in flight, however slow the machine.
const SLOW_BODY_MS: &str = "3000";

/// Sends `GET` [`PAYMENTS_PATH`] with `headers` over raw TCP and reads until the response
/// head and the first body bytes arrived. Returns the connection and what was read.
async fn start_slow_get(fx: &Fixture, headers: &[(&str, &str)]) -> (TcpStream, String) {
    let mut request = format!("GET {PAYMENTS_PATH} HTTP/1.1\r\nhost: x\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        s.write_all(request.as_bytes()).await?;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        // The head, then at least one byte of the body.
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() > end + 4
            {
                break;
            }
        }
        Ok::<_, std::io::Error>((s, String::from_utf8_lossy(&got).into_owned()))
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("response head within the deadline")
        .expect("raw exchange")
}

/// Reads what is left of a response until the proxy's last chunk (or the close).
async fn read_rest(s: &mut TcpStream) -> String {
    let read = async {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            got.extend_from_slice(&buf[..n]);
            if n == 0 || got.ends_with(b"0\r\n\r\n") {
                return Ok::<_, std::io::Error>(String::from_utf8_lossy(&got).into_owned());
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("rest of the response within the deadline")
        .expect("reading the response")
}

/// The per-host stat `stat` (`rq_active`, `rq_timeout`) of every host of `cluster` in
/// `/clusters`, summed.
async fn host_stat(fx: &Fixture, cluster: &str, stat: &str) -> u64 {
    let (status, body) = fx.proxy.admin_get("/clusters").await;
    assert_eq!(status, 200, "{}: GET /clusters", fx.flavor.name());
    let prefix = format!("{cluster}::");
    let marker = format!("::{stat}::");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split_once(marker.as_str()))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// `_count` and `_sum` of the histogram `metric` (a Prometheus name, e.g.
/// `envoy_cluster_upstream_rq_time`) of cluster `cluster` in `/stats/prometheus`.
async fn histogram(fx: &Fixture, metric: &str, cluster: &str) -> (u64, f64) {
    let (status, body) = fx.proxy.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200, "{}: GET /stats/prometheus", fx.flavor.name());
    let label = format!("{{envoy_cluster_name=\"{cluster}\"}}");
    let value = |suffix: &str| -> Option<f64> {
        let name = format!("{metric}_{suffix}{label} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&name))
            .and_then(|v| v.trim().parse().ok())
    };
    (
        value("count").unwrap_or(0.0) as u64,
        value("sum").unwrap_or(0.0),
    )
}

/// Waits (up to [`DEADLINE`]) until the histogram has at least one sample, then returns it.
async fn flushed_histogram(fx: &Fixture, metric: &str, cluster: &str) -> (u64, f64) {
    let started = tokio::time::Instant::now();
    loop {
        let h = histogram(fx, metric, cluster).await;
        if h.0 > 0 || started.elapsed() >= DEADLINE {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// While a response body streams (HTTP/1.1, then h2c), the request is active downstream, on
/// the cluster and on the host; once it has been sent, none is, and the connection gauges
/// say which protocol it spoke.
async fn request_active_until_its_response_ends(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "").await;
    let name = flavor.name();
    let slow = [("x-fault-body-delay-ms", SLOW_BODY_MS)];
    let (mut s, head) = start_slow_get(&fx, &slow).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head:?}");
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 1),
        ("http.app.downstream_cx_http1_active", 1),
        ("cluster.payments.upstream_rq_active", 1),
    ])
    .await;
    assert_eq!(
        host_stat(&fx, "payments", "rq_active").await,
        1,
        "{name}: host rq_active mid-body"
    );
    let rest = read_rest(&mut s).await;
    assert!(rest.ends_with("0\r\n\r\n"), "{name}: {rest:?}");
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 0),
        ("cluster.payments.upstream_rq_active", 0),
        ("http.app.downstream_rq_rx_reset", 0),
    ])
    .await;
    assert_eq!(
        host_stat(&fx, "payments", "rq_active").await,
        0,
        "{name}: host rq_active after"
    );
    drop(s);
    fx.expect_stats(&[("http.app.downstream_cx_http1_active", 0)])
        .await;

    // The same over h2c: the stream is active until its last frame has been sent.
    let req = http::Request::get(PAYMENTS_PATH)
        .header("x-fault-body-delay-ms", SLOW_BODY_MS)
        .body(bytes::Bytes::new())
        .expect("request");
    let listener = fx.listener;
    let call = tokio::spawn(async move { h2c_send(listener, req).await });
    fx.wait_stat("cluster.payments.upstream_rq_total", 2..=2, DEADLINE)
        .await;
    fx.wait_stat("cluster.payments.upstream_rq_2xx", 2..=2, DEADLINE)
        .await;
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 1),
        ("http.app.downstream_cx_http2_active", 1),
        ("cluster.payments.upstream_rq_active", 1),
    ])
    .await;
    let r = call.await.expect("h2c task").expect("h2c request");
    assert_eq!(r.status, 200, "{name}");
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 0),
        ("cluster.payments.upstream_rq_active", 0),
        ("http.app.downstream_rq_rx_reset", 0),
    ])
    .await;
    assert_eq!(up.stats().requests, 2, "{name}");
}

flavors!(
    request_active_until_its_response_ends,
    request_active_until_its_response_ends_envoy,
    request_active_until_its_response_ends_legate
);

/// `upstream_rq_time` (and `external.upstream_rq_time`) gets one sample per request, at the end
/// of the response that went downstream, counted from the start of the request: a first
/// attempt that took 300 ms and was retried, then a response whose body took 300 ms, make one
/// sample of at least 600 ms. `x-envoy-upstream-service-time` also counts from the start of the
/// request (to the final response's head).
async fn upstream_rq_time_once_per_request_to_the_end_of_its_response(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "retries:\n  attempts: 1\n  on: [5xx]\n").await;
    let name = flavor.name();
    let id = test_id(flavor, "rq-time");
    let r = fx
        .get_payments(
            &id,
            &[
                ("x-fault-sequence", "503,200"),
                ("x-fault-delay-sequence", "300,0"),
                ("x-fault-body-delay-ms", "300"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{name}");
    let service_ms: u64 = r
        .header("x-envoy-upstream-service-time")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no x-envoy-upstream-service-time in {r:?}"));
    assert!(
        service_ms >= 300,
        "{name}: x-envoy-upstream-service-time {service_ms} counts from the request's start"
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 2),
        ("cluster.payments.upstream_rq_retry", 1),
    ])
    .await;
    for metric in [
        "envoy_cluster_upstream_rq_time",
        "envoy_cluster_external_upstream_rq_time",
    ] {
        let (count, sum) = flushed_histogram(&fx, metric, "payments").await;
        assert_eq!(count, 1, "{name}: {metric} samples (one per request)");
        // Histogram sums are bucket estimates: a few percent of slack.
        assert!(
            sum >= 570.0,
            "{name}: {metric} = {sum} ms, expected the whole request (≥ 600 ms)"
        );
    }
}

flavors!(
    upstream_rq_time_once_per_request_to_the_end_of_its_response,
    upstream_rq_time_once_per_request_to_the_end_of_its_response_envoy,
    upstream_rq_time_once_per_request_to_the_end_of_its_response_legate
);

/// A client that goes away while the response body streams: the request ends at once
/// (`downstream_rq_rx_reset`, the connection destroyed by the client with the request on
/// it), and so does the upstream exchange — its connection is closed by the proxy long before
/// the upstream would have sent the rest.
async fn client_gone_mid_response(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "").await;
    let name = flavor.name();
    let (s, head) = start_slow_get(&fx, &[("x-fault-body-delay-ms", "10000")]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head:?}");
    drop(s);
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_rq_rx_reset", 1),
        ("http.app.downstream_rq_tx_reset", 0),
        ("http.app.rq_reset_after_downstream_response_started", 0),
        ("http.app.downstream_cx_destroy_remote_active_rq", 1),
        ("cluster.payments.upstream_rq_active", 0),
        (
            "cluster.payments.upstream_cx_destroy_local_with_active_rq",
            1,
        ),
    ])
    .await;
}

flavors!(
    client_gone_mid_response,
    client_gone_mid_response_envoy,
    client_gone_mid_response_legate
);

/// An upstream that goes away mid-body: the client gets what came, then the close; Envoy
/// resets the request (`downstream_rq_tx_reset`, and its codec reports the reset back:
/// `downstream_rq_rx_reset`) and then closes the connection, with no request left on it; the
/// body cut short is an upstream protocol error.
async fn upstream_gone_mid_response(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "").await;
    let name = flavor.name();
    let (mut s, head) = start_slow_get(
        &fx,
        &[
            ("x-fault-reset", "after-headers"),
            ("x-fault-body-delay-ms", "300"),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head:?}");
    let rest = read_rest(&mut s).await;
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "{name}: a complete body: {rest:?}"
    );
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_rq_tx_reset", 1),
        ("http.app.downstream_rq_rx_reset", 1),
        ("http.app.downstream_cx_destroy_local", 1),
        ("http.app.downstream_cx_destroy_local_active_rq", 0),
        ("cluster.payments.upstream_rq_active", 0),
        ("cluster.payments.upstream_cx_protocol_error", 1),
        (
            "cluster.payments.upstream_cx_destroy_remote_with_active_rq",
            1,
        ),
        ("http.app.rq_reset_after_downstream_response_started", 0),
    ])
    .await;
}

flavors!(
    upstream_gone_mid_response,
    upstream_gone_mid_response_envoy,
    upstream_gone_mid_response_legate
);

/// The route timeout spans the whole response, its body included (Envoy's `timeout`: "until
/// the upstream response has been completely processed"): a body still streaming when it
/// fires is cut, counted as `upstream_rq_timeout` and the host's `rq_timeout`, with the 200
/// already charged and no 504.
async fn route_timeout_covers_the_response_body(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "timeout: 1s\n").await;
    let name = flavor.name();
    let (mut s, head) = start_slow_get(&fx, &[("x-fault-body-delay-ms", SLOW_BODY_MS)]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head:?}");
    let rest = read_rest(&mut s).await;
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "{name}: a complete body: {rest:?}"
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_timeout", 1),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.upstream_rq_504", 0),
        ("cluster.payments.upstream_rq_active", 0),
        (
            "cluster.payments.upstream_cx_destroy_local_with_active_rq",
            1,
        ),
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_rq_tx_reset", 1),
        ("http.app.downstream_rq_rx_reset", 1),
        ("http.app.rq_reset_after_downstream_response_started", 0),
    ])
    .await;
    assert_eq!(
        host_stat(&fx, "payments", "rq_timeout").await,
        1,
        "{name}: the host's rq_timeout"
    );
}

flavors!(
    route_timeout_covers_the_response_body,
    route_timeout_covers_the_response_body_envoy,
    route_timeout_covers_the_response_body_legate
);

/// A response that is complete before its request (a local reply to a request whose body has
/// not arrived) counts as `downstream_rq_response_before_rq_complete`, and the stream is reset
/// (`downstream_rq_rx_reset`), as Envoy ends such a stream.
async fn response_before_the_request_is_complete(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "").await;
    let name = flavor.name();
    // The fixture's readiness probes reached the router too.
    let fixture_probes = fx
        .stats()
        .await
        .get("http.app.downstream_rq_total")
        .copied()
        .unwrap_or(0);
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        s.write_all(b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        // The 404 has no body: its head is the whole response (the connection is left open).
        loop {
            let n = s.read(&mut buf).await?;
            got.extend_from_slice(&buf[..n]);
            if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(String::from_utf8_lossy(&got).into_owned());
            }
        }
    };
    let got = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("exchange within the deadline")
        .expect("raw exchange");
    assert!(got.starts_with("HTTP/1.1 404"), "{name}: {got:?}");
    fx.expect_stats(&[
        ("http.app.downstream_rq_response_before_rq_complete", 1),
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_rq_rx_reset", 1),
        ("http.app.no_route", 1),
        // The router counts every request that reaches it, routed or not.
        ("http.app.rq_total", 1 + fixture_probes),
    ])
    .await;
}

flavors!(
    response_before_the_request_is_complete,
    response_before_the_request_is_complete_envoy,
    response_before_the_request_is_complete_legate
);

/// Envoy keeps copies of the connection manager's response counters under the listener's
/// scope (`listener.<address>.http.<prefix>.downstream_rq_<class>xx`, `_completed`) and counts
/// connections per worker (`listener.<address>.worker_<n>.downstream_cx_*`).
async fn listener_scoped_copies_of_the_request_counters(flavor: Flavor) {
    let (_up, fx) = Fixture::payments(flavor, "").await;
    let name = flavor.name();
    assert_eq!(
        fx.get_payments(&test_id(flavor, "l1"), &[]).await.status,
        200
    );
    assert_eq!(fx.get("/nowhere", &[]).await.status, 404);
    fx.expect_stats(&[("http.app.downstream_cx_active", 0)])
        .await;
    let stats = fx.stats().await;
    let scope = format!("listener.127.0.0.1_{}", fx.listener.port());
    let get = |k: &str| stats.get(k).copied();
    for counter in [
        "downstream_rq_1xx",
        "downstream_rq_2xx",
        "downstream_rq_3xx",
        "downstream_rq_4xx",
        "downstream_rq_5xx",
        "downstream_rq_completed",
    ] {
        let listener = get(&format!("{scope}.http.app.{counter}"));
        assert!(listener.is_some(), "{name}: no {scope}.http.app.{counter}");
        assert_eq!(
            listener,
            get(&format!("http.app.{counter}")),
            "{name}: {counter}"
        );
    }
    assert!(
        get(&format!("{scope}.http.app.downstream_rq_4xx")) >= Some(1),
        "{name}"
    );
    assert_eq!(
        get(&format!("{scope}.worker_0.downstream_cx_total")),
        get(&format!("{scope}.downstream_cx_total")),
        "{name}"
    );
    assert_eq!(
        get(&format!("{scope}.worker_0.downstream_cx_active")),
        Some(0),
        "{name}"
    );
}

flavors!(
    listener_scoped_copies_of_the_request_counters,
    listener_scoped_copies_of_the_request_counters_envoy,
    listener_scoped_copies_of_the_request_counters_legate
);

/// `per_try_idle_timeout` ends an attempt on which nothing has arrived for that long: before
/// the response head it is retried like a per-try timeout; once the body streams, a silence
/// that long cuts the response (no retry, no 504), in both cases counted as
/// `upstream_rq_per_try_idle_timeout` and the host's `rq_timeout`.
async fn per_try_idle_timeout_ends_a_silent_attempt(flavor: Flavor) {
    let (up, fx) = Fixture::payments(
        flavor,
        "retries:\n  attempts: 1\n  on: [5xx]\n  per_try_idle_timeout: 500ms\n",
    )
    .await;
    let name = flavor.name();
    // Silent before the head: the first attempt is cut and retried.
    let id = test_id(flavor, "idle-head");
    let r = fx
        .get_payments(&id, &[("x-fault-delay-sequence", "3000,0")])
        .await;
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    let attempts = up.log().wait_settled(&id, 2, crate::common::SETTLE).await;
    assert_eq!(attempts.len(), 2, "{name}: two attempts");
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_per_try_idle_timeout", 1),
        ("cluster.payments.upstream_rq_per_try_timeout", 0),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_200", 1),
    ])
    .await;
    // Silent mid-body: the response is cut, nothing retried or charged again.
    let (mut s, head) = start_slow_get(&fx, &[("x-fault-body-delay-ms", SLOW_BODY_MS)]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head:?}");
    let rest = read_rest(&mut s).await;
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "{name}: a complete body: {rest:?}"
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_per_try_idle_timeout", 2),
        ("cluster.payments.upstream_rq_retry", 1),
        ("cluster.payments.upstream_rq_200", 2),
        ("cluster.payments.upstream_rq_504", 0),
        ("cluster.payments.upstream_rq_timeout", 0),
        ("cluster.payments.upstream_rq_active", 0),
        ("http.app.downstream_rq_tx_reset", 1),
        ("http.app.rq_reset_after_downstream_response_started", 0),
    ])
    .await;
    assert_eq!(
        host_stat(&fx, "payments", "rq_timeout").await,
        2,
        "{name}: the host's rq_timeout"
    );
}

flavors!(
    per_try_idle_timeout_ends_a_silent_attempt,
    per_try_idle_timeout_ends_a_silent_attempt_envoy,
    per_try_idle_timeout_ends_a_silent_attempt_legate
);

/// The router's own counters: `rq_total` counts every request that reaches the router (routed,
/// answered directly, or without a route; not those the connection manager refused first),
/// `rq_direct_response` the ones a `direct_response` route answered.
async fn router_counts_what_reaches_it(flavor: Flavor) {
    let up = legate_e2e::upstream::Upstream::start("p1")
        .await
        .expect("upstream");
    let hcm = serde_json::json!({
        "route_config": {"name": "app", "virtual_hosts": [{
            "name": "app", "domains": ["*"],
            "routes": [
                {"match": {"prefix": "/direct"},
                 "direct_response": {"status": 200, "body": {"inline_string": "hi"}}},
                {"match": {"prefix": "/payments/"},
                 "route": {"cluster": "payments", "prefix_rewrite": "/"}}
            ]
        }]}
    });
    let fx = Fixture::start_static(flavor, &[up.addr], hcm).await;
    let name = flavor.name();
    let before = fx.stats().await;
    let was = |k: &str| before.get(k).copied().unwrap_or(0);
    let direct = fx.get("/direct", &[]).await;
    assert_eq!((direct.status, direct.body.as_str()), (200, "hi"), "{name}");
    assert_eq!(fx.get("/payments/x", &[]).await.status, 200, "{name}");
    assert_eq!(fx.get("/nowhere", &[]).await.status, 404, "{name}");
    fx.expect_stats(&[
        ("http.app.rq_total", was("http.app.rq_total") + 3),
        (
            "http.app.rq_direct_response",
            was("http.app.rq_direct_response") + 1,
        ),
        (
            "http.app.downstream_rq_total",
            was("http.app.downstream_rq_total") + 3,
        ),
    ])
    .await;
}

flavors!(
    router_counts_what_reaches_it,
    router_counts_what_reaches_it_envoy,
    router_counts_what_reaches_it_legate
);
