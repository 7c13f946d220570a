//! Bodies larger than a read buffer stream through the data plane both ways, unchanged; a
//! chunked upload arrives whole and leaves its connection ready for the next request.

use bytes::Bytes;
use legate_e2e::{Flavor, Recorder, http_send};

use crate::common::{Fixture, flavors, svc};

/// 4 MiB of printable bytes (the test client reads bodies as text).
fn large_body() -> Bytes {
    (0..4 * 1024 * 1024u32)
        .map(|i| b'a' + (i.wrapping_mul(7) % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A 4 MiB POST reaches the upstream whole (same bytes, same content-length), and the
/// upstream's 4 MiB answer (the same bytes echoed) reaches the client whole.
async fn large_bodies_stream_both_ways(flavor: Flavor) {
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let body = large_body();
    let req = http::Request::post("/payments/upload")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .expect("request");
    let r = http_send(fx.listener, req).await.expect("POST");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(body.len().to_string().as_str())
    );
    assert!(
        r.body.as_bytes() == body,
        "response body differs ({} bytes received, {} sent)",
        r.body.len(),
        body.len()
    );
    let got = rec.requests();
    assert_eq!(got.len(), 1, "one attempt");
    assert_eq!(
        got[0]
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(body.len().to_string().as_str())
    );
    assert!(
        got[0].body == body,
        "request body differs ({} bytes received, {} sent)",
        got[0].body.len(),
        body.len()
    );
    fx.expect_stats(&[
        ("cluster.payments.upstream_rq_total", 1),
        ("cluster.payments.upstream_rq_200", 1),
        ("cluster.payments.upstream_cx_total", 1),
    ])
    .await;
}

flavors!(
    large_bodies_stream_both_ways,
    large_bodies_stream_both_ways_envoy,
    large_bodies_stream_both_ways_legate
);

/// Reads one response with a `content-length` from `s`: its status and body.
async fn read_one_response(s: &mut tokio::net::TcpStream) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return Ok((status, body));
            }
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A chunked upload (the chunks written one by one) reaches the upstream whole, and the
/// connection then carries another request: the proxy read the body to its last chunk and no
/// further.
async fn chunked_upload_then_another_request(flavor: Flavor) {
    use tokio::io::AsyncWriteExt;
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "")]).await;
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(fx.listener).await?;
        s.write_all(b"POST /payments/up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        for part in ["hello ", "chunked ", "world"] {
            s.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                .await?;
        }
        s.write_all(b"0\r\n\r\n").await?;
        let first = read_one_response(&mut s).await?;
        s.write_all(b"GET /payments/next HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let second = read_one_response(&mut s).await?;
        Ok::<_, std::io::Error>((first, second))
    };
    let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("both responses within 10 s")
        .expect("exchange");
    let name = flavor.name();
    assert_eq!(first, (200, "hello chunked world".to_owned()), "{name}");
    assert_eq!(second.0, 200, "{name}: the request after the upload");
    let got = rec.requests();
    assert_eq!(got.len(), 2, "{name}: two requests upstream");
    assert_eq!(got[0].body, "hello chunked world", "{name}");
    assert_eq!(got[1].path, "/next", "{name}");
    assert!(got[1].body.is_empty(), "{name}");
    fx.expect_stats(&[("http.app.downstream_cx_destroy_local", 0)])
        .await;
}

flavors!(
    chunked_upload_then_another_request,
    chunked_upload_then_another_request_envoy,
    chunked_upload_then_another_request_legate
);

/// The route timeout starts once the whole request has been received (Envoy's `timeout`
/// "spans between the point at which the entire downstream request has been processed and when
/// the upstream response has been completely processed"): an upload slower than the timeout is
/// not cut, and the upstream's answer after it arrives in time.
async fn route_timeout_starts_when_the_request_is_complete(flavor: Flavor) {
    use tokio::io::AsyncWriteExt;
    let rec = Recorder::echo().await.expect("recorder");
    let fx = Fixture::start(flavor, &[svc("payments", &[rec.addr], "timeout: 1s\n")]).await;
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(fx.listener).await?;
        s.write_all(b"POST /payments/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
            .await?;
        // A slow client: the rest of the body comes after the route timeout would have passed,
        // had it started with the request's head.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        s.write_all(b"world").await?;
        read_one_response(&mut s).await
    };
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("the response within 10 s")
        .expect("exchange");
    let name = flavor.name();
    assert_eq!(got, (200, "helloworld".to_owned()), "{name}");
    fx.expect_stats(&[("cluster.payments.upstream_rq_timeout", 0)])
        .await;
}

flavors!(
    route_timeout_starts_when_the_request_is_complete,
    route_timeout_starts_when_the_request_is_complete_envoy,
    route_timeout_starts_when_the_request_is_complete_legate
);
