//! Header handling on the way up and down, as Envoy's HTTP connection manager and router do.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific headers that never cross a proxy (RFC 9110 §7.6.1), plus the
/// non-standard ones Envoy also strips.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Removes hop-by-hop headers, including those named by `Connection`. `te` is kept only as
/// `te: trailers` (which gRPC needs).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    let trailers_only = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if trailers_only {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A random (version 4) UUID, the form Envoy uses for `x-request-id`.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// What the router adds to a request going upstream.
pub struct UpstreamHeaders<'a> {
    /// The original path, when the route rewrote it (`x-envoy-original-path`).
    pub original_path: Option<&'a str>,
    /// The route timeout in ms (`x-envoy-expected-rq-timeout-ms`), when one applies.
    pub expected_timeout_ms: Option<u128>,
}

/// Prepares downstream request headers for the upstream.
pub fn prepare_request(headers: &mut HeaderMap, extra: &UpstreamHeaders<'_>) {
    strip_hop_by_hop(headers);
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if !headers.contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&uuid_v4())
    {
        headers.insert("x-request-id", v);
    }
    if let Some(ms) = extra.expected_timeout_ms
        && let Ok(v) = HeaderValue::from_str(&ms.to_string())
    {
        headers.insert("x-envoy-expected-rq-timeout-ms", v);
    }
    if let Some(p) = extra.original_path
        && let Ok(v) = HeaderValue::from_str(p)
    {
        headers.insert("x-envoy-original-path", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-foo").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
