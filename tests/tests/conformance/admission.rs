//! Requests the connection manager refuses before routing (HTTP/1.0, an oversized head, a
//! target that is not a path, no `host`, an upgrade, CONNECT), requests the HTTP/1.1 codec
//! refuses (malformed, conflicting framing, too many headers, a fragment), pipelined requests,
//! a request whose client goes away before the response, `expect: 100-continue`, and upstreams
//! that break HTTP/1.1: the bytes the client gets back and the counters. Sent over raw TCP, since
//! a well-behaved HTTP client would not send most of them (repeated headers also over h2c).

use std::time::Duration;

use legate_e2e::upstream::Upstream;
use legate_e2e::{Flavor, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, PAYMENTS_PATH, flavors, svc, test_id};

/// Every line of header `name` in `headers`, in order.
fn header_lines(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Upper bound of every raw exchange.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// What came back on a connection, read until the proxy closed it.
struct Raw {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    /// The status line's reason phrase.
    reason: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one response (`HTTP/1.x NNN …`, headers, then the rest as the body).
fn parse(bytes: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        version: status_line.split(' ').next().unwrap_or_default().to_owned(),
        status,
        reason: status_line
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or_default()
            .to_owned(),
        headers,
        body: body.to_owned(),
    }
}

/// Writes `request` on a new connection and reads until the proxy closes it; panics if it
/// does not within [`EXCHANGE_DEADLINE`] (each refusal must close the connection, as Envoy's do).
async fn send_expecting_close(fx: &Fixture, what: &str, request: &[u8]) -> Raw {
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        s.write_all(request).await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        Ok::<_, std::io::Error>(got)
    };
    let got = tokio::time::timeout(EXCHANGE_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: {what}: the connection was not closed within {EXCHANGE_DEADLINE:?}",
                fx.flavor.name()
            )
        })
        .unwrap_or_else(|e| panic!("{}: {what}: {e}", fx.flavor.name()));
    parse(&got)
}

/// Sends each `(what, request, status, body)` on its own connection and asserts Envoy's answer
/// to a refused request: an `HTTP/1.1` status line with `status`, `body` (as `text/plain` when
/// not empty), `server: envoy`, `connection: close`, and the connection closed.
async fn expect_refusals(fx: &Fixture, cases: &[(&str, String, u16, &str)]) {
    let name = fx.flavor.name();
    for (what, request, status, body) in cases {
        let r = send_expecting_close(fx, what, request.as_bytes()).await;
        assert_eq!(r.version, "HTTP/1.1", "{name}: {what}: status line");
        assert_eq!(r.status, *status, "{name}: {what}: status");
        assert_eq!(r.body, *body, "{name}: {what}: body");
        assert_eq!(r.header("connection"), Some("close"), "{name}: {what}");
        assert_eq!(r.header("server"), Some("envoy"), "{name}: {what}");
        let text_plain = (!body.is_empty()).then_some("text/plain");
        assert_eq!(r.header("content-type"), text_plain, "{name}: {what}");
    }
}

/// Each refusal: Envoy's status and body, `connection: close`, and the connection closed; none
/// reaches the upstream. A head of exactly 60 KiB is still forwarded. The counters are Envoy's:
/// the codec's refusals count as protocol errors, and every refusal but the missing `host`
/// resets the stream; the listener's connections count under `listener.127.0.0.1_<port>`.
async fn refused_requests_answered_as_envoy_does(flavor: Flavor) {
    let up = Upstream::start("p1").await.expect("upstream");
    let fx = Fixture::start(flavor, &[svc("payments", &[up.addr], "")]).await;
    let id = test_id(flavor, "refused");
    let get = |lines: &[&str]| {
        let mut r = format!("GET {PAYMENTS_PATH} HTTP/1.1\r\nx-test-id: {id}\r\n");
        for l in lines {
            r.push_str(l);
            r.push_str("\r\n");
        }
        r + "\r\n"
    };
    // `GET /payments/x HTTP/1.1\r\n` + `x-test-id: …\r\n` + `host: x\r\n` + `x-big: …\r\n` +
    // `\r\n` is 61,440 bytes (60 KiB) with `fits` bytes of value, one more is over the limit.
    let fixed = get(&["host: x", "x-big: "]).len();
    let fits = 60 * 1024 - fixed;
    let big = |n: usize| get(&["host: x", &format!("x-big: {}", "a".repeat(n))]);
    assert_eq!(big(fits).len(), 60 * 1024);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "HTTP/1.0",
            format!("GET {PAYMENTS_PATH} HTTP/1.0\r\nhost: x\r\nx-test-id: {id}\r\n\r\n"),
            426,
            "Upgrade Required",
        ),
        (
            "a 60 KiB + 1 byte head",
            big(fits + 1),
            431,
            "Request Header Fields Too Large",
        ),
        (
            "an authority-form target",
            format!("GET payments:80 HTTP/1.1\r\nhost: x\r\nx-test-id: {id}\r\n\r\n"),
            400,
            "Bad Request",
        ),
        ("no host", get(&[]), 400, ""),
        (
            "a WebSocket upgrade",
            get(&["host: x", "connection: Upgrade", "upgrade: websocket"]),
            403,
            "",
        ),
        (
            "CONNECT",
            format!(
                "CONNECT payments:443 HTTP/1.1\r\nhost: payments:443\r\nx-test-id: {id}\r\n\r\n"
            ),
            404,
            "",
        ),
    ];
    expect_refusals(&fx, &cases).await;
    assert_eq!(
        up.log().count(&id),
        0,
        "refused requests reached the upstream"
    );

    // The largest head Envoy accepts is forwarded (and the connection kept).
    let mut s = TcpStream::connect(fx.listener).await.expect("connect");
    s.write_all(big(fits).as_bytes()).await.expect("write");
    let mut got = vec![0u8; 256 * 1024];
    let n = tokio::time::timeout(EXCHANGE_DEADLINE, s.read(&mut got))
        .await
        .expect("a response to the 60 KiB head")
        .expect("read");
    assert_eq!(
        parse(&got[..n]).status,
        200,
        "{}: 60 KiB head",
        flavor.name()
    );
    assert_eq!(up.log().count(&id), 1);

    // Listener stats are scoped by the address with `:` made `_`.
    let accepted = format!(
        "listener.127.0.0.1_{}.downstream_cx_total",
        fx.listener.port()
    );
    fx.wait_stat(&accepted, 7..=u64::MAX, EXCHANGE_DEADLINE)
        .await;
    // Every refused request's connection was closed; all of them spoke HTTP/1.1.
    let destroyed = format!(
        "listener.127.0.0.1_{}.downstream_cx_destroy",
        fx.listener.port()
    );
    fx.wait_stat(&destroyed, 6..=u64::MAX, EXCHANGE_DEADLINE)
        .await;
    fx.wait_stat(
        "http.app.downstream_cx_destroy",
        6..=u64::MAX,
        EXCHANGE_DEADLINE,
    )
    .await;
    fx.wait_stat(
        "http.app.downstream_cx_http1_total",
        7..=u64::MAX,
        EXCHANGE_DEADLINE,
    )
    .await;
    fx.expect_stats(&[
        ("http.app.downstream_rq_4xx", 6),
        ("http.app.downstream_cx_protocol_error", 3),
        ("http.app.downstream_rq_rx_reset", 5),
        // The same five: the reply goes out before the request is complete (session 11).
        ("http.app.downstream_rq_response_before_rq_complete", 5),
        ("http.app.downstream_rq_ws_on_non_ws_route", 1),
        ("http.app.no_route", 1),
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_cx_http2_total", 0),
        ("cluster.payments.upstream_rq_total", 1),
    ])
    .await;
}

flavors!(
    refused_requests_answered_as_envoy_does,
    refused_requests_answered_as_envoy_does_envoy,
    refused_requests_answered_as_envoy_does_legate
);

/// What the HTTP/1.1 codec refuses: Envoy's status and body (the reason phrase, `text/plain`),
/// `server` and `connection: close` headers, the connection closed, nothing upstream; counted
/// as requests (4xx), as protocol errors and stream resets, except the fragment, which Envoy's
/// path normalization refuses with an empty 400. Every connection is closed by the proxy.
async fn malformed_requests_answered_as_envoy_does(flavor: Flavor) {
    let up = Upstream::start("p1").await.expect("upstream");
    let fx = Fixture::start(flavor, &[svc("payments", &[up.addr], "")]).await;
    let before = fx.stats().await;
    let id = test_id(flavor, "malformed");
    let request = |line: &str, lines: &[&str], body: &str| {
        let mut r = format!("{line}\r\nhost: x\r\nx-test-id: {id}\r\n");
        for l in lines {
            r.push_str(l);
            r.push_str("\r\n");
        }
        r + "\r\n" + body
    };
    let get = format!("GET {PAYMENTS_PATH} HTTP/1.1");
    let post = format!("POST {PAYMENTS_PATH} HTTP/1.1");
    let many: Vec<String> = (0..100).map(|i| format!("x-h{i}: 1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not HTTP", "HELLO\r\n\r\n".to_owned(), 400, "Bad Request"),
        (
            "a space inside the method",
            request(&format!("GE T {PAYMENTS_PATH} HTTP/1.1"), &[], ""),
            400,
            "Bad Request",
        ),
        (
            "a space before a header's colon",
            request(&get, &["x-a : 1"], ""),
            400,
            "Bad Request",
        ),
        (
            "HTTP/9.9",
            request(&format!("GET {PAYMENTS_PATH} HTTP/9.9"), &[], ""),
            426,
            "Upgrade Required",
        ),
        (
            "HTTP/0.9",
            format!("GET {PAYMENTS_PATH}\r\n\r\n"),
            426,
            "Upgrade Required",
        ),
        (
            "102 headers",
            request(&get, &many, ""),
            431,
            "Request Header Fields Too Large",
        ),
        (
            "content-length and chunked",
            request(
                &post,
                &["content-length: 3", "transfer-encoding: chunked"],
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
            "Bad Request",
        ),
        (
            "an invalid content-length",
            request(&post, &["content-length: abc"], "abc"),
            400,
            "Bad Request",
        ),
        (
            "two different content-lengths",
            request(&post, &["content-length: 3", "content-length: 4"], "abcd"),
            400,
            "Bad Request",
        ),
        (
            "a fragment",
            request(&format!("GET {PAYMENTS_PATH}#top HTTP/1.1"), &[], ""),
            400,
            "",
        ),
        (
            "whitespace before the first header (not a folded line)",
            format!("{get}\r\n x-a: 1\r\nhost: x\r\n\r\n"),
            400,
            "Bad Request",
        ),
    ];
    expect_refusals(&fx, &cases).await;
    assert_eq!(
        up.log().count(&id),
        0,
        "refused requests reached the upstream"
    );
    let was = |name: &str| before.get(name).copied().unwrap_or(0);
    fx.wait_stat(
        "http.app.downstream_cx_destroy_local",
        was("http.app.downstream_cx_destroy_local") + 11..=u64::MAX,
        EXCHANGE_DEADLINE,
    )
    .await;
    fx.expect_stats(&[
        (
            "http.app.downstream_rq_total",
            was("http.app.downstream_rq_total") + 11,
        ),
        (
            "http.app.downstream_rq_4xx",
            was("http.app.downstream_rq_4xx") + 11,
        ),
        (
            "http.app.downstream_cx_protocol_error",
            was("http.app.downstream_cx_protocol_error") + 10,
        ),
        (
            "http.app.downstream_rq_rx_reset",
            was("http.app.downstream_rq_rx_reset") + 10,
        ),
        (
            "http.app.downstream_rq_response_before_rq_complete",
            was("http.app.downstream_rq_response_before_rq_complete") + 10,
        ),
        (
            "http.app.downstream_rq_failed_path_normalization",
            was("http.app.downstream_rq_failed_path_normalization") + 1,
        ),
        ("http.app.downstream_rq_active", 0),
        (
            "cluster.payments.upstream_rq_total",
            was("cluster.payments.upstream_rq_total"),
        ),
    ])
    .await;
}

flavors!(
    malformed_requests_answered_as_envoy_does,
    malformed_requests_answered_as_envoy_does_envoy,
    malformed_requests_answered_as_envoy_does_legate
);

/// Two requests written at once on one connection (pipelined): both are answered, in order,
/// on that connection.
async fn pipelined_requests_answered_in_order(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "").await;
    let id = test_id(flavor, "pipelined");
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        let two = format!(
            "GET {PAYMENTS_PATH}/first HTTP/1.1\r\nhost: x\r\nx-test-id: {id}\r\n\r\n\
             GET {PAYMENTS_PATH}/second HTTP/1.1\r\nhost: x\r\nx-test-id: {id}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(two.as_bytes()).await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&got).into_owned())
    };
    let got = tokio::time::timeout(EXCHANGE_DEADLINE, exchange)
        .await
        .expect("both responses within the deadline")
        .expect("exchange");
    let name = flavor.name();
    assert_eq!(
        got.matches("HTTP/1.1 200 OK\r\n").count(),
        2,
        "{name}: two responses in {got:?}"
    );
    let first = got.find("/first").expect("the first request's echo");
    let second = got.find("/second").expect("the second request's echo");
    assert!(first < second, "{name}: answered out of order: {got:?}");
    assert_eq!(up.log().count(&id), 2);
}

flavors!(
    pipelined_requests_answered_in_order,
    pipelined_requests_answered_in_order_envoy,
    pipelined_requests_answered_in_order_legate
);

/// Repeated request headers reach the upstream as Envoy sends them: the ones Envoy keeps
/// inline (`x-forwarded-for`, `user-agent`, …) as one line joined with `,`, any other header as
/// separate lines; a client's `x-forwarded-client-cert` never (`forward_client_cert_details`
/// defaults to SANITIZE).
async fn repeated_headers_and_client_cert_forwarded_as_envoy_does(flavor: Flavor) {
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let request = format!(
        "GET {PAYMENTS_PATH} HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 1.2.3.4\r\nuser-agent: a\r\n\
         x-custom: 1\r\nx-forwarded-for: 5.6.7.8\r\nuser-agent: b\r\nx-custom: 2\r\n\
         x-forwarded-client-cert: By=spiffe://evil;Hash=00\r\nconnection: close\r\n\r\n"
    );
    let r = send_expecting_close(&fx, "repeated headers", request.as_bytes()).await;
    let name = flavor.name();
    assert_eq!(r.status, 200, "{name}");
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{name}");
    let lines = |h: &str| header_lines(&got[0].headers, h);
    assert_eq!(lines("x-forwarded-for"), ["1.2.3.4,5.6.7.8"], "{name}");
    assert_eq!(lines("user-agent"), ["a,b"], "{name}");
    assert_eq!(lines("x-custom"), ["1", "2"], "{name}");
    assert!(lines("x-forwarded-client-cert").is_empty(), "{name}");
}

flavors!(
    repeated_headers_and_client_cert_forwarded_as_envoy_does,
    repeated_headers_and_client_cert_forwarded_as_envoy_does_envoy,
    repeated_headers_and_client_cert_forwarded_as_envoy_does_legate
);

/// The same over h2c: HTTP/2 header fields with one name reach the HTTP/1.1 upstream as Envoy's
/// HTTP/2 codec builds them — `cookie` crumbs joined with `; ` (RFC 9113 §8.2.3), the headers
/// Envoy keeps inline joined with `,`, any other repeated header one line each.
async fn repeated_headers_over_h2c_forwarded_as_envoy_does(flavor: Flavor) {
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let req = http::Request::get(PAYMENTS_PATH)
        .header("cookie", "a=1")
        .header("x-forwarded-for", "1.2.3.4")
        .header("user-agent", "a")
        .header("x-custom", "1")
        .header("cookie", "b=2")
        .header("x-forwarded-for", "5.6.7.8")
        .header("user-agent", "b")
        .header("x-custom", "2")
        .header("accept", "text/plain")
        .header("accept", "*/*")
        .header("x-forwarded-client-cert", "By=spiffe://evil;Hash=00")
        .body(bytes::Bytes::new())
        .expect("request");
    let name = flavor.name();
    let r = legate_e2e::h2c_send(fx.listener, req)
        .await
        .unwrap_or_else(|e| panic!("{name}: h2c request: {e}"));
    assert_eq!(r.status, 200, "{name}");
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{name}");
    let lines = |h: &str| header_lines(&got[0].headers, h);
    assert_eq!(lines("cookie"), ["a=1; b=2"], "{name}");
    assert_eq!(lines("x-forwarded-for"), ["1.2.3.4,5.6.7.8"], "{name}");
    assert_eq!(lines("user-agent"), ["a,b"], "{name}");
    assert_eq!(lines("accept"), ["text/plain,*/*"], "{name}");
    assert_eq!(lines("x-custom"), ["1", "2"], "{name}");
    assert!(lines("x-forwarded-client-cert").is_empty(), "{name}");
}

flavors!(
    repeated_headers_over_h2c_forwarded_as_envoy_does,
    repeated_headers_over_h2c_forwarded_as_envoy_does_envoy,
    repeated_headers_over_h2c_forwarded_as_envoy_does_legate
);

/// Folded request header lines (obs-fold) are unfolded as Envoy unfolds them: each CRLF that
/// precedes a space or tab goes, the whitespace stays, and the value is trimmed at its ends.
async fn folded_request_headers_unfolded_as_envoy_does(flavor: Flavor) {
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let request = format!(
        "GET {PAYMENTS_PATH} HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n 2\r\n\t3\r\nx-b:\r\n  4 \r\n\
         x-c: 5\r\nconnection: close\r\n\r\n"
    );
    let r = send_expecting_close(&fx, "folded headers", request.as_bytes()).await;
    let name = flavor.name();
    assert_eq!(r.status, 200, "{name}");
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{name}");
    let value = |h: &str| {
        got[0]
            .headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    assert_eq!(value("x-a").as_deref(), Some("1 2\t3"), "{name}");
    assert_eq!(value("x-b").as_deref(), Some("4"), "{name}");
    assert_eq!(value("x-c").as_deref(), Some("5"), "{name}");
}

flavors!(
    folded_request_headers_unfolded_as_envoy_does,
    folded_request_headers_unfolded_as_envoy_does_envoy,
    folded_request_headers_unfolded_as_envoy_does_legate
);

/// A client that closes its connection while the upstream is still answering: the request is
/// no longer active, counts as `downstream_rq_rx_reset` and not as completed.
async fn client_gone_before_the_response(flavor: Flavor) {
    let (up, fx) = Fixture::payments(flavor, "").await;
    let before = fx.stats().await;
    let id = test_id(flavor, "gone");
    let mut s = TcpStream::connect(fx.listener).await.expect("connect");
    let request = format!(
        "GET {PAYMENTS_PATH} HTTP/1.1\r\nhost: x\r\nx-test-id: {id}\r\nx-fault-delay-ms: 2000\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("write");
    fx.wait_arrived(&up, &id).await;
    fx.wait_stat("http.app.downstream_rq_active", 1..=1, EXCHANGE_DEADLINE)
        .await;
    drop(s);
    let completed = before
        .get("http.app.downstream_rq_completed")
        .copied()
        .unwrap_or(0);
    fx.expect_stats(&[
        ("http.app.downstream_rq_active", 0),
        ("http.app.downstream_rq_rx_reset", 1),
        ("http.app.downstream_rq_completed", completed),
        ("http.app.downstream_cx_destroy_remote_active_rq", 1),
        ("http.app.downstream_cx_destroy_active_rq", 1),
    ])
    .await;
}

flavors!(
    client_gone_before_the_response,
    client_gone_before_the_response_envoy,
    client_gone_before_the_response_legate
);

/// `expect: 100-continue`: the client gets `100 Continue` before it sends the body, the
/// upstream gets the body without the expectation. The 100 counts as a 1xx response.
async fn expect_100_continue_answered_by_the_proxy(flavor: Flavor) {
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let before = fx.stats().await;
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        let head = format!(
            "POST {PAYMENTS_PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await?;
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(b"hello").await?;
        let mut rest = Vec::new();
        loop {
            let n = s.read(&mut buf).await?;
            rest.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&rest).contains("\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>((interim, rest))
    };
    let (interim, rest) = tokio::time::timeout(EXCHANGE_DEADLINE, exchange)
        .await
        .expect("exchange within the deadline")
        .expect("exchange");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{}: got {interim:?} before sending the body",
        flavor.name()
    );
    assert_eq!(parse(&rest).status, 200, "{}", flavor.name());
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{}: one request upstream", flavor.name());
    assert_eq!(got[0].body, "hello", "{}", flavor.name());
    assert!(
        got[0].headers.get("expect").is_none(),
        "{}: the upstream got {:?}",
        flavor.name(),
        got[0].headers
    );
    let was = |name: &str| before.get(name).copied().unwrap_or(0);
    fx.expect_stats(&[
        (
            "http.app.downstream_rq_1xx",
            was("http.app.downstream_rq_1xx") + 1,
        ),
        (
            "http.app.downstream_rq_2xx",
            was("http.app.downstream_rq_2xx") + 1,
        ),
        (
            "http.app.downstream_rq_completed",
            was("http.app.downstream_rq_completed") + 2,
        ),
    ])
    .await;
}

flavors!(
    expect_100_continue_answered_by_the_proxy,
    expect_100_continue_answered_by_the_proxy_envoy,
    expect_100_continue_answered_by_the_proxy_legate
);

/// A 200 whose head carries a header of `size` bytes.
fn big_head(size: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    r.resize(r.len() + size, b'a');
    r.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    r
}

/// The upstream's answer for each case (the route strips `/payments`).
fn broken_response(path: &str) -> Vec<u8> {
    match path {
        "/status-line" => b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        "/length-and-chunked" => b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
        "/gzip-chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
        "/cut-head" => b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(),
        "/204-with-length" => b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n".to_vec(),
        "/header-line" => b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        "/204-length-0" => b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(),
        "/status-600" => b"HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        // Envoy's limit for an HTTP/1.1 response head is 80 KiB (a request's is 60 KiB).
        "/head-70k" => big_head(70 * 1024),
        "/head-over-80k" => big_head(80 * 1024 + 10),
        "/obs-fold" => {
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\n\t3\r\ncontent-length: 2\r\n\r\nok".to_vec()
        }
        _ => b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    }
}

/// An upstream that breaks HTTP/1.1 before its response headers end gets Envoy's 502 (reset
/// reason `protocol error`), charged as a 502 and counted in `upstream_cx_protocol_error`; an
/// HTTP/1.0 upstream's answer reaches the client as HTTP/1.1, a 204's `content-length: 0` is
/// dropped, a status without a known reason phrase gets `Unknown`, and a folded header line
/// is unfolded (the CRLF removed, the whitespace kept).
async fn upstream_protocol_errors_are_502(flavor: Flavor) {
    let (addr, _task) = crate::common::raw_upstream(broken_response).await;
    let fx = Fixture::start(flavor, &[svc("payments", &[addr], "")]).await;
    let name = flavor.name();
    let cases = [
        "status-line",
        "length-and-chunked",
        "gzip-chunked",
        "header-line",
        "cut-head",
        "204-with-length",
        "head-over-80k",
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let r = fx.get(&format!("/payments/{case}"), &[]).await;
        let charged = i as u64 + 1;
        fx.wait_stat(
            "cluster.payments.upstream_rq_502",
            charged..=charged,
            EXCHANGE_DEADLINE,
        )
        .await;
        assert_eq!(r.status, 502, "{name}: {case}: {}", r.body);
        assert_eq!(
            r.body,
            "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            "{name}: {case}"
        );
    }
    let ok = send_expecting_close(
        &fx,
        "an HTTP/1.0 upstream",
        b"GET /payments/http10 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"), "{name}");
    assert_eq!(ok.version, "HTTP/1.1", "{name}: the status line");
    let no_content = send_expecting_close(
        &fx,
        "a 204 with content-length: 0",
        b"GET /payments/204-length-0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(no_content.status, 204, "{name}");
    assert_eq!(no_content.header("content-length"), None, "{name}: 204");
    let odd = send_expecting_close(
        &fx,
        "status 600",
        b"GET /payments/status-600 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (odd.status, odd.reason.as_str()),
        (600, "Unknown"),
        "{name}"
    );
    let folded = send_expecting_close(
        &fx,
        "a folded header line",
        b"GET /payments/obs-fold HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(folded.status, 200, "{name}: obs-fold");
    assert_eq!(folded.header("x-a"), Some("1 2\t3"), "{name}: obs-fold");
    let big = fx.get("/payments/head-70k", &[]).await;
    assert_eq!(big.status, 200, "{name}: a 70 KiB response head");
    assert_eq!(big.header("x-big").map(str::len), Some(70 * 1024), "{name}");
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_502", 7),
        ("cluster.payments.upstream_rq_200", 3),
        ("cluster.payments.upstream_cx_protocol_error", 7),
    ])
    .await;
}

flavors!(
    upstream_protocol_errors_are_502,
    upstream_protocol_errors_are_502_envoy,
    upstream_protocol_errors_are_502_legate
);
