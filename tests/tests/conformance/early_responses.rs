//! An upstream that answers before the request body has arrived in full (an early response:
//! a 413 to an upload, a server that streams while it reads). As Envoy does, the proxy sends
//! the whole response while it keeps reading the request body upstream, says
//! `connection: close` (the body's rest cannot be skipped), has no
//! `x-envoy-upstream-service-time` for it (the request is not complete), and starts the route
//! timeout once the request is complete.

use std::time::Duration;

use legate_e2e::Flavor;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Fixture, flavors};

/// Upper bound of each raw exchange.
const DEADLINE: Duration = Duration::from_secs(15);

/// A response with a 5-byte body.
const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

/// An HTTP/1.1 upstream that answers each request as soon as its head has arrived, without
/// waiting for its body: `/slow…` with a chunked body whose second chunk comes 3 s after the
/// first, anything else with `hello` (`content-length: 5`). It then reads until the proxy
/// closes the connection.
async fn early_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Requests without a body (the fixture's readiness probes) get `hello` on the
                // same connection; the first with a body gets the early answer.
                loop {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if got.starts_with(b"POST ") {
                        break;
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                    got.drain(..end + 4);
                    if s.write_all(HELLO).await.is_err() {
                        return;
                    }
                }
                if got.starts_with(b"POST /slow") {
                    let head =
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                    if s.write_all(head).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let _ = s.write_all(b"5\r\nworld\r\n0\r\n\r\n").await;
                } else {
                    let _ = s.write_all(HELLO).await;
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Posts `path` with a 4-byte body of which 2 bytes come with the head and 2 after `later`,
/// then reads until the proxy closes the connection.
async fn post_in_two_parts(fx: &Fixture, path: &str, later: Duration) -> String {
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab");
    let exchange = async {
        let mut s = TcpStream::connect(fx.listener).await?;
        s.write_all(head.as_bytes()).await?;
        let (mut rd, mut wr) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = rd.read_to_end(&mut got).await;
            got
        });
        tokio::time::sleep(later).await;
        let _ = wr.write_all(b"cd").await;
        let got = reader.await.expect("reader");
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&got).into_owned())
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{}: the proxy never closed", fx.flavor.name()))
        .expect("raw exchange")
}

/// An early response reaches the client whole, with `connection: close` and without
/// `x-envoy-upstream-service-time`, counted as `downstream_rq_response_before_rq_complete` when
/// its head goes out; the stream is reset once it has been sent (its request never completed in
/// time). With a route timeout of 1 s and a response body that pauses for 3 s, the timeout runs
/// from the request's end (0.3 s in) and cuts the body (`upstream_rq_timeout`).
async fn early_response_is_sent_whole(flavor: Flavor) {
    let up = early_upstream().await;
    let routes =
        [
            {
                json!({"match": {"prefix": "/"}, "route": {"cluster": "payments", "timeout": "1s"}})
            },
        ];
    let hcm = json!({"route_config": {"name": "app", "virtual_hosts": [{
        "name": "app", "domains": ["*"], "routes": routes}]}});
    let fx = Fixture::start_static(flavor, &[up], hcm).await;
    let name = flavor.name();
    let before = fx.stats().await;
    let was = |k: &str| before.get(k).copied().unwrap_or(0);
    let got = post_in_two_parts(&fx, "/fast", Duration::from_millis(1500)).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {got:?}");
    assert!(
        got.ends_with("\r\n\r\nhello"),
        "{name}: the whole body: {got:?}"
    );
    assert!(got.contains("\r\nconnection: close\r\n"), "{name}: {got:?}");
    assert!(
        !got.contains("x-envoy-upstream-service-time"),
        "{name}: no service time before the request is complete: {got:?}"
    );
    let got = post_in_two_parts(&fx, "/slow", Duration::from_millis(300)).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {got:?}");
    assert!(got.contains("hello"), "{name}: the first chunk: {got:?}");
    assert!(
        !got.contains("world"),
        "{name}: the route timeout cuts the body: {got:?}"
    );
    fx.expect_stats(&[
        (
            "http.app.downstream_rq_response_before_rq_complete",
            was("http.app.downstream_rq_response_before_rq_complete") + 2,
        ),
        (
            "http.app.downstream_rq_rx_reset",
            was("http.app.downstream_rq_rx_reset") + 2,
        ),
        (
            "http.app.downstream_rq_tx_reset",
            was("http.app.downstream_rq_tx_reset") + 1,
        ),
        (
            "cluster.payments.upstream_rq_timeout",
            was("cluster.payments.upstream_rq_timeout") + 1,
        ),
        ("http.app.downstream_rq_active", 0),
        ("cluster.payments.upstream_rq_active", 0),
    ])
    .await;
}

flavors!(
    early_response_is_sent_whole,
    early_response_is_sent_whole_envoy,
    early_response_is_sent_whole_legate
);

/// Over h2c: a `POST` that sends 5 of its 10 bytes, then waits. The early response arrives
/// whole; it is counted as `downstream_rq_response_before_rq_complete` when its head goes out,
/// and the stream is reset when it ends (`downstream_rq_rx_reset`), its request incomplete.
async fn early_response_over_h2c(flavor: Flavor) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = early_upstream().await;
    let fx = Fixture::start_static(flavor, &[up], json!({})).await;
    let name = flavor.name();
    let before = fx.stats().await;
    let was = |k: &str| before.get(k).copied().unwrap_or(0);
    let stream = TcpStream::connect(fx.listener).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, std::io::Error>>(1);
    tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"12345"))))
        .await
        .expect("first half");
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = http::Request::post(format!("http://{}/payments/fast", fx.listener))
        .header("content-length", "10")
        .body(body)
        .expect("request");
    let answered = async {
        let resp = sender.send_request(req).await.expect("response head");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    };
    let (status, body) = tokio::time::timeout(DEADLINE, answered)
        .await
        .expect("the early response");
    assert_eq!((status, body.as_ref()), (200, b"hello".as_ref()), "{name}");
    fx.expect_stats(&[
        (
            "http.app.downstream_rq_response_before_rq_complete",
            was("http.app.downstream_rq_response_before_rq_complete") + 1,
        ),
        (
            "http.app.downstream_rq_rx_reset",
            was("http.app.downstream_rq_rx_reset") + 1,
        ),
        ("http.app.downstream_rq_active", 0),
    ])
    .await;
    drop(tx);
    driver.abort();
}

flavors!(
    early_response_over_h2c,
    early_response_over_h2c_envoy,
    early_response_over_h2c_legate
);
