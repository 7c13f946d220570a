//! The shipped example must stay valid, and must show every key the loader knows.

use legate_control_plane::config;
use serde_json::{Value, json};
use std::path::Path;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services.yaml")
}

#[test]
fn example_is_valid() {
    let c = config::load(&example())
        .unwrap_or_else(|errors| panic!("{}", config::error_lines(&errors)));
    assert_eq!(c.ambassadors["checkout"].routes.len(), 3);
    let p = &c.services["payments"];
    assert!(p.retries.is_some() && p.circuit_breaker.is_some() && p.outlier_detection.is_some());
}

/// Every key the loader accepts, as written in YAML. A new key belongs here and in the example
/// (with its comment), so the example keeps documenting everything.
const KEYS: &[&str] = &[
    // top level
    "services",
    "ambassadors",
    // service
    "endpoints",
    "address",
    "weight",
    "protocol",
    "connect_timeout",
    "lb",
    "timeout",
    "healthy_panic_threshold",
    "retries",
    "circuit_breaker",
    "outlier_detection",
    "tls",
    // retries
    "attempts",
    "on",
    "status_codes",
    "retriable_headers",
    "per_try_timeout",
    "per_try_idle_timeout",
    "previous_hosts",
    "host_selection_attempts",
    "backoff",
    "base",
    "max",
    "budget",
    "percent",
    "min_concurrency",
    // circuit_breaker
    "max_connections",
    "max_pending_requests",
    "max_requests",
    "max_retries",
    "max_connections_per_host",
    // outlier_detection
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "interval",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejection_percent",
    "success_rate",
    "minimum_hosts",
    "request_volume",
    "stdev_factor",
    "failure_percentage",
    "threshold",
    "split_local_origin_errors",
    "consecutive_local_origin_failure",
    "enforcing",
    // tls
    "ca",
    "cert",
    "key",
    "sni",
    "verify_san",
    "dns",
    "min_version",
    "alpn",
    // ambassador
    "listen",
    "attempt_count_header",
    "routes",
    "prefix",
    "path",
    "service",
    "split",
    "rewrite",
];

#[test]
fn example_shows_every_key() {
    let text = std::fs::read_to_string(example()).expect("readable");
    let missing: Vec<&&str> = KEYS
        .iter()
        .filter(|key| !text.contains(&format!("{key}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
}

#[test]
fn example_renders() {
    let c = config::load(&example()).expect("valid");
    let out = legate_control_plane::render::render(&c, "checkout").expect("render");
    assert_eq!(out["clusters"].as_array().map(Vec::len), Some(3));
    assert_eq!(out["listeners"][0]["name"], "checkout");
}

fn payments_cluster(out: &Value) -> &Value {
    out["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "payments"))
        .expect("payments cluster")
}

#[test]
fn example_render_has_the_resilience_keys() {
    let c = config::load(&example()).expect("valid");
    let out = legate_control_plane::render::render(&c, "checkout").expect("render");

    let routes = &out["routes"][0];
    let hosts = routes["virtual_hosts"].as_array().expect("virtual hosts");
    assert_eq!(hosts.len(), 4, "three services and the catch-all");
    for vh in hosts {
        assert_eq!(vh["include_request_attempt_count"], true, "{}", vh["name"]);
    }
    let payments = hosts
        .iter()
        .find(|vh| vh["name"] == "payments")
        .expect("payments virtual host");
    let retry = &payments["routes"][0]["route"]["retry_policy"];
    assert_eq!(
        retry["retry_on"],
        "5xx,reset,connect-failure,retriable-status-codes,retriable-headers"
    );
    assert_eq!(retry["per_try_idle_timeout"], "2s");
    assert_eq!(
        retry["retry_host_predicate"],
        json!([{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            }
        }])
    );
    // int64 is a string in protobuf's JSON mapping.
    assert_eq!(retry["host_selection_retry_max_attempts"], "3");
    assert_eq!(
        retry["retriable_headers"],
        json!([
            { "name": "x-retry", "present_match": true },
            { "name": "x-upstream", "string_match": { "exact": "busy" } }
        ])
    );

    let cluster = payments_cluster(&out);
    assert_eq!(
        cluster["circuit_breakers"]["per_host_thresholds"],
        json!([{ "max_connections": 64 }])
    );
    assert_eq!(
        cluster["common_lb_config"]["healthy_panic_threshold"],
        json!({ "value": 50.0 })
    );
    let od = &cluster["outlier_detection"];
    assert_eq!(od["split_external_local_origin_errors"], true);
    assert_eq!(od["consecutive_local_origin_failure"], 5);
    for field in [
        "enforcing_consecutive_5xx",
        "enforcing_consecutive_gateway_failure",
        "enforcing_consecutive_local_origin_failure",
        "enforcing_success_rate",
        "enforcing_failure_percentage",
    ] {
        assert_eq!(od[field], 100, "{field}");
    }
}
