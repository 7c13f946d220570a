//! Retries with Envoy's semantics: which policy applies to a request (route, virtual host,
//! `x-envoy-*` request headers), whether an attempt's outcome is retriable, and the jittered
//! exponential back-off between attempts.
//!
//! The `x-envoy-*` headers only ever reach this module on internal requests: the connection
//! manager strips them from all others (`proxy::internal`), as Envoy's does.

use super::Outcome;
use crate::config::{
    DEFAULT_BACKOFF_BASE, HeaderMatchKind, HeaderMatcher, RetryOn, RetryPolicy, retry_on,
};
use http::HeaderMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Request headers that steer retries and timeouts; the router consumes them (they are not
/// forwarded upstream, as in Envoy).
pub const RETRY_ON: &str = "x-envoy-retry-on";
/// gRPC retry conditions.
pub const RETRY_GRPC_ON: &str = "x-envoy-retry-grpc-on";
/// Overrides `num_retries`.
pub const MAX_RETRIES: &str = "x-envoy-max-retries";
/// Overrides the route timeout (ms; 0 disables it).
pub const UPSTREAM_RQ_TIMEOUT_MS: &str = "x-envoy-upstream-rq-timeout-ms";
/// Overrides the per-try timeout (ms).
pub const UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
/// Status codes added to `retriable_status_codes` (comma-separated).
pub const RETRIABLE_STATUS_CODES: &str = "x-envoy-retriable-status-codes";
/// Response header names added to `retriable_headers` (comma-separated; presence match).
pub const RETRIABLE_HEADER_NAMES: &str = "x-envoy-retriable-header-names";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    header_str(headers, name)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Conditions named in a header value; unknown names are ignored, as Envoy does for headers.
fn header_conditions(value: &str) -> RetryOn {
    value
        .split(',')
        .filter_map(|name| retry_on(name.trim()).ok())
        .fold(RetryOn::default(), union)
}

/// The union of two condition sets.
pub fn union(a: RetryOn, b: RetryOn) -> RetryOn {
    RetryOn {
        five_xx: a.five_xx || b.five_xx,
        gateway_error: a.gateway_error || b.gateway_error,
        reset: a.reset || b.reset,
        reset_before_request: a.reset_before_request || b.reset_before_request,
        connect_failure: a.connect_failure || b.connect_failure,
        retriable_4xx: a.retriable_4xx || b.retriable_4xx,
        refused_stream: a.refused_stream || b.refused_stream,
        retriable_status_codes: a.retriable_status_codes || b.retriable_status_codes,
        retriable_headers: a.retriable_headers || b.retriable_headers,
        envoy_ratelimited: a.envoy_ratelimited || b.envoy_ratelimited,
        grpc_cancelled: a.grpc_cancelled || b.grpc_cancelled,
        grpc_deadline_exceeded: a.grpc_deadline_exceeded || b.grpc_deadline_exceeded,
        grpc_internal: a.grpc_internal || b.grpc_internal,
        grpc_resource_exhausted: a.grpc_resource_exhausted || b.grpc_resource_exhausted,
        grpc_unavailable: a.grpc_unavailable || b.grpc_unavailable,
    }
}

/// A policy with Envoy's defaults, for requests that ask for retries only by header.
fn default_policy() -> RetryPolicy {
    RetryPolicy {
        num_retries: 1,
        backoff_base: DEFAULT_BACKOFF_BASE,
        backoff_max: DEFAULT_BACKOFF_BASE * 10,
        host_selection_max_attempts: 1,
        ..Default::default()
    }
}

/// The retry policy for one request: the route's, else the virtual host's, extended by the
/// `x-envoy-retry-on` / `x-envoy-retry-grpc-on` headers, `x-envoy-max-retries`,
/// `x-envoy-retriable-status-codes` and `x-envoy-retriable-header-names`, with the per-try
/// timeout from `x-envoy-upstream-rq-per-try-timeout-ms`. `None`: no retries.
pub fn effective_policy(
    configured: Option<&RetryPolicy>,
    headers: &HeaderMap,
) -> Option<RetryPolicy> {
    let from_header = [RETRY_ON, RETRY_GRPC_ON]
        .iter()
        .filter_map(|h| header_str(headers, h))
        .map(header_conditions)
        .fold(None, |acc: Option<RetryOn>, c| {
            Some(union(acc.unwrap_or_default(), c))
        });
    let mut policy = match (configured, from_header) {
        (None, None) => None,
        (Some(p), None) => Some(p.clone()),
        (None, Some(on)) => Some(RetryPolicy {
            retry_on: on,
            ..default_policy()
        }),
        (Some(p), Some(on)) => Some(RetryPolicy {
            retry_on: union(p.retry_on, on),
            ..p.clone()
        }),
    }?;
    if let Some(n) = header_str(headers, MAX_RETRIES).and_then(|v| v.trim().parse::<u32>().ok()) {
        policy.num_retries = n;
    }
    if let Some(t) = header_ms(headers, UPSTREAM_RQ_PER_TRY_TIMEOUT_MS) {
        policy.per_try_timeout = (!t.is_zero()).then_some(t);
    }
    if let Some(codes) = header_str(headers, RETRIABLE_STATUS_CODES) {
        let codes = codes
            .split(',')
            .filter_map(|c| c.trim().parse::<u16>().ok());
        policy.retriable_status_codes.extend(codes);
    }
    if let Some(names) = header_str(headers, RETRIABLE_HEADER_NAMES) {
        // Envoy takes names only (a presence match), not full matchers.
        let matchers = names
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .map(|name| HeaderMatcher {
                name,
                kind: HeaderMatchKind::Present(true),
                invert: false,
            });
        policy.retriable_headers.extend(matchers);
    }
    Some(policy)
}

/// The route timeout for one request: `x-envoy-upstream-rq-timeout-ms` overrides the
/// route's; zero disables it.
pub fn route_timeout(configured: Duration, headers: &HeaderMap) -> Option<Duration> {
    configured_timeout(header_ms(headers, UPSTREAM_RQ_TIMEOUT_MS).unwrap_or(configured))
}

/// The route timeout without header overrides: `None` when it is zero (disabled).
pub fn configured_timeout(configured: Duration) -> Option<Duration> {
    (!configured.is_zero()).then_some(configured)
}

/// Removes the headers the router consumed, so they do not reach the upstream.
pub fn strip_consumed_headers(headers: &mut HeaderMap) {
    for h in [
        RETRY_ON,
        RETRY_GRPC_ON,
        MAX_RETRIES,
        UPSTREAM_RQ_TIMEOUT_MS,
        UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
        RETRIABLE_STATUS_CODES,
        RETRIABLE_HEADER_NAMES,
    ] {
        headers.remove(h);
    }
}

/// The gRPC status of a trailers-only response (`grpc-status` in the headers).
fn grpc_status(headers: Option<&HeaderMap>) -> Option<u32> {
    headers
        .and_then(|h| h.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// True when `policy` retries an attempt that ended in `outcome` (`headers`: the response
/// headers, when there was a response).
pub fn is_retriable(policy: &RetryPolicy, outcome: Outcome, headers: Option<&HeaderMap>) -> bool {
    let on = &policy.retry_on;
    match outcome {
        Outcome::Response(status) => {
            (on.five_xx && status >= 500)
                || (on.gateway_error && matches!(status, 502..=504))
                || (on.retriable_4xx && status == 409)
                || (on.retriable_status_codes && policy.retriable_status_codes.contains(&status))
                || (on.envoy_ratelimited
                    && headers.is_some_and(|h| h.contains_key("x-envoy-ratelimited")))
                || (on.retriable_headers
                    && headers.is_some_and(|h| {
                        policy
                            .retriable_headers
                            .iter()
                            .any(|m| m.matches_headers(h))
                    }))
                || grpc_status(headers).is_some_and(|code| {
                    (on.grpc_cancelled && code == 1)
                        || (on.grpc_deadline_exceeded && code == 4)
                        || (on.grpc_resource_exhausted && code == 8)
                        || (on.grpc_internal && code == 13)
                        || (on.grpc_unavailable && code == 14)
                })
        }
        // Nothing reached the host: every reset-like condition covers it.
        Outcome::ConnectFailure | Outcome::ConnectTimeout => {
            on.connect_failure
                || on.reset
                || on.reset_before_request
                || on.five_xx
                || on.gateway_error
        }
        Outcome::Reset => on.reset || on.five_xx || on.gateway_error,
        // A per-try timeout counts as a 504 (and as a reset: no response).
        Outcome::Timeout => on.five_xx || on.gateway_error || on.reset,
    }
}

/// Envoy 1.40's `JitteredExponentialBackOffStrategy`: the n-th wait is uniformly random in
/// `[0, interval)`, where the interval starts at the base and doubles up to the maximum.
#[derive(Debug)]
pub struct Backoff {
    next_interval_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// A back-off for `policy`.
    pub fn new(policy: &RetryPolicy) -> Self {
        let base = u64::try_from(policy.backoff_base.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let max = u64::try_from(policy.backoff_max.as_millis())
            .unwrap_or(u64::MAX)
            .max(base);
        Backoff {
            next_interval_ms: base,
            max_ms: max,
        }
    }

    /// The next wait, given a random number.
    pub fn next_with(&mut self, random: u64) -> Duration {
        let interval = self.next_interval_ms;
        self.next_interval_ms = if interval > self.max_ms / 2 {
            self.max_ms
        } else {
            interval * 2
        };
        Duration::from_millis((random % interval).min(self.max_ms))
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        self.next_with(rand::random())
    }
}

/// Retry bookkeeping of one request.
#[derive(Debug)]
pub struct RetryState {
    /// The policy in force.
    pub policy: RetryPolicy,
    /// Retries made so far.
    pub retries: u32,
    /// Hosts already tried, for the previous_hosts predicate.
    pub tried: Vec<SocketAddr>,
    backoff: Backoff,
}

impl RetryState {
    /// State for a request with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        let backoff = Backoff::new(&policy);
        RetryState {
            policy,
            retries: 0,
            tried: Vec::new(),
            backoff,
        }
    }

    /// Hosts the next pick should avoid (empty unless previous_hosts is configured).
    pub fn excluded(&self) -> &[SocketAddr] {
        if self.policy.previous_hosts {
            &self.tried
        } else {
            &[]
        }
    }

    /// True while retries remain.
    pub fn has_budget(&self) -> bool {
        self.retries < self.policy.num_retries
    }

    /// Records a retry and returns the wait before it.
    pub fn next_backoff(&mut self) -> Duration {
        self.retries += 1;
        self.backoff.next_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(on: &str) -> RetryPolicy {
        RetryPolicy {
            retry_on: retry_on(on).expect("valid"),
            ..default_policy()
        }
    }

    #[test]
    fn backoff_doubles_interval_and_caps() {
        let p = RetryPolicy {
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            ..default_policy()
        };
        let mut b = Backoff::new(&p);
        // With the largest random value, each wait is interval − 1.
        let waits: Vec<u64> = (0..6)
            .map(|_| b.next_with(u64::MAX).as_millis() as u64)
            .collect();
        let expect = [25, 50, 100, 200, 250, 250].map(|i: u64| (u64::MAX % i).min(250));
        assert_eq!(waits, expect);
        let mut b = Backoff::new(&p);
        assert_eq!(b.next_with(0), Duration::ZERO);
    }

    #[test]
    fn conditions() {
        let p = policy("gateway-error");
        assert!(is_retriable(&p, Outcome::Response(503), None));
        assert!(!is_retriable(&p, Outcome::Response(500), None));
        assert!(is_retriable(&p, Outcome::ConnectFailure, None));
        let p = policy("5xx");
        assert!(is_retriable(&p, Outcome::Response(500), None));
        assert!(is_retriable(&p, Outcome::Timeout, None));
        assert!(!is_retriable(&p, Outcome::Response(404), None));
        let p = policy("connect-failure");
        assert!(is_retriable(&p, Outcome::ConnectTimeout, None));
        assert!(!is_retriable(&p, Outcome::Reset, None));
        assert!(!is_retriable(&p, Outcome::Response(503), None));
        let mut p = policy("retriable-status-codes");
        p.retriable_status_codes = vec![418];
        assert!(is_retriable(&p, Outcome::Response(418), None));
        assert!(is_retriable(
            &policy("retriable-4xx"),
            Outcome::Response(409),
            None
        ));
    }

    #[test]
    fn grpc_status_in_headers() {
        let p = policy("unavailable");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(is_retriable(&p, Outcome::Response(200), Some(&h)));
        h.insert("grpc-status", HeaderValue::from_static("13"));
        assert!(!is_retriable(&p, Outcome::Response(200), Some(&h)));
    }

    #[test]
    fn headers_extend_and_override() {
        let mut h = HeaderMap::new();
        assert!(effective_policy(None, &h).is_none());
        h.insert(RETRY_ON, HeaderValue::from_static("5xx, bogus"));
        let p = effective_policy(None, &h).expect("header enables retries");
        assert!(p.retry_on.five_xx);
        assert_eq!(p.num_retries, 1);
        h.insert(MAX_RETRIES, HeaderValue::from_static("4"));
        h.insert(
            UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
            HeaderValue::from_static("250"),
        );
        let p = effective_policy(Some(&policy("reset")), &h).expect("policy");
        assert!(p.retry_on.five_xx && p.retry_on.reset);
        assert_eq!(p.num_retries, 4);
        assert_eq!(p.per_try_timeout, Some(Duration::from_millis(250)));
        h.insert(RETRY_ON, HeaderValue::from_static("retriable-status-codes"));
        h.insert(
            RETRIABLE_STATUS_CODES,
            HeaderValue::from_static("409, 418,x"),
        );
        h.insert(
            RETRIABLE_HEADER_NAMES,
            HeaderValue::from_static("X-Retry-Me, "),
        );
        let p = effective_policy(None, &h).expect("policy");
        assert_eq!(p.retriable_status_codes, [409, 418]);
        assert!(is_retriable(&p, Outcome::Response(418), None));
        let mut resp = HeaderMap::new();
        resp.insert("x-retry-me", HeaderValue::from_static("1"));
        let mut p = p;
        p.retry_on.retriable_headers = true;
        assert!(is_retriable(&p, Outcome::Response(200), Some(&resp)));
        assert!(!is_retriable(&p, Outcome::Response(200), None));
        h.insert(UPSTREAM_RQ_TIMEOUT_MS, HeaderValue::from_static("0"));
        assert_eq!(route_timeout(Duration::from_secs(15), &h), None);
        strip_consumed_headers(&mut h);
        assert!(h.is_empty());
    }
}

/// Retry stats of a cluster (`cluster.<name>.upstream_rq_retry*`, …).
#[derive(Debug)]
pub struct RetryStats {
    /// `upstream_rq_retry`: retries made (counted when the back-off ends, as Envoy 1.40 does).
    pub retry: crate::stats::Counter,
    /// `upstream_rq_retry_backoff_exponential`: retries made after an exponential back-off
    /// (all of them: rate-limited back-off is not supported).
    pub backoff_exponential: crate::stats::Counter,
    /// `upstream_rq_retry_success`: requests that succeeded after at least one retry.
    pub success: crate::stats::Counter,
    /// `upstream_rq_retry_limit_exceeded`: retriable results with no retries left.
    pub limit_exceeded: crate::stats::Counter,
    /// `upstream_rq_per_try_timeout`.
    pub per_try_timeout: crate::stats::Counter,
    /// `upstream_rq_per_try_idle_timeout`.
    pub per_try_idle_timeout: crate::stats::Counter,
    /// `retry_or_shadow_abandoned`: a body too large to buffer disabled retries.
    pub abandoned: crate::stats::Counter,
}

impl RetryStats {
    /// Handles for `cluster`.
    pub fn new(store: &crate::stats::Store, cluster: &str) -> Self {
        let c = |s: &str| store.counter(&format!("cluster.{cluster}.{s}"));
        RetryStats {
            retry: c("upstream_rq_retry"),
            backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            success: c("upstream_rq_retry_success"),
            limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            per_try_timeout: c("upstream_rq_per_try_timeout"),
            per_try_idle_timeout: c("upstream_rq_per_try_idle_timeout"),
            abandoned: c("retry_or_shadow_abandoned"),
        }
    }
}
