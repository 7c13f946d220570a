//! The HTTP/1.1 pool against a scripted upstream on loopback: reuse, and connection ends
//! counted as Envoy counts them (`upstream_cx_destroy_{local,remote}{,_with_active_rq}`).

use super::{HostPool, UpstreamError};
use crate::config::UpstreamProtocol;
use crate::proxy::body::{self, UpstreamBody};
use crate::runtime::host::PoolStats;
use crate::stats::Store;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(5);

/// A scripted upstream's listener, the stats store, and a pool of cluster `c` for it.
async fn setup() -> (TcpListener, Store, HostPool) {
    setup_with(UpstreamProtocol::Http1, None).await
}

/// The same with a protocol and a `max_requests_per_connection`.
async fn setup_with(
    protocol: UpstreamProtocol,
    max_requests: Option<u32>,
) -> (TcpListener, Store, HostPool) {
    setup_full(protocol, max_requests, None).await
}

/// The same with an `idle_timeout` too.
async fn setup_full(
    protocol: UpstreamProtocol,
    max_requests: Option<u32>,
    idle_timeout: Option<Duration>,
) -> (TcpListener, Store, HostPool) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let store = Store::new();
    let stats = PoolStats::new(&store, "c", &Default::default(), None, max_requests);
    let addr = l.local_addr().expect("addr");
    let pool = HostPool::new(addr, protocol, Duration::from_secs(1), idle_timeout, stats);
    (l, store, pool)
}

/// Waits (up to the deadline) until the connection-end counters read `want`; nothing signals
/// a counter, so it looks every few milliseconds.
async fn until_ends(store: &Store, want: [u64; 7]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ends(store) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection ends {:?}, want {want:?}",
            ends(store)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An upstream that accepts one connection, reads one request, writes `response`, then lets
/// `then` have the connection.
fn answer_once<F, Fut>(
    l: TcpListener,
    response: &'static [u8],
    then: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut s = accept(&l).await;
        read_head(&mut s).await;
        s.write_all(response).await.expect("write");
        then(s).await;
    })
}

/// Reads until the proxy closes the connection (or the deadline).
async fn until_closed(mut s: TcpStream) {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
}

/// The counters of cluster `c` that say how connections ended, in a fixed order:
/// destroy, local, remote, with_active_rq, local_with_active_rq, remote_with_active_rq,
/// and the active gauge.
fn ends(store: &Store) -> [u64; 7] {
    let c = |s: &str| store.counter(&format!("cluster.c.upstream_cx_{s}")).value();
    [
        c("destroy"),
        c("destroy_local"),
        c("destroy_remote"),
        c("destroy_with_active_rq"),
        c("destroy_local_with_active_rq"),
        c("destroy_remote_with_active_rq"),
        store.gauge("cluster.c.upstream_cx_active").value(),
    ]
}

fn get() -> http::Request<body::ProxyBody> {
    http::Request::builder()
        .uri("/")
        .header("host", "c")
        .body(body::empty())
        .expect("request")
}

/// Reads one request head (up to the blank line) from `s`.
async fn read_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
            .await
            .expect("a request within the deadline")
            .expect("read");
        assert_ne!(n, 0, "connection closed before a request");
        head.push(byte[0]);
    }
}

async fn accept(l: &TcpListener) -> TcpStream {
    tokio::time::timeout(DEADLINE, l.accept())
        .await
        .expect("a connection within the deadline")
        .expect("accept")
        .0
}

async fn body_text(resp: http::Response<UpstreamBody>) -> Result<String, String> {
    let collected = tokio::time::timeout(DEADLINE, resp.into_body().collect())
        .await
        .expect("body within the deadline")
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&collected.to_bytes()).into_owned())
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
/// A response whose body stops after 3 of its 10 bytes.
const TRUNCATED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";

#[tokio::test]
async fn keep_alive_reuses_one_connection_then_counts_a_remote_close_while_idle() {
    let (l, store, p) = setup().await;
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let upstream = tokio::spawn(async move {
        let mut s = accept(&l).await;
        for _ in 0..3 {
            read_head(&mut s).await;
            s.write_all(OK).await.expect("write");
        }
        // Closes the connection once the proxy holds it idle.
        let _ = close_rx.await;
        drop(s);
        let mut s = accept(&l).await;
        read_head(&mut s).await;
        s.write_all(OK).await.expect("write");
        s
    });
    for _ in 0..3 {
        let resp = p.send(get()).await.expect("response");
        assert_eq!(body_text(resp).await.as_deref(), Ok("ok"));
    }
    assert_eq!(store.counter("cluster.c.upstream_cx_total").value(), 1);
    assert_eq!(ends(&store), [0, 0, 0, 0, 0, 0, 1], "idle, open");
    // The upstream closes the idle connection: the pool's watch closes it at once and counts
    // it as closed by the upstream, without a request on it (no request needed to notice).
    close_tx.send(()).expect("upstream waiting");
    until_ends(&store, [1, 0, 1, 0, 0, 0, 0]).await;
    // The next request opens a new connection.
    let resp = p.send(get()).await.expect("response on a new connection");
    assert_eq!(body_text(resp).await.as_deref(), Ok("ok"));
    assert_eq!(store.counter("cluster.c.upstream_cx_total").value(), 2);
    assert_eq!(ends(&store), [1, 0, 1, 0, 0, 0, 1]);
    assert_eq!(store.counter("cluster.c.upstream_rq_total").value(), 4);
    assert_eq!(store.gauge("cluster.c.upstream_rq_active").value(), 0);
    drop(upstream.await.expect("upstream"));
}

#[tokio::test]
async fn an_abandoned_attempt_closes_the_connection_locally_with_its_request() {
    let (l, store, p) = setup().await;
    let upstream = tokio::spawn(async move {
        let mut s = accept(&l).await;
        read_head(&mut s).await;
        // Never answers; sees the proxy close the connection.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
        n.expect("closed within the deadline").expect("read")
    });
    // A per-try timeout drops the attempt.
    let sent = tokio::time::timeout(Duration::from_millis(100), p.send(get())).await;
    assert!(sent.is_err(), "no response expected");
    assert_eq!(
        upstream.await.expect("upstream"),
        0,
        "closed, nothing more sent"
    );
    assert_eq!(ends(&store), [1, 1, 0, 1, 1, 0, 0]);
    assert_eq!(store.gauge("cluster.c.upstream_rq_active").value(), 0);
}

#[tokio::test]
async fn a_response_body_dropped_early_closes_the_connection_locally() {
    let (l, store, p) = setup().await;
    let upstream = answer_once(l, TRUNCATED, until_closed);
    let resp = p.send(get()).await.expect("response head");
    drop(resp);
    upstream.await.expect("upstream");
    assert_eq!(ends(&store), [1, 1, 0, 1, 1, 0, 0]);
}

#[tokio::test]
async fn an_upstream_close_mid_body_is_a_remote_close_with_the_request_on_it() {
    let (l, store, p) = setup().await;
    // Closes the connection after the first bytes of the body.
    let upstream = answer_once(l, TRUNCATED, |s| async move { drop(s) });
    let resp = p.send(get()).await.expect("response head");
    upstream.await.expect("upstream");
    let err = body_text(resp).await.expect_err("truncated body");
    assert!(err.contains("closed before"), "{err}");
    assert_eq!(ends(&store), [1, 0, 1, 1, 0, 1, 0]);
}

#[tokio::test]
async fn a_close_before_the_response_is_a_reset() {
    let (l, store, p) = setup().await;
    let upstream = answer_once(l, b"", |s| async move { drop(s) });
    let sent = p.send(get()).await;
    upstream.await.expect("upstream");
    assert_eq!(sent.err(), Some(UpstreamError::Reset));
    assert_eq!(ends(&store), [1, 0, 1, 1, 0, 1, 0]);
}

#[tokio::test]
async fn connection_close_is_honoured_and_counted_as_a_local_close() {
    let (l, store, p) = setup().await;
    let upstream = tokio::spawn(async move {
        for _ in 0..2 {
            let mut s = accept(&l).await;
            read_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
        }
    });
    for _ in 0..2 {
        let resp = p.send(get()).await.expect("response");
        assert!(resp.headers().contains_key("connection"));
        assert_eq!(body_text(resp).await.as_deref(), Ok("ok"));
    }
    upstream.await.expect("upstream");
    assert_eq!(store.counter("cluster.c.upstream_cx_total").value(), 2);
    // As Envoy's HTTP/1.1 pool: the proxy closes a connection the response said to close.
    assert_eq!(ends(&store), [2, 2, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn http1_connections_close_after_max_requests_per_connection() {
    let (l, store, p) = setup_with(UpstreamProtocol::Http1, Some(2)).await;
    let upstream = tokio::spawn(async move {
        // Two requests on the first connection, which the proxy then closes; the third on a
        // second one.
        let mut first = accept(&l).await;
        for _ in 0..2 {
            read_head(&mut first).await;
            first.write_all(OK).await.expect("write");
        }
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, first.read_to_end(&mut rest)).await;
        assert_eq!(closed.expect("closed by the proxy").expect("read"), 0);
        let mut second = accept(&l).await;
        read_head(&mut second).await;
        second.write_all(OK).await.expect("write");
        second
    });
    for _ in 0..3 {
        let resp = p.send(get()).await.expect("response");
        assert_eq!(body_text(resp).await.as_deref(), Ok("ok"));
    }
    drop(upstream.await.expect("upstream"));
    let c = |s: &str| store.counter(&format!("cluster.c.{s}")).value();
    assert_eq!(c("upstream_cx_total"), 2);
    assert_eq!(c("upstream_cx_max_requests"), 1);
    assert_eq!(ends(&store), [1, 1, 0, 0, 0, 0, 1]);
}

#[tokio::test]
async fn http2_connections_take_no_new_streams_after_max_requests_per_connection() {
    use hyper::server::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (l, store, p) = setup_with(UpstreamProtocol::Http2, Some(2)).await;
    // An h2c upstream that answers each stream with the number of its connection.
    let upstream = tokio::spawn(async move {
        for n in 1..=2u32 {
            let s = accept(&l).await;
            let svc = hyper::service::service_fn(move |_req| async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(body::full(n.to_string())))
            });
            tokio::spawn(
                http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    let mut served_by = Vec::new();
    for _ in 0..4 {
        let resp = p.send(get()).await.expect("response");
        served_by.push(body_text(resp).await.expect("body"));
    }
    assert_eq!(served_by, ["1", "1", "2", "2"]);
    upstream.await.expect("upstream");
    let c = |s: &str| store.counter(&format!("cluster.c.{s}")).value();
    assert_eq!(c("upstream_cx_total"), 2);
    // The fourth stream reached the limit on the second connection too.
    assert_eq!(c("upstream_cx_max_requests"), 2);
}

#[tokio::test]
async fn idle_connections_close_locally_after_idle_timeout_without_a_request() {
    let (l, store, p) = setup_full(
        UpstreamProtocol::Http1,
        None,
        Some(Duration::from_millis(50)),
    )
    .await;
    let upstream = tokio::spawn(async move {
        for _ in 0..2 {
            let mut s = accept(&l).await;
            read_head(&mut s).await;
            s.write_all(OK).await.expect("write");
            // Holds the connection open for longer than the test waits for the proxy to close
            // it: only the proxy's idle timeout can end it in time.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(3 * DEADLINE, s.read_to_end(&mut rest)).await;
        }
    });
    // Twice: the second connection goes idle after the watch found its list empty.
    for round in 1..=2 {
        let resp = p.send(get()).await.expect("response");
        assert_eq!(body_text(resp).await.as_deref(), Ok("ok"));
        assert_eq!(ends(&store)[6], 1, "round {round}: idle, still open");
        // The watch closes it when idle_timeout passes: a local close.
        until_ends(&store, [round, round, 0, 0, 0, 0, 0]).await;
    }
    assert_eq!(store.counter("cluster.c.upstream_cx_total").value(), 2);
    tokio::time::timeout(DEADLINE, upstream)
        .await
        .expect("the upstream saw both closes within the deadline")
        .expect("upstream");
}
