//! What crosses each connection, counted as Envoy counts it: `downstream_cx_rx_bytes_total` and
//! `_tx_bytes_total` (the bytes the client sent and received), `upstream_cx_rx_bytes_total` and
//! `_tx_bytes_total` (the bytes the upstream sent and received), and the connection histograms
//! `upstream_cx_connect_ms`, `upstream_cx_length_ms`, `upstream_rq_per_cx` and
//! `downstream_cx_length_ms`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use legate_e2e::Flavor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Fixture, Step, flavors, raw_exchange};

/// Upper bound of the raw exchange and of each wait for a histogram flush (Envoy flushes
/// histograms every 5 s).
const DEADLINE: Duration = Duration::from_secs(15);

/// The raw upstream's one answer; it closes the connection after it.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nhello";

/// An HTTP/1.1 upstream that answers each request head (requests without a body) with
/// [`RESPONSE`] and closes, counting every byte it reads and writes.
struct RawUpstream {
    addr: SocketAddr,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let read = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (r, w) = (read.clone(), written.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(answer_once(s, r.clone(), w.clone()));
            }
        });
        RawUpstream {
            addr,
            read,
            written,
        }
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::SeqCst),
            self.written.load(Ordering::SeqCst),
        )
    }
}

async fn answer_once(mut s: TcpStream, read: Arc<AtomicU64>, written: Arc<AtomicU64>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                read.fetch_add(n as u64, Ordering::SeqCst);
                got.extend_from_slice(&buf[..n]);
            }
        }
    }
    // Counted before it is written: the client can have the response (and the test read the
    // totals) before this task runs again after the write.
    written.fetch_add(RESPONSE.len() as u64, Ordering::SeqCst);
    if s.write_all(RESPONSE).await.is_err() {
        written.fetch_sub(RESPONSE.len() as u64, Ordering::SeqCst);
    }
    let _ = s.shutdown().await;
    // Read (and count) whatever else comes until the proxy closes its side.
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        read.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// `_count` of the histogram `metric` in `/stats/prometheus` on the line labelled `label`.
async fn histogram_count(fx: &Fixture, metric: &str, label: &str) -> u64 {
    let (status, body) = fx.proxy.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200, "{}: GET /stats/prometheus", fx.flavor.name());
    let name = format!("{metric}_count{{{label}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits (up to [`DEADLINE`]) until the histogram has a sample; returns its count.
async fn flushed_count(fx: &Fixture, metric: &str, label: &str) -> u64 {
    let started = tokio::time::Instant::now();
    loop {
        let count = histogram_count(fx, metric, label).await;
        if count > 0 || started.elapsed() >= DEADLINE {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One request through the proxy to an upstream that closes after answering: each byte
/// counter grows by exactly what its side of the exchange saw, and each connection histogram
/// gets its samples.
async fn byte_counters_count_what_crosses_each_connection(flavor: Flavor) {
    let up = RawUpstream::start().await;
    let fx = Fixture::start_static(flavor, &[up.addr], serde_json::json!({})).await;
    let name = flavor.name();
    let before: BTreeMap<String, u64> = fx.stats().await;
    let (up_read, up_written) = up.totals();
    let request = b"GET /payments/bytes HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let got = raw_exchange(&fx, &[Step::Send(request)]).await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("hello"),
        "{name}: {got:?}"
    );
    let (now_read, now_written) = up.totals();
    let was = |k: &str| before.get(k).copied().unwrap_or(0);
    let growth = [
        (
            "http.app.downstream_cx_rx_bytes_total",
            request.len() as u64,
        ),
        ("http.app.downstream_cx_tx_bytes_total", got.len() as u64),
        (
            "cluster.payments.upstream_cx_tx_bytes_total",
            now_read - up_read,
        ),
        (
            "cluster.payments.upstream_cx_rx_bytes_total",
            now_written - up_written,
        ),
    ];
    let expected: Vec<(&str, u64)> = growth.iter().map(|(k, n)| (*k, was(k) + n)).collect();
    fx.expect_stats(&expected).await;
    let cluster = "envoy_cluster_name=\"payments\"";
    for metric in [
        "envoy_cluster_upstream_cx_connect_ms",
        "envoy_cluster_upstream_cx_length_ms",
        "envoy_cluster_upstream_rq_per_cx",
    ] {
        assert!(
            flushed_count(&fx, metric, cluster).await >= 1,
            "{name}: {metric} has no sample"
        );
    }
    let manager = "envoy_http_conn_manager_prefix=\"app\"";
    assert!(
        flushed_count(&fx, "envoy_http_downstream_cx_length_ms", manager).await >= 1,
        "{name}: downstream_cx_length_ms has no sample"
    );
}

flavors!(
    byte_counters_count_what_crosses_each_connection,
    byte_counters_count_what_crosses_each_connection_envoy,
    byte_counters_count_what_crosses_each_connection_legate
);
