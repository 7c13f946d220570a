//! One entry under `services:` → [`Service`].

use super::address;
use super::node::{Kind, Node};
use super::reader::{
    Diag, MapReader, boolean, describe, did_you_mean, duration, list, percent, positive_duration,
    string, u16_in, u32_in, u32_value,
};
use crate::model::{
    Backoff, CircuitBreaker, Endpoint, Enforcing, FailurePercentage, LbPolicy, Location,
    OutlierDetection, Protocol, RetriableHeader, RetryBudget, RetryPolicy, Service, SuccessRate,
};
use std::path::Path;

/// Envoy's HTTP `retry_on` conditions.
pub(crate) const HTTP_RETRY_ON: [&str; 11] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// Envoy's gRPC `retry_on` conditions (only for `protocol: grpc`).
pub(crate) const GRPC_RETRY_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const PROTOCOLS: [(&str, Protocol); 3] = [
    ("http1", Protocol::Http1),
    ("http2", Protocol::Http2),
    ("grpc", Protocol::Grpc),
];

const LB_POLICIES: [(&str, LbPolicy); 5] = [
    ("round_robin", LbPolicy::RoundRobin),
    ("least_request", LbPolicy::LeastRequest),
    ("random", LbPolicy::Random),
    ("ring_hash", LbPolicy::RingHash),
    ("maglev", LbPolicy::Maglev),
];

/// Reads the service `name`, defined by the key at `key_loc` with value `node`. Returns `None`
/// when anything is wrong (and records why in `diag`).
pub(crate) fn build(
    name: &str,
    key_loc: &Location,
    node: &Node,
    diag: &mut Diag,
) -> Option<Service> {
    let errors_before = diag.count();
    let what = format!("service `{name}`");
    let mut m = MapReader::new(node, what.clone(), diag)?;

    let endpoints = endpoints(&mut m, name, key_loc, diag);
    let protocol = m
        .get("protocol")
        .and_then(|n| one_of(n, "protocol", &PROTOCOLS, diag))
        .unwrap_or_default();
    let connect_timeout = m
        .get("connect_timeout")
        .and_then(|n| positive_duration(n, "`connect_timeout`", diag));
    let lb = m
        .get("lb")
        .and_then(|n| one_of(n, "lb", &LB_POLICIES, diag))
        .unwrap_or_default();
    let timeout = m
        .get("timeout")
        .and_then(|n| duration(n, "`timeout`", diag));
    let retries = m
        .get("retries")
        .and_then(|n| retries(n, &format!("`retries` of {what}"), name, protocol, diag));
    let circuit_breaker = m
        .get("circuit_breaker")
        .and_then(|n| circuit_breaker(n, &format!("`circuit_breaker` of {what}"), diag));
    let outlier_detection = m
        .get("outlier_detection")
        .and_then(|n| outlier_detection(n, &format!("`outlier_detection` of {what}"), diag));
    let healthy_panic_threshold = m
        .get("healthy_panic_threshold")
        .and_then(|n| percent(n, "`healthy_panic_threshold`", diag));
    let base_dir = key_loc.file.parent().unwrap_or(Path::new(""));
    let tls = m
        .get("tls")
        .and_then(|n| super::tls::build(n, &format!("`tls` of {what}"), base_dir, protocol, diag));
    m.finish(diag);

    if diag.count() > errors_before {
        return None;
    }
    Some(Service {
        name: name.to_string(),
        endpoints,
        protocol,
        connect_timeout,
        lb,
        timeout,
        retries,
        circuit_breaker,
        outlier_detection,
        healthy_panic_threshold,
        tls,
        location: key_loc.clone(),
    })
}

fn endpoints(
    m: &mut MapReader<'_>,
    name: &str,
    key_loc: &Location,
    diag: &mut Diag,
) -> Vec<Endpoint> {
    let missing = format!("service `{name}` needs at least one endpoint under `endpoints:`");
    let Some(node) = m.get("endpoints") else {
        diag.at(key_loc, missing);
        return Vec::new();
    };
    let Some(items) = list(node, "`endpoints`", diag) else {
        return Vec::new();
    };
    if items.is_empty() {
        diag.at(key_loc, missing);
    }
    items
        .iter()
        .filter_map(|item| endpoint(item, diag))
        .collect()
}

fn endpoint(node: &Node, diag: &mut Diag) -> Option<Endpoint> {
    let (address_node, weight) = match &node.kind {
        Kind::Scalar { .. } => (Some(node), Some(1)),
        Kind::Map(_) => {
            let mut m = MapReader::new(node, "endpoint", diag)?;
            let address = m.get("address");
            let weight = match m.get("weight") {
                Some(n) => u32_in(n, "`weight`", 1, u32::MAX, diag),
                None => Some(1),
            };
            m.finish(diag);
            if address.is_none() {
                diag.at(&node.loc, "endpoint needs an `address` (host:port)");
            }
            (address, weight)
        }
        _ => {
            diag.at(
                &node.loc,
                format!(
                    "an endpoint is `host:port` or `{{ address: host:port, weight: N }}`, found {}",
                    describe(node)
                ),
            );
            return None;
        }
    };
    let address_node = address_node?;
    let text = string(address_node, "`address`", diag)?;
    let (host, port) = address::parse_endpoint(&text)
        .map_err(|message| diag.at(&address_node.loc, message))
        .ok()?;
    Some(Endpoint {
        host,
        port,
        weight: weight?,
    })
}

/// One of a fixed set of names.
fn one_of<T: Copy>(node: &Node, key: &str, choices: &[(&str, T)], diag: &mut Diag) -> Option<T> {
    let text = string(node, &format!("`{key}`"), diag)?;
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Some(*value);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let hint = did_you_mean(&text, names.iter().copied());
    diag.at(
        &node.loc,
        format!(
            "unknown {key} `{text}`{hint} (expected one of: {})",
            names.join(", ")
        ),
    );
    None
}

fn retries(
    node: &Node,
    what: &str,
    service: &str,
    protocol: Protocol,
    diag: &mut Diag,
) -> Option<RetryPolicy> {
    let mut m = MapReader::new(node, what, diag)?;
    let attempts = m
        .get("attempts")
        .and_then(|n| u32_value(n, "`attempts`", diag));
    let on = m
        .get("on")
        .and_then(|n| list(n, "`on`", diag))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| retry_on(item, service, protocol, diag))
                .collect()
        })
        .unwrap_or_default();
    let status_codes = m
        .get("status_codes")
        .and_then(|n| list(n, "`status_codes`", diag))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| u16_in(item, "a status code", 100, 599, diag))
                .collect()
        })
        .unwrap_or_default();
    let per_try_timeout = m
        .get("per_try_timeout")
        .and_then(|n| positive_duration(n, "`per_try_timeout`", diag));
    let per_try_idle_timeout = m
        .get("per_try_idle_timeout")
        .and_then(|n| positive_duration(n, "`per_try_idle_timeout`", diag));
    // `None` when absent, `Some(None)` when written but invalid (already reported).
    let previous_hosts = m
        .get("previous_hosts")
        .map(|n| boolean(n, "`previous_hosts`", diag));
    let host_selection_attempts = m.entry("host_selection_attempts").and_then(|(key, n)| {
        let attempts = u32_in(n, "`host_selection_attempts`", 1, u32::MAX, diag)?;
        if matches!(previous_hosts, None | Some(Some(false))) {
            // Envoy re-picks a host only when a retry host predicate rejects one, so without
            // previous_hosts the value would silently do nothing.
            diag.at(
                &key.loc,
                "`host_selection_attempts` needs `previous_hosts: true`: Envoy picks a host again only when a retry host predicate rejects one, and ignores this key otherwise",
            );
            return None;
        }
        Some(attempts)
    });
    let retriable_headers = m
        .get("retriable_headers")
        .and_then(|n| list(n, "`retriable_headers`", diag))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| retriable_header(item, diag))
                .collect()
        })
        .unwrap_or_default();
    let backoff = m
        .get("backoff")
        .and_then(|n| backoff(n, &format!("`backoff` of {what}"), diag));
    let budget = m
        .get("budget")
        .and_then(|n| budget(n, &format!("`budget` of {what}"), diag));
    m.finish(diag);
    Some(RetryPolicy {
        attempts,
        on,
        status_codes,
        per_try_timeout,
        per_try_idle_timeout,
        previous_hosts: previous_hosts.flatten().unwrap_or(false),
        host_selection_attempts,
        retriable_headers,
        backoff,
        budget,
    })
}

/// One `retriable_headers` entry: `name` (the header is present) or `name: value` (its value is
/// exactly `value`), written as text (`"x-upstream: busy"`) or as a one-key mapping.
fn retriable_header(node: &Node, diag: &mut Diag) -> Option<RetriableHeader> {
    const SHAPE: &str = "a retriable header is `name` or `name: value`";
    let (name_node, name, value) = match &node.kind {
        Kind::Scalar { text, .. } => match text.split_once(':') {
            None => (node, text.trim().to_string(), None),
            Some((name, value)) => (node, name.trim().to_string(), Some((node, value.trim()))),
        },
        Kind::Map(entries) if entries.len() == 1 => {
            let (key, value) = &entries[0];
            let name = string(key, "a header name", diag)?;
            let text = match &value.kind {
                Kind::Scalar { text, .. } => text.as_str(),
                _ => {
                    diag.at(
                        &value.loc,
                        format!(
                            "the value of retriable header `{name}` must be text, found {}",
                            describe(value)
                        ),
                    );
                    return None;
                }
            };
            (key, name.trim().to_string(), Some((value, text.trim())))
        }
        _ => {
            diag.at(
                &node.loc,
                format!(
                    "{SHAPE}, e.g. `x-retry` or `\"x-upstream: busy\"`, found {}",
                    describe(node)
                ),
            );
            return None;
        }
    };
    if name.is_empty() {
        diag.at(
            &name_node.loc,
            "a retriable header needs a name, e.g. `x-retry` or `x-upstream: busy`",
        );
        return None;
    }
    if !name.bytes().all(is_token_byte) {
        diag.at(
            &name_node.loc,
            format!(
                "invalid header name `{name}`: use letters, digits and `-` (e.g. `x-retry`); {SHAPE}"
            ),
        );
        return None;
    }
    let value = match value {
        None => None,
        Some((at, "")) => {
            diag.at(
                &at.loc,
                format!(
                    "retriable header `{name}` has an empty value; write `{name}` alone to match any value"
                ),
            );
            return None;
        }
        Some((at, text)) if text.chars().any(|c| c.is_control() && c != '\t') => {
            diag.at(
                &at.loc,
                format!(
                    "the value of retriable header `{name}` must not contain control characters"
                ),
            );
            return None;
        }
        Some((_, text)) => Some(text.to_string()),
    };
    Some(RetriableHeader {
        name: name.to_ascii_lowercase(),
        value,
    })
}

/// A character allowed in an HTTP header name (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn retry_on(node: &Node, service: &str, protocol: Protocol, diag: &mut Diag) -> Option<String> {
    let name = string(node, "a retry condition", diag)?;
    if HTTP_RETRY_ON.contains(&name.as_str()) {
        return Some(name);
    }
    if GRPC_RETRY_ON.contains(&name.as_str()) {
        if protocol == Protocol::Grpc {
            return Some(name);
        }
        diag.at(
            &node.loc,
            format!(
                "retry condition `{name}` is for gRPC only; service `{service}` needs `protocol: grpc` to use it"
            ),
        );
        return None;
    }
    let candidates = HTTP_RETRY_ON.iter().chain(if protocol == Protocol::Grpc {
        GRPC_RETRY_ON.iter()
    } else {
        [].iter()
    });
    let hint = did_you_mean(&name, candidates.copied());
    diag.at(&node.loc, format!("unknown retry condition `{name}`{hint}"));
    None
}

fn backoff(node: &Node, what: &str, diag: &mut Diag) -> Option<Backoff> {
    let mut m = MapReader::new(node, what, diag)?;
    let base = m.get("base");
    let base_value = base.and_then(|n| positive_duration(n, "`base`", diag));
    let max = m.entry("max");
    let max_value = max.and_then(|(_, n)| positive_duration(n, "`max`", diag));
    m.finish(diag);
    if base.is_none() {
        diag.at(
            &node.loc,
            format!("{what} needs `base` (e.g. `base: 25ms`)"),
        );
        return None;
    }
    let base_value = base_value?;
    if let (Some((_, max_node)), Some(max_value)) = (max, max_value)
        && max_value < base_value
    {
        diag.at(&max_node.loc, "`max` must not be less than `base`");
        return None;
    }
    Some(Backoff {
        base: base_value,
        max: max_value,
    })
}

fn budget(node: &Node, what: &str, diag: &mut Diag) -> Option<RetryBudget> {
    let mut m = MapReader::new(node, what, diag)?;
    let percent = m.get("percent").and_then(|n| percent(n, "`percent`", diag));
    let min_concurrency = m
        .get("min_concurrency")
        .and_then(|n| u32_value(n, "`min_concurrency`", diag));
    m.finish(diag);
    Some(RetryBudget {
        percent,
        min_concurrency,
    })
}

fn circuit_breaker(node: &Node, what: &str, diag: &mut Diag) -> Option<CircuitBreaker> {
    let mut m = MapReader::new(node, what, diag)?;
    let mut field = |key: &'static str| {
        m.get(key)
            .and_then(|n| u32_value(n, &format!("`{key}`"), diag))
    };
    let cb = CircuitBreaker {
        max_connections: field("max_connections"),
        max_pending_requests: field("max_pending_requests"),
        max_requests: field("max_requests"),
        max_retries: field("max_retries"),
        max_connections_per_host: field("max_connections_per_host"),
    };
    m.finish(diag);
    Some(cb)
}

fn outlier_detection(node: &Node, what: &str, diag: &mut Diag) -> Option<OutlierDetection> {
    let mut m = MapReader::new(node, what, diag)?;
    let consecutive_5xx = m
        .get("consecutive_5xx")
        .and_then(|n| u32_value(n, "`consecutive_5xx`", diag));
    let consecutive_gateway_failure = m
        .get("consecutive_gateway_failure")
        .and_then(|n| u32_value(n, "`consecutive_gateway_failure`", diag));
    let interval = m
        .get("interval")
        .and_then(|n| positive_duration(n, "`interval`", diag));
    let base_ejection_time = m
        .get("base_ejection_time")
        .and_then(|n| positive_duration(n, "`base_ejection_time`", diag));
    let max_ejection_node = m.get("max_ejection_time");
    let max_ejection_time =
        max_ejection_node.and_then(|n| positive_duration(n, "`max_ejection_time`", diag));
    let max_ejection_percent = m
        .get("max_ejection_percent")
        .and_then(|n| u32_in(n, "`max_ejection_percent`", 0, 100, diag));
    let success_rate = m
        .get("success_rate")
        .and_then(|n| success_rate(n, &format!("`success_rate` of {what}"), diag));
    let failure_percentage = m
        .get("failure_percentage")
        .and_then(|n| failure_percentage(n, &format!("`failure_percentage` of {what}"), diag));
    // `None` when absent, `Some(None)` when written but invalid (already reported).
    let split = m
        .get("split_local_origin_errors")
        .map(|n| boolean(n, "`split_local_origin_errors`", diag));
    // Local-origin keys are reported as useless only when the file clearly does not split.
    let not_split = matches!(split, None | Some(Some(false)));
    let split_local_origin_errors = split.flatten().unwrap_or(false);
    let local_origin = m.entry("consecutive_local_origin_failure");
    let consecutive_local_origin_failure =
        local_origin.and_then(|(_, n)| u32_value(n, "`consecutive_local_origin_failure`", diag));
    let enforcing_what = format!("`enforcing` of {what}");
    let enforcing = m
        .get("enforcing")
        .and_then(|n| enforcing(n, &enforcing_what, not_split, diag))
        .unwrap_or_default();
    m.finish(diag);
    if let Some((key, _)) = local_origin
        && not_split
    {
        diag.at(&key.loc, needs_split("consecutive_local_origin_failure"));
    }
    // Envoy rejects the cluster otherwise. (With `max_ejection_time` unset, Envoy uses the larger
    // of 300 s and `base_ejection_time`.)
    if let (Some(base), Some(max), Some(node)) =
        (base_ejection_time, max_ejection_time, max_ejection_node)
        && max < base
    {
        diag.at(
            &node.loc,
            "`max_ejection_time` must not be less than `base_ejection_time`",
        );
    }
    Some(OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_failure,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
        success_rate,
        failure_percentage,
        split_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing,
    })
}

/// Why a local-origin key needs `split_local_origin_errors: true`.
fn needs_split(key: &str) -> String {
    format!(
        "`{key}` needs `split_local_origin_errors: true`: Envoy counts local-origin failures (connect failures, timeouts, resets) on their own only when they are split from the upstream's errors, and ignores this key otherwise"
    )
}

/// The `enforcing` percentages. `not_split` tells that local-origin errors are not split, so
/// that `consecutive_local_origin_failure` would have no effect.
fn enforcing(node: &Node, what: &str, not_split: bool, diag: &mut Diag) -> Option<Enforcing> {
    let mut m = MapReader::new(node, what, diag)?;
    let mut field = |key: &'static str| {
        m.get(key)
            .and_then(|n| u32_in(n, &format!("`{key}`"), 0, 100, diag))
    };
    let consecutive_5xx = field("consecutive_5xx");
    let consecutive_gateway_failure = field("consecutive_gateway_failure");
    let success_rate = field("success_rate");
    let failure_percentage = field("failure_percentage");
    let local_origin = m.entry("consecutive_local_origin_failure");
    let consecutive_local_origin_failure = local_origin
        .and_then(|(_, n)| u32_in(n, "`consecutive_local_origin_failure`", 0, 100, diag));
    m.finish(diag);
    if let Some((key, _)) = local_origin
        && not_split
    {
        diag.at(
            &key.loc,
            needs_split("enforcing.consecutive_local_origin_failure"),
        );
    }
    Some(Enforcing {
        consecutive_5xx,
        consecutive_gateway_failure,
        consecutive_local_origin_failure,
        success_rate,
        failure_percentage,
    })
}

fn success_rate(node: &Node, what: &str, diag: &mut Diag) -> Option<SuccessRate> {
    let mut m = MapReader::new(node, what, diag)?;
    let mut field = |key: &'static str| {
        m.get(key)
            .and_then(|n| u32_value(n, &format!("`{key}`"), diag))
    };
    let sr = SuccessRate {
        minimum_hosts: field("minimum_hosts"),
        request_volume: field("request_volume"),
        stdev_factor: field("stdev_factor"),
    };
    m.finish(diag);
    Some(sr)
}

fn failure_percentage(node: &Node, what: &str, diag: &mut Diag) -> Option<FailurePercentage> {
    let mut m = MapReader::new(node, what, diag)?;
    let threshold = m
        .get("threshold")
        .and_then(|n| u32_in(n, "`threshold`", 0, 100, diag));
    let minimum_hosts = m
        .get("minimum_hosts")
        .and_then(|n| u32_value(n, "`minimum_hosts`", diag));
    let request_volume = m
        .get("request_volume")
        .and_then(|n| u32_value(n, "`request_volume`", diag));
    m.finish(diag);
    Some(FailurePercentage {
        threshold,
        minimum_hosts,
        request_volume,
    })
}
