//! Header handling on the way up and down, as Envoy's HTTP connection manager and router do.

use http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};

/// `keep-alive`.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `proxy-connection`.
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `x-forwarded-proto`.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-request-id`.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-envoy-original-path`.
static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// Request headers Envoy 1.40 keeps as "inline" headers: a repeated one becomes one line, the
/// values joined with `,` (`x-forwarded-for: a` + `x-forwarded-for: b` → `a,b`); any other
/// header goes upstream as it came, one line each. Checked one by one against Envoy 1.40 (the
/// list is Envoy's inline headers and the custom inline headers its extensions register, so it
/// is what this Envoy build does, not a rule of HTTP).
pub const JOINED_WHEN_REPEATED: [&str; 35] = [
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "cache-control",
    "content-encoding",
    "content-type",
    "grpc-accept-encoding",
    "grpc-timeout",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "proxy-status",
    "referer",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-external-address",
    "x-envoy-is-timeout-retry",
    "x-envoy-original-path",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// Joins the values of every repeated header of [`JOINED_WHEN_REPEATED`] into one line with
/// `,` (for a request that repeats a header; HTTP/1.1 and HTTP/2 alike).
pub fn join_inline_repeated(map: &mut HeaderMap) -> Result<(), InvalidHeaderValue> {
    for name in JOINED_WHEN_REPEATED {
        join_values(map, &HeaderName::from_static(name), b",")?;
    }
    Ok(())
}

/// Request headers as Envoy's HTTP/2 codec hands them on: when a name repeats, `cookie` crumbs
/// become one `cookie` joined with `; ` (RFC 9113 §8.2.3: an HTTP/1.1 upstream must get one
/// line), then the [`JOINED_WHEN_REPEATED`] headers are joined with `,`. A request without a
/// repeated name (nearly all) costs one comparison.
pub fn join_h2_repeated(map: &mut HeaderMap) {
    if map.len() == map.keys_len() {
        return;
    }
    let _ = join_values(map, &header::COOKIE, b"; ");
    let _ = join_inline_repeated(map);
}

/// Makes the values of `name`, when it repeats, one value joined with `separator`.
fn join_values(
    map: &mut HeaderMap,
    name: &HeaderName,
    separator: &[u8],
) -> Result<(), InvalidHeaderValue> {
    let mut values = map.get_all(name).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return Ok(());
    };
    let mut joined = first.as_bytes().to_vec();
    for value in map.get_all(name).iter().skip(1) {
        joined.extend_from_slice(separator);
        joined.extend_from_slice(value.as_bytes());
    }
    map.insert(name, HeaderValue::from_bytes(&joined)?);
    Ok(())
}

/// True for the connection-specific headers that never cross a proxy (RFC 9110 §7.6.1), the
/// non-standard ones Envoy also strips, and `te` (kept only as `te: trailers`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
    )
}

/// Whether a `connection` header names `token` (case-insensitive, any of its comma-separated
/// values): `upgrade` makes an upgrade request, `close` ends the connection after a response.
pub fn connection_names(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those named by `Connection`. `te` is kept only as
/// `te: trailers` (which gRPC needs).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names instead of eight lookups.
    if headers.keys().any(is_hop_by_hop) {
        remove_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`] without the look first.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
    for n in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ] {
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

/// A random (version 4) UUID, the form Envoy uses for `x-request-id`, as its 36 ASCII bytes.
fn uuid_v4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// Where each byte's two digits go (`8-4-4-4-12`).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    for (byte, at) in b.iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// A random (version 4) UUID, the form Envoy uses for `x-request-id`.
pub fn uuid_v4() -> String {
    uuid_v4_bytes().iter().map(|&c| char::from(c)).collect()
}

/// The decimal digits of every number in `first..first + N / width`, each `width` bytes wide.
const fn digits<const N: usize>(first: u64, width: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N / width {
        let mut v = first + i as u64;
        let mut d = width;
        while d > 0 {
            d -= 1;
            out[i * width + d] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        i += 1;
    }
    out
}

/// `0`..`9`, `10`..`99` and `100`..`999`, back to back: the text of every small number as a
/// static slice.
static DIGITS_1: [u8; 10] = digits(0, 1);
static DIGITS_2: [u8; 180] = digits(10, 2);
static DIGITS_3: [u8; 2700] = digits(100, 3);

thread_local! {
    /// The last number above 999 turned into a header value on this thread.
    static LAST_NUMBER: std::cell::RefCell<Option<(u64, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// A header value holding `n` in decimal, as `HeaderValue::from(n)` but without its allocation
/// in the common cases: numbers below 1000 (`x-envoy-upstream-service-time` of nearly every
/// request) point into a static table, and a larger number equal to the last one asked for on
/// this thread (the route timeout in `x-envoy-expected-rq-timeout-ms`) shares its bytes.
pub fn number_value(n: u64) -> HeaderValue {
    let small = |table: &'static [u8], first: u64, width: usize| {
        let at = (n - first) as usize * width;
        HeaderValue::from_maybe_shared(bytes::Bytes::from_static(&table[at..at + width]))
            .unwrap_or_else(|_| HeaderValue::from(n))
    };
    match n {
        0..=9 => small(&DIGITS_1, 0, 1),
        10..=99 => small(&DIGITS_2, 10, 2),
        100..=999 => small(&DIGITS_3, 100, 3),
        _ => LAST_NUMBER.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((m, v)) if *m == n => v.clone(),
                _ => {
                    let v = HeaderValue::from(n);
                    *last = Some((n, v.clone()));
                    v
                }
            }
        }),
    }
}

/// What the router adds to a request going upstream.
pub struct UpstreamHeaders<'a> {
    /// The original path, when the route rewrote it (`x-envoy-original-path`).
    pub original_path: Option<&'a str>,
    /// Add an `x-request-id` when the request has none (the HCM's `generate_request_id`).
    pub generate_request_id: bool,
    /// The HCM's `via`, appended to the request's.
    pub via: Option<&'a HeaderValue>,
}

/// Appends `via` to the `via` header (`1.1 other, ours`), as Envoy's `via` option does on
/// requests and responses.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    let value = match headers.get(header::VIA) {
        None => via.clone(),
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + via.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(via.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| via.clone())
        }
    };
    headers.insert(header::VIA, value);
}

/// The request's `x-request-id`, made (a random UUID) when it has none and `generate`: the
/// value the response gets under `always_set_request_id_in_response`.
pub fn ensure_request_id(headers: &mut HeaderMap, generate: bool) -> Option<HeaderValue> {
    match headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(e) => Some(e.get().clone()),
        header::Entry::Vacant(e) if generate => {
            let v = HeaderValue::from_bytes(&uuid_v4_bytes()).ok()?;
            Some(e.insert(v).clone())
        }
        header::Entry::Vacant(_) => None,
    }
}

/// `x-envoy-downstream-service-cluster`.
static X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-cluster");
/// `x-envoy-downstream-service-node`.
static X_ENVOY_DOWNSTREAM_SERVICE_NODE: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-node");

/// The connection manager's `add_user_agent`: the local node's cluster as
/// `x-envoy-downstream-service-cluster` and, when the request has none (or an empty one), as
/// `user-agent`; its id, when set, as `x-envoy-downstream-service-node`.
pub fn add_user_agent(headers: &mut HeaderMap, cluster: &HeaderValue, node: Option<&HeaderValue>) {
    headers.insert(&X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER, cluster.clone());
    if headers.get(header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        headers.insert(header::USER_AGENT, cluster.clone());
    }
    if let Some(node) = node {
        headers.insert(&X_ENVOY_DOWNSTREAM_SERVICE_NODE, node.clone());
    }
}

/// The response gets the request's `x-request-id`.
pub fn set_request_id(headers: &mut HeaderMap, id: HeaderValue) {
    headers.insert(&X_REQUEST_ID, id);
}

/// Where the port of `host` starts (its `:`), as Envoy finds it: after the closing `]` of an
/// IPv6 literal, if any.
fn port_start(host: &str) -> Option<usize> {
    let colon = host.rfind(':')?;
    match host.rfind(']') {
        Some(v6_end) if v6_end > colon => None,
        _ => Some(colon),
    }
}

/// The host (`host` header, or the authority of an HTTP/2 or absolute-form request) as the
/// connection manager normalizes it before routing: without a trailing dot
/// (`strip_trailing_host_dot`: `a.` → `a`, `a.:80` → `a:80`), then without its port
/// (`strip_any_host_port`; `strip_matching_host_port`: only when it is `listener_port`).
/// Unchanged when neither applies.
pub fn normalize_host(
    parts: &mut http::request::Parts,
    strip_dot: bool,
    strip_port: crate::config::StripPort,
    listener_port: u16,
) {
    use crate::config::StripPort;
    let original = match parts.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => match parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            Some(h) => h.to_string(),
            None => return,
        },
    };
    let mut host = original.clone();
    if strip_dot {
        match port_start(&host) {
            Some(at) if at > 0 && host.as_bytes()[at - 1] == b'.' => {
                host.remove(at - 1);
            }
            Some(_) => {}
            None if host.ends_with('.') => {
                host.pop();
            }
            None => {}
        }
    }
    if let Some(at) = port_start(&host) {
        let strip = match strip_port {
            StripPort::None => false,
            StripPort::Any => true,
            StripPort::Matching => host[at + 1..].parse::<u32>() == Ok(u32::from(listener_port)),
        };
        if strip {
            host.truncate(at);
        }
    }
    if host == original {
        return;
    }
    let Ok(value) = HeaderValue::from_str(&host) else {
        return;
    };
    if parts.uri.authority().is_some()
        && let Ok(authority) = http::uri::Authority::try_from(host.as_str())
    {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.authority = Some(authority);
        if let Ok(rebuilt) = http::Uri::from_parts(uri) {
            parts.uri = rebuilt;
        }
    }
    if parts.headers.contains_key(header::HOST) {
        parts.headers.insert(header::HOST, value);
    }
}

/// Prepares downstream request headers for the upstream (`x-envoy-expected-rq-timeout-ms`
/// is set per attempt by the router).
pub fn prepare_request(headers: &mut HeaderMap, extra: &UpstreamHeaders<'_>) {
    // One pass over the names finds both kinds of header to drop (most requests carry neither).
    if headers
        .keys()
        .any(|n| is_hop_by_hop(n) || n == header::EXPECT)
    {
        remove_hop_by_hop(headers);
        // The `100 Continue` is the proxy's to send (`http1_server` sends it when the head
        // arrives; hyper, for h2c, when the body is first read); without
        // `proxy_100_continue` Envoy does not forward the expectation.
        if headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            headers.remove(header::EXPECT);
        }
    }
    if let header::Entry::Vacant(e) = headers.entry(&X_FORWARDED_PROTO) {
        e.insert(HeaderValue::from_static("http"));
    }
    if extra.generate_request_id
        && let header::Entry::Vacant(e) = headers.entry(&X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_bytes(&uuid_v4_bytes())
    {
        e.insert(v);
    }
    if let Some(via) = extra.via {
        append_via(headers, via);
    }
    if let Some(p) = extra.original_path
        && let Ok(v) = HeaderValue::from_str(p)
    {
        headers.insert(&X_ENVOY_ORIGINAL_PATH, v);
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
    fn expect_100_continue_is_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("expect", HeaderValue::from_static("100-Continue"));
        prepare_request(
            &mut h,
            &UpstreamHeaders {
                original_path: None,
                generate_request_id: true,
                via: None,
            },
        );
        assert!(h.get("expect").is_none());
        let mut other = HeaderMap::new();
        other.insert("expect", HeaderValue::from_static("something-else"));
        prepare_request(
            &mut other,
            &UpstreamHeaders {
                original_path: None,
                generate_request_id: true,
                via: None,
            },
        );
        assert_eq!(other["expect"], "something-else");
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        for (i, c) in u.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{u}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{u}");
            }
        }
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn no_hop_by_hop_header_leaves_the_map_alone() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn request_gets_forwarded_proto_and_request_id_once() {
        let mut h = HeaderMap::new();
        prepare_request(
            &mut h,
            &UpstreamHeaders {
                original_path: None,
                generate_request_id: true,
                via: None,
            },
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        assert_eq!(h.get("x-request-id").map(|v| v.len()), Some(36));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-request-id", HeaderValue::from_static("mine"));
        prepare_request(
            &mut h,
            &UpstreamHeaders {
                original_path: Some("/a"),
                generate_request_id: true,
                via: None,
            },
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        assert_eq!(
            h.get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"mine"[..])
        );
        assert_eq!(
            h.get("x-envoy-original-path").map(|v| v.as_bytes()),
            Some(&b"/a"[..])
        );
    }

    #[test]
    fn number_values_read_as_the_number() {
        for n in (0..1200).chain([9999, 15000, 15000, 15001, 15000, u64::MAX]) {
            assert_eq!(number_value(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn h2_cookie_crumbs_and_inline_headers_joined_as_envoy_does() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("cookie", "a=1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-custom", "1"),
            ("cookie", "b=2"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-custom", "2"),
            ("cookie", "c=3"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        join_h2_repeated(&mut h);
        let all = |n: &str| -> Vec<&[u8]> { h.get_all(n).iter().map(|v| v.as_bytes()).collect() };
        assert_eq!(all("cookie"), [&b"a=1; b=2; c=3"[..]]);
        assert_eq!(all("x-forwarded-for"), [&b"1.2.3.4,5.6.7.8"[..]]);
        assert_eq!(all("x-custom"), [&b"1"[..], b"2"]);

        let mut single = HeaderMap::new();
        single.insert("cookie", HeaderValue::from_static("a=1"));
        join_h2_repeated(&mut single);
        assert_eq!(
            single.get("cookie").map(|v| v.as_bytes()),
            Some(&b"a=1"[..])
        );
    }

    fn parts(host: &str, authority: Option<&str>) -> http::request::Parts {
        let uri = match authority {
            Some(a) => format!("http://{a}/x"),
            None => "/x".to_string(),
        };
        let (mut parts, ()) = http::Request::get(uri)
            .body(())
            .expect("request")
            .into_parts();
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_str(host).expect("host"));
        parts
    }

    #[test]
    fn the_host_is_normalized_as_envoy_normalizes_it() {
        use crate::config::StripPort;
        let host = |h: &str, dot: bool, port: StripPort| {
            let mut p = parts(h, None);
            normalize_host(&mut p, dot, port, 10000);
            p.headers[header::HOST].to_str().expect("ascii").to_string()
        };
        assert_eq!(host("a.example.", true, StripPort::None), "a.example");
        assert_eq!(host("a.example.:80", true, StripPort::None), "a.example:80");
        assert_eq!(
            host("a.example.:80", false, StripPort::None),
            "a.example.:80"
        );
        assert_eq!(host("a.example.:80", true, StripPort::Any), "a.example");
        assert_eq!(host("a.example:8080", false, StripPort::Any), "a.example");
        assert_eq!(host("[::1]:8080", false, StripPort::Any), "[::1]");
        assert_eq!(host("[::1]", false, StripPort::Any), "[::1]");
        assert_eq!(host("a:8080", false, StripPort::Matching), "a:8080");
        assert_eq!(host("a:10000", false, StripPort::Matching), "a");
        let mut h2 = parts("a.example.:443", Some("a.example.:443"));
        normalize_host(&mut h2, true, StripPort::Any, 10000);
        assert_eq!(
            h2.uri.authority().map(|a| a.as_str()),
            Some("a.example"),
            "the authority too"
        );
    }

    #[test]
    fn via_is_appended_and_request_ids_kept_or_made() {
        let mut h = HeaderMap::new();
        let via = HeaderValue::from_static("legate");
        append_via(&mut h, &via);
        assert_eq!(h["via"], "legate");
        h.insert("via", HeaderValue::from_static("1.1 other"));
        append_via(&mut h, &via);
        assert_eq!(h["via"], "1.1 other, legate");
        let mut h = HeaderMap::new();
        assert_eq!(ensure_request_id(&mut h, false), None);
        let made = ensure_request_id(&mut h, true).expect("made");
        assert_eq!(made.len(), 36);
        assert_eq!(h["x-request-id"], made);
        h.insert("x-request-id", HeaderValue::from_static("mine"));
        assert_eq!(
            ensure_request_id(&mut h, true),
            Some(HeaderValue::from_static("mine"))
        );
    }
}
