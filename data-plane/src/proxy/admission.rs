//! The checks Envoy's HTTP connection manager makes on a downstream request before routing it,
//! with Envoy 1.40's defaults (the HCM fields that change them, `http_protocol_options` and
//! `upgrade_configs`, are NACKed by `config::listener`), and the answers to what Envoy's
//! HTTP/1.1 codec refuses (found by `http1_server`, under the HCM's `max_request_headers_kb` and
//! `common_http_protocol_options.max_headers_count` and `headers_with_underscores_action`). Each rejection is answered as Envoy answers it — status, body,
//! `connection: close` — and counted under the same stats.
//!
//! | request | Envoy's answer | stats (besides `downstream_rq_4xx`) |
//! |---|---|---|
//! | HTTP/1.0 (`accept_http_10: false`), or another version (`HTTP/9.9`) | 426 `Upgrade Required` | `downstream_cx_protocol_error`, `downstream_rq_rx_reset` |
//! | request head over `max_request_headers_kb` (60 KiB) or over `max_headers_count` (100) headers | 431 `Request Header Fields Too Large` | same |
//! | a header name with `_` under `headers_with_underscores_action: REJECT_REQUEST` | 400 `Bad Request` | `http1.requests_rejected_with_underscores_in_headers`, `downstream_rq_rx_reset` |
//! | malformed request line, header or body framing | 400 `Bad Request` | same |
//! | a target that is not a path (`GET host:80`), other than CONNECT | 400 `Bad Request` | same |
//! | a `#fragment` in the target | 400, empty body | `downstream_rq_failed_path_normalization` |
//! | HTTP/1.1 without `host` | 400, empty body | |
//! | an upgrade (`connection: upgrade` + `upgrade: websocket`) | 403, empty body | `downstream_rq_ws_on_non_ws_route`, `downstream_rq_rx_reset` |
//! | CONNECT (no route has a `connect_matcher`) | 404, empty body | `no_route`, `downstream_rq_rx_reset` |
//!
//! The head's size is counted by the codec on the bytes received (request line, header lines,
//! blank line), as Envoy counts it.

use super::body::ProxyBody;
use super::headers;
use super::local_reply;
use super::stream_timeout::StreamTimer;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// HTTP/1.0 (or older): Envoy only accepts it with `accept_http_10`.
    Http10,
    /// The request head is larger than `max_request_headers_kb` (Envoy's codec stops reading it
    /// there: the response comes before the request is complete).
    HeadTooLarge,
    /// The request head has more headers than `max_headers_count`.
    TooManyHeaders,
    /// The codec cannot parse the request (request line, a header, the body's framing).
    Malformed,
    /// The target has a `#fragment` (Envoy's path normalization refuses it).
    Fragment,
    /// A request target that is neither a path nor an absolute URI (and the method is not
    /// CONNECT).
    NonRelativePath,
    /// HTTP/1.1 without a `host` header.
    MissingHost,
    /// A connection upgrade (WebSocket, …): no `upgrade_configs` enable one.
    Upgrade,
    /// CONNECT: only a route with a `connect_matcher` matches it, and there is none.
    Connect,
    /// A stream timer ran out before the request head had arrived in full (HTTP/1.1).
    Timeout(StreamTimer),
    /// A header name with an underscore, under `headers_with_underscores_action:
    /// REJECT_REQUEST` (HTTP/1.1; counted by the codec).
    Underscore,
}

impl Rejection {
    /// The status Envoy answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::Http10 => StatusCode::UPGRADE_REQUIRED,
            Rejection::HeadTooLarge | Rejection::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Rejection::Malformed
            | Rejection::Underscore
            | Rejection::NonRelativePath
            | Rejection::Fragment
            | Rejection::MissingHost => StatusCode::BAD_REQUEST,
            Rejection::Upgrade => StatusCode::FORBIDDEN,
            Rejection::Connect => StatusCode::NOT_FOUND,
            Rejection::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Envoy's body: the reason phrase for what its HTTP/1.1 codec rejects, empty for what its
    /// connection manager or router rejects.
    fn body(self) -> &'static str {
        if self.is_protocol_error() || self == Rejection::Underscore {
            self.status().canonical_reason().unwrap_or("")
        } else {
            ""
        }
    }

    /// Counted as `downstream_cx_protocol_error` (Envoy's codec rejects it).
    pub fn is_protocol_error(self) -> bool {
        matches!(
            self,
            Rejection::Http10
                | Rejection::HeadTooLarge
                | Rejection::TooManyHeaders
                | Rejection::Malformed
                | Rejection::NonRelativePath
        )
    }

    /// Counted as `downstream_rq_rx_reset` (and, over HTTP/1.1,
    /// `downstream_rq_response_before_rq_complete`): Envoy resets the stream after its reply for
    /// every rejection except a missing `host` and a fragment.
    pub fn resets_stream(self) -> bool {
        !matches!(self, Rejection::MissingHost | Rejection::Fragment)
    }

    /// The local reply, with `connection: close` on HTTP/1.x (Envoy closes the connection after
    /// each of these).
    pub fn reply(self, version: Version) -> Response<ProxyBody> {
        if let Rejection::Timeout(timer) = self {
            return timer.head_reply();
        }
        let mut r = local_reply::reply(self.status(), self.body());
        if version != Version::HTTP_2 {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The first check `req` fails, in the order Envoy makes them, or `None` to route it.
pub fn check<B>(req: &Request<B>) -> Option<Rejection> {
    let version = req.version();
    let http1 = version != Version::HTTP_2;
    if http1 && version < Version::HTTP_11 {
        return Some(Rejection::Http10);
    }
    let headers = scan(req.headers());
    let connect = req.method() == Method::CONNECT;
    let uri = req.uri();
    if http1 && !connect && uri.scheme().is_none() && uri.path_and_query().is_none() {
        return Some(Rejection::NonRelativePath);
    }
    if version == Version::HTTP_11 && !headers.host {
        return Some(Rejection::MissingHost);
    }
    if headers.upgrade && headers::connection_names(req.headers(), "upgrade") {
        return Some(Rejection::Upgrade);
    }
    if connect {
        return Some(Rejection::Connect);
    }
    None
}

/// What one pass over the request headers finds (no lookup by name: a request usually carries
/// a handful of headers, and comparing a standard name is comparing a number).
struct HeaderScan {
    /// A `host` header is present.
    host: bool,
    /// An `upgrade` header other than `h2c` is present. `upgrade: h2c` is no upgrade: Envoy (and
    /// legate-proxy) drop its headers and serve the request over HTTP/1.1.
    upgrade: bool,
}

fn scan(headers: &HeaderMap) -> HeaderScan {
    let mut scan = HeaderScan {
        host: false,
        upgrade: false,
    };
    for (name, value) in headers {
        if name == header::HOST {
            scan.host = true;
        } else if name == header::UPGRADE && !value.as_bytes().eq_ignore_ascii_case(b"h2c") {
            scan.upgrade = true;
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        version: Version,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Request<()> {
        let mut b = Request::builder()
            .version(version)
            .method(method)
            .uri(target);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("valid test request")
    }

    fn get(headers: &[(&str, &str)]) -> Request<()> {
        request(Version::HTTP_11, "GET", "/a", headers)
    }

    #[test]
    fn an_ordinary_request_passes() {
        assert_eq!(check(&get(&[("host", "x")])), None);
        assert_eq!(
            check(&request(
                Version::HTTP_11,
                "GET",
                "http://x/a?b",
                &[("host", "x")]
            )),
            None
        );
        assert_eq!(
            check(&request(Version::HTTP_11, "OPTIONS", "*", &[("host", "x")])),
            None
        );
        assert_eq!(
            check(&request(
                Version::HTTP_11,
                "GET",
                "http://x",
                &[("host", "x")]
            )),
            None
        );
        assert_eq!(
            check(&request(Version::HTTP_2, "GET", "http://x/a", &[])),
            None
        );
        // An empty host is a host (Envoy routes it).
        assert_eq!(check(&get(&[("host", "")])), None);
    }

    #[test]
    fn http_10_needs_an_upgrade() {
        let r = request(Version::HTTP_10, "GET", "/a", &[("host", "x")]);
        assert_eq!(check(&r), Some(Rejection::Http10));
        let reply = Rejection::Http10.reply(Version::HTTP_10);
        assert_eq!(reply.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(reply.headers()["connection"], "close");
        assert_eq!(reply.headers()["content-length"], "16");
        assert_eq!(reply.headers()["content-type"], "text/plain");
    }

    #[test]
    fn codec_refusals_are_answered_as_envoy_answers_them() {
        let too_large = Rejection::HeadTooLarge.reply(Version::HTTP_11);
        assert_eq!(too_large.status(), 431);
        assert_eq!(too_large.headers()["content-length"], "31");
        let malformed = Rejection::Malformed.reply(Version::HTTP_11);
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        assert_eq!(malformed.headers()["content-length"], "11");
        assert!(Rejection::Malformed.is_protocol_error() && Rejection::Malformed.resets_stream());
        let fragment = Rejection::Fragment.reply(Version::HTTP_11);
        assert_eq!(fragment.status(), StatusCode::BAD_REQUEST);
        assert_eq!(fragment.headers()["content-length"], "0");
        assert!(!Rejection::Fragment.is_protocol_error() && !Rejection::Fragment.resets_stream());
    }

    #[test]
    fn a_target_must_be_a_path_unless_connect() {
        let r = request(Version::HTTP_11, "GET", "x:80", &[("host", "x")]);
        assert_eq!(check(&r), Some(Rejection::NonRelativePath));
        let c = request(Version::HTTP_11, "CONNECT", "x:443", &[("host", "x:443")]);
        assert_eq!(check(&c), Some(Rejection::Connect));
        assert_eq!(
            Rejection::Connect.reply(Version::HTTP_11).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn http_11_needs_a_host() {
        assert_eq!(check(&get(&[])), Some(Rejection::MissingHost));
        assert_eq!(Rejection::MissingHost.body(), "");
        assert!(!Rejection::MissingHost.resets_stream());
    }

    #[test]
    fn upgrades_are_forbidden_but_h2c_is_ignored() {
        let ws = get(&[
            ("host", "x"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(check(&ws), Some(Rejection::Upgrade));
        let h2c = get(&[
            ("host", "x"),
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(check(&h2c), None);
        // Either header alone is no upgrade.
        assert_eq!(
            check(&get(&[("host", "x"), ("upgrade", "websocket")])),
            None
        );
        assert_eq!(
            check(&get(&[("host", "x"), ("connection", "upgrade")])),
            None
        );
        let reply = Rejection::Upgrade.reply(Version::HTTP_11);
        assert_eq!(reply.status(), StatusCode::FORBIDDEN);
        assert_eq!(reply.headers()["content-length"], "0");
    }

    #[test]
    fn http2_replies_carry_no_connection_header() {
        let reply = Rejection::Connect.reply(Version::HTTP_2);
        assert!(reply.headers().get("connection").is_none());
    }
}
