//! Bodies larger than a read buffer stream through the data plane both ways, unchanged.

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
