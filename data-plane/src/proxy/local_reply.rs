//! Responses the proxy generates itself, byte-compatible with Envoy 1.40's local replies.

use super::body::{self, ProxyBody};
use super::pool::UpstreamError;
use http::{HeaderValue, Response, StatusCode, header};

/// Envoy's body prefix for failures before response headers.
pub const UPSTREAM_RESET_PREFIX: &str =
    "upstream connect error or disconnect/reset before headers. ";

/// A local reply with Envoy's headers: `text/plain` when there is a body, none otherwise.
pub fn reply(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut resp = if text.is_empty() {
        Response::new(body::empty())
    } else {
        let mut r = Response::new(body::full(text.to_string()));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    *resp.status_mut() = status;
    resp
}

/// 404 for a request no route matches (Envoy: `NR`, empty body).
pub fn no_route() -> Response<ProxyBody> {
    reply(StatusCode::NOT_FOUND, "")
}

/// 503 for a route whose cluster does not exist (Envoy: `NC`, empty body).
pub fn no_cluster() -> Response<ProxyBody> {
    reply(StatusCode::SERVICE_UNAVAILABLE, "")
}

/// 503 when the cluster has no host to pick (Envoy: `UH`).
pub fn no_healthy_upstream() -> Response<ProxyBody> {
    reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
}

/// 503 for a connect failure or reset before headers (Envoy: `UF`/`UR`), 502 for a protocol
/// error (`UPE`): [`UpstreamError::status`]. When the failed attempt was a retry (`retried`),
/// Envoy's router words it `retried and the latest reset reason: …`.
pub fn upstream_reset(failure: UpstreamError, retried: bool) -> Response<ProxyBody> {
    let retried = if retried {
        "retried and the latest "
    } else {
        ""
    };
    reply(
        failure.status(),
        &format!(
            "{UPSTREAM_RESET_PREFIX}{retried}reset reason: {}",
            failure.reason()
        ),
    )
}

/// 504 when the route timeout fires (Envoy: `UT`).
pub fn upstream_timeout() -> Response<ProxyBody> {
    reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
}

/// 503 with `x-envoy-overloaded: true` when a circuit breaker overflows (Envoy: `UO`).
pub fn overflow() -> Response<ProxyBody> {
    let mut r = upstream_reset(UpstreamError::Overflow, false);
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    r
}
