//! Translation tests: the Envoy fields each resilience key produces, and what stays unset.

use super::*;
use crate::config::load_str;
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::cluster::v3::{OutlierDetection, circuit_breakers};
use legate_proto::pb::envoy::config::core::v3::RoutingPriority;
use legate_proto::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, header_matcher::HeaderMatchSpecifier, retry_policy, route,
};
use legate_proto::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use legate_proto::pb::envoy::r#type::v3::Percent;
use legate_proto::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use std::path::Path;

fn load(text: &str) -> Config {
    load_str(Path::new("t.yaml"), text)
        .unwrap_or_else(|errors| panic!("{}", crate::config::error_lines(&errors)))
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

/// The retry policy of every route of the ambassador `amb`, which must all be the same.
fn retry_policy_of(config: &Config, amb: &str) -> Option<RetryPolicy> {
    let routes = route_configuration(config, &config.ambassadors[amb]);
    let policies: Vec<Option<RetryPolicy>> = routes
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .map(|r| match &r.action {
            Some(route::Action::Route(a)) => a.retry_policy.clone(),
            other => panic!("not a route action: {other:?}"),
        })
        .collect();
    assert!(!policies.is_empty());
    assert!(policies.iter().all(|p| *p == policies[0]), "{policies:#?}");
    policies[0].clone()
}

fn outlier_of(config: &Config, service: &str) -> OutlierDetection {
    cluster(&config.services[service])
        .outlier_detection
        .expect("outlier detection")
}

const RETRIES: &str = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retries:
      attempts: 2
      on: [connect-failure]
      status_codes: [503]
      per_try_timeout: 1s
      per_try_idle_timeout: 2s
      previous_hosts: true
      host_selection_attempts: 4
      retriable_headers: [X-Retry, \"x-upstream: busy\"]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
    attempt_count_header: true
";

#[test]
fn retry_policy_with_every_new_key() {
    let config = load(RETRIES);
    let policy = retry_policy_of(&config, "checkout").expect("retry policy");
    let predicate = retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            legate_proto::any::pack(&PreviousHostsPredicate {}),
        )),
    };
    let expected = RetryPolicy {
        retry_on: "connect-failure,retriable-status-codes,retriable-headers".into(),
        num_retries: u32v(2),
        per_try_timeout: secs(1),
        per_try_idle_timeout: secs(2),
        retriable_status_codes: vec![503],
        retry_host_predicate: vec![predicate],
        host_selection_retry_max_attempts: 4,
        retriable_headers: vec![
            HeaderMatcher {
                name: "x-retry".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                ..Default::default()
            },
            HeaderMatcher {
                name: "x-upstream".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("busy".into())),
                    ignore_case: false,
                })),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(policy, expected);
    let typed = match &policy.retry_host_predicate[0].config_type {
        Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => any,
        None => panic!("no typed_config"),
    };
    assert_eq!(
        typed.type_url,
        "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    );
    unpack::<PreviousHostsPredicate>(typed).expect("unpacks");
}

#[test]
fn implied_retry_on_names_are_not_repeated() {
    let config = load(&RETRIES.replace(
        "on: [connect-failure]",
        "on: [retriable-headers, retriable-status-codes]",
    ));
    let policy = retry_policy_of(&config, "checkout").expect("retry policy");
    assert_eq!(policy.retry_on, "retriable-headers,retriable-status-codes");
}

#[test]
fn new_retry_keys_unset_leave_envoy_defaults() {
    let config = load(
        "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retries: { on: [5xx], previous_hosts: false }
ambassadors:
  checkout: { listen: 127.0.0.1:10000 }
",
    );
    let policy = retry_policy_of(&config, "checkout").expect("retry policy");
    assert_eq!(
        policy,
        RetryPolicy {
            retry_on: "5xx".into(),
            ..Default::default()
        }
    );
    let routes = route_configuration(&config, &config.ambassadors["checkout"]);
    assert!(
        routes
            .virtual_hosts
            .iter()
            .all(|vh| !vh.include_request_attempt_count)
    );
}

#[test]
fn previous_hosts_alone_keeps_envoy_host_selection_default() {
    let config = load(&RETRIES.replace("      host_selection_attempts: 4\n", ""));
    let policy = retry_policy_of(&config, "checkout").expect("retry policy");
    assert_eq!(policy.retry_host_predicate.len(), 1);
    assert_eq!(
        policy.host_selection_retry_max_attempts, 0,
        "unset, so Envoy's default (1) applies"
    );
}

#[test]
fn attempt_count_header_on_every_virtual_host() {
    let config = load(RETRIES);
    let routes = route_configuration(&config, &config.ambassadors["checkout"]);
    assert_eq!(routes.virtual_hosts.len(), 2, "payments, and the catch-all");
    for vh in &routes.virtual_hosts {
        assert!(vh.include_request_attempt_count, "{}", vh.name);
        assert!(!vh.include_attempt_count_in_response, "{}", vh.name);
    }
}

#[test]
fn per_host_max_connections_and_panic_threshold() {
    let config = load(
        "\
services:
  a:
    endpoints: [127.0.0.1:9001]
    circuit_breaker: { max_connections: 100, max_connections_per_host: 8 }
    healthy_panic_threshold: 12.5
  b:
    endpoints: [127.0.0.1:9002]
    circuit_breaker: { max_requests: 10 }
    healthy_panic_threshold: 0
  c:
    endpoints: [127.0.0.1:9003]
",
    );
    let a = cluster(&config.services["a"]);
    let cb = a.circuit_breakers.expect("breakers");
    assert_eq!(
        cb.thresholds,
        vec![circuit_breakers::Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: u32v(100),
            ..Default::default()
        }]
    );
    assert_eq!(
        cb.per_host_thresholds,
        vec![circuit_breakers::Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: u32v(8),
            ..Default::default()
        }]
    );
    assert_eq!(
        a.common_lb_config.and_then(|c| c.healthy_panic_threshold),
        Some(Percent { value: 12.5 })
    );

    let b = cluster(&config.services["b"]);
    assert!(
        b.circuit_breakers
            .expect("breakers")
            .per_host_thresholds
            .is_empty()
    );
    assert_eq!(
        b.common_lb_config.and_then(|c| c.healthy_panic_threshold),
        Some(Percent { value: 0.0 }),
        "0 is written (it disables panic mode), not left to Envoy's 50"
    );

    let c = cluster(&config.services["c"]);
    assert_eq!(c.circuit_breakers, None);
    assert_eq!(c.common_lb_config, None);
}

#[test]
fn outlier_local_origin_and_enforcing() {
    let config = load(
        "\
services:
  a:
    endpoints: [127.0.0.1:9001]
    outlier_detection:
      split_local_origin_errors: true
      consecutive_local_origin_failure: 3
      enforcing:
        consecutive_5xx: 90
        consecutive_gateway_failure: 80
        consecutive_local_origin_failure: 70
        success_rate: 60
        failure_percentage: 50
",
    );
    let od = outlier_of(&config, "a");
    assert_eq!(
        od,
        OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: u32v(3),
            enforcing_consecutive_5xx: u32v(90),
            enforcing_consecutive_gateway_failure: u32v(80),
            enforcing_consecutive_local_origin_failure: u32v(70),
            enforcing_success_rate: u32v(60),
            enforcing_failure_percentage: u32v(50),
            ..Default::default()
        }
    );
}

#[test]
fn written_detectors_are_enforced_unless_enforcing_says_otherwise() {
    let config = load(
        "\
services:
  default-rule:
    endpoints: [127.0.0.1:9001]
    outlier_detection:
      consecutive_gateway_failure: 3
      failure_percentage: { threshold: 90 }
  overridden:
    endpoints: [127.0.0.1:9002]
    outlier_detection:
      consecutive_gateway_failure: 3
      failure_percentage: { threshold: 90 }
      enforcing: { consecutive_gateway_failure: 0, failure_percentage: 25 }
  silent:
    endpoints: [127.0.0.1:9003]
    outlier_detection: { consecutive_5xx: 7 }
",
    );
    let d = outlier_of(&config, "default-rule");
    assert_eq!(d.enforcing_consecutive_gateway_failure, u32v(100));
    assert_eq!(d.enforcing_failure_percentage, u32v(100));

    let o = outlier_of(&config, "overridden");
    assert_eq!(o.consecutive_gateway_failure, u32v(3));
    assert_eq!(o.enforcing_consecutive_gateway_failure, u32v(0));
    assert_eq!(o.failure_percentage_threshold, u32v(90));
    assert_eq!(o.enforcing_failure_percentage, u32v(25));

    let s = outlier_of(&config, "silent");
    assert_eq!(
        s,
        OutlierDetection {
            consecutive_5xx: u32v(7),
            ..Default::default()
        },
        "nothing written, nothing enforced beyond Envoy's defaults"
    );
}
