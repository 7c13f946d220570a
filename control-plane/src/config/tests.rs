//! Loader tests: exact `file:line:col` messages, defaults, and a full example.

use super::*;
use crate::model::{
    Backoff, CircuitBreaker, Endpoint, Enforcing, FailurePercentage, Host, LbPolicy,
    OutlierDetection, Protocol, RetriableHeader, RetryBudget, RetryPolicy, Route, RouteAction,
    RouteMatch, SuccessRate, Tls,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Loads `text` as `svc.yaml` and returns the rendered errors (panics when it loads).
fn errors(text: &str) -> Vec<String> {
    match load_str(Path::new("svc.yaml"), text) {
        Ok(config) => panic!("expected errors, loaded {config:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Loads `text` as `svc.yaml`, panicking with the errors when it does not load.
fn config(text: &str) -> Config {
    match load_str(Path::new("svc.yaml"), text) {
        Ok(config) => config,
        Err(errors) => panic!(
            "expected success:\n{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        ),
    }
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Host {
    Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

#[test]
fn unknown_key_with_hint() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retires: { attempts: 3 }
    colour: blue
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:4:5: unknown key `retires` in service `payments`; did you mean `retries`?",
            "svc.yaml:5:5: unknown key `colour` in service `payments`",
        ]
    );
}

#[test]
fn unknown_nested_and_top_level_keys() {
    let text = "\
servics: {}
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retries: { atempts: 3 }
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:1:1: unknown key `servics` in the top level; did you mean `services`?",
            "svc.yaml:5:16: unknown key `atempts` in `retries` of service `payments`; did you mean `attempts`?",
        ]
    );
}

#[test]
fn bad_durations() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    timeout: 5
    connect_timeout: 2 seconds
    retries: { per_try_timeout: 0s }
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:4:14: invalid `timeout`: `5` has no unit; write a unit, e.g. `5s` or `5ms`",
            "svc.yaml:5:22: invalid `connect_timeout`: `2 seconds` has an unknown unit ` seconds`; use one of us, ms, s, m, h",
            "svc.yaml:6:33: `per_try_timeout` must be greater than 0",
        ]
    );
}

#[test]
fn bad_endpoints() {
    let text = "\
services:
  payments:
    endpoints:
      - 127.0.0.1:9001
      - 10.0.0.1:99999
      - { address: '::1:80', weight: 0 }
      - { weight: 2 }
      - [a]
  empty:
    endpoints: []
  silent: {}
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:5:9: invalid endpoint `10.0.0.1:99999`: port `99999` must be between 1 and 65535",
            "svc.yaml:6:20: invalid endpoint `::1:80`: IPv6 addresses go in brackets, e.g. `[::1]:8080`",
            "svc.yaml:6:38: `weight` must be between 1 and 4294967295, found `0`",
            "svc.yaml:7:9: endpoint needs an `address` (host:port)",
            "svc.yaml:8:9: an endpoint is `host:port` or `{ address: host:port, weight: N }`, found a list",
            "svc.yaml:9:3: service `empty` needs at least one endpoint under `endpoints:`",
            "svc.yaml:11:3: service `silent` needs at least one endpoint under `endpoints:`",
        ]
    );
}

#[test]
fn unknown_retry_name() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retries:
      on: [5xx, rset, connect-failure, teapot]
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:5:17: unknown retry condition `rset`; did you mean `reset`?",
            "svc.yaml:5:40: unknown retry condition `teapot`",
        ]
    );
}

#[test]
fn grpc_retry_name_needs_grpc_protocol() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    protocol: http2
    retries: { on: [unavailable, 5xx] }
  orders:
    endpoints: [127.0.0.1:9002]
    protocol: grpc
    retries: { on: [unavailable, 5xx, deadline-exceeded] }
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:5:21: retry condition `unavailable` is for gRPC only; service `payments` needs `protocol: grpc` to use it",
        ]
    );
    let ok = config(&text.replace("protocol: http2", "protocol: grpc"));
    assert_eq!(
        ok.services["orders"].retries.as_ref().map(|r| r.on.clone()),
        Some(vec![
            "unavailable".to_string(),
            "5xx".to_string(),
            "deadline-exceeded".to_string()
        ])
    );
}

#[test]
fn resilience_percents_out_of_range() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    healthy_panic_threshold: 100.5
    outlier_detection:
      enforcing: { consecutive_5xx: 101, success_rate: -5, failure_percentage: 12.5 }
  orders:
    endpoints: [127.0.0.1:9002]
    healthy_panic_threshold: lots
    outlier_detection:
      enforcing:
        consecutive_gateway_failure: 250
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:4:30: `healthy_panic_threshold` must be between 0 and 100, found `100.5`",
            "svc.yaml:6:37: `consecutive_5xx` must be between 0 and 100, found `101`",
            "svc.yaml:6:56: `success_rate` must not be negative, found `-5`",
            "svc.yaml:6:80: `failure_percentage` must be a whole number, found `12.5`",
            "svc.yaml:9:30: `healthy_panic_threshold` must be a number, found `lots`",
            "svc.yaml:12:38: `consecutive_gateway_failure` must be between 0 and 100, found `250`",
        ]
    );
}

#[test]
fn local_origin_needs_split() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    outlier_detection:
      consecutive_local_origin_failure: 3
      enforcing: { consecutive_local_origin_failure: 100 }
  orders:
    endpoints: [127.0.0.1:9002]
    outlier_detection:
      split_local_origin_errors: false
      consecutive_local_origin_failure: 3
  ok:
    endpoints: [127.0.0.1:9003]
    outlier_detection:
      consecutive_local_origin_failure: 3
      split_local_origin_errors: true
      enforcing: { consecutive_local_origin_failure: 50 }
  typo:
    endpoints: [127.0.0.1:9004]
    outlier_detection:
      split_local_origin_errors: yes
      consecutive_local_origin_failure: 3
";
    let why = "needs `split_local_origin_errors: true`: Envoy counts local-origin failures (connect failures, timeouts, resets) on their own only when they are split from the upstream's errors, and ignores this key otherwise";
    assert_eq!(
        errors(text),
        vec![
            format!("svc.yaml:5:7: `consecutive_local_origin_failure` {why}"),
            format!("svc.yaml:6:20: `enforcing.consecutive_local_origin_failure` {why}"),
            format!("svc.yaml:11:7: `consecutive_local_origin_failure` {why}"),
            // An invalid `split_local_origin_errors` is reported once, not again at its users.
            "svc.yaml:21:34: `split_local_origin_errors` must be true or false, found `yes`"
                .to_string(),
        ]
    );
    let (start, end) = (text.find("  ok:").unwrap(), text.find("  typo:").unwrap());
    let ok = config(&format!("services:\n{}", &text[start..end]));
    let od = ok.services["ok"].outlier_detection.clone().unwrap();
    assert!(od.split_local_origin_errors);
    assert_eq!(od.consecutive_local_origin_failure, Some(3));
    assert_eq!(od.enforcing.consecutive_local_origin_failure, Some(50));
}

#[test]
fn max_ejection_time_not_below_base() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    outlier_detection: { base_ejection_time: 60s, max_ejection_time: 30s }
  orders:
    endpoints: [127.0.0.1:9002]
    outlier_detection: { base_ejection_time: 600s, max_ejection_time: 600s }
  billing:
    endpoints: [127.0.0.1:9003]
    outlier_detection: { base_ejection_time: 600s }
";
    assert_eq!(
        errors(text),
        vec!["svc.yaml:4:70: `max_ejection_time` must not be less than `base_ejection_time`"]
    );
}

#[test]
fn unknown_key_in_enforcing() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    outlier_detection:
      enforcing:
        sucess_rate: 50
        consecutive_5xx: 10
        local_origin_success_rate: 100
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:6:9: unknown key `sucess_rate` in `enforcing` of `outlier_detection` of service `payments`; did you mean `success_rate`?",
            "svc.yaml:8:9: unknown key `local_origin_success_rate` in `enforcing` of `outlier_detection` of service `payments`",
        ]
    );
}

#[test]
fn retry_host_selection_and_headers() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    retries:
      host_selection_attempts: 3
      per_try_idle_timeout: 0s
      retriable_headers: [x-retry, 'x retry', 'x-a:', ': v', [x], { a: 1, b: 2 }]
  orders:
    endpoints: [127.0.0.1:9002]
    retries:
      previous_hosts: false
      host_selection_attempts: 0
  billing:
    endpoints: [127.0.0.1:9003]
    retries:
      previous_hosts: 'yes'
      host_selection_attempts: 2
      retriable_headers:
        - x-upstream: [busy]
        - x-b: \"a\\nb\"
  shipping:
    endpoints: [127.0.0.1:9004]
    retries:
      previous_hosts: false
      host_selection_attempts: 2
";
    let why = "`host_selection_attempts` needs `previous_hosts: true`: Envoy picks a host again only when a retry host predicate rejects one, and ignores this key otherwise";
    assert_eq!(
        errors(text),
        vec![
            format!("svc.yaml:5:7: {why}"),
            "svc.yaml:6:29: `per_try_idle_timeout` must be greater than 0".to_string(),
            "svc.yaml:7:36: invalid header name `x retry`: use letters, digits and `-` (e.g. `x-retry`); a retriable header is `name` or `name: value`".to_string(),
            "svc.yaml:7:47: retriable header `x-a` has an empty value; write `x-a` alone to match any value".to_string(),
            "svc.yaml:7:55: a retriable header needs a name, e.g. `x-retry` or `x-upstream: busy`".to_string(),
            "svc.yaml:7:62: a retriable header is `name` or `name: value`, e.g. `x-retry` or `\"x-upstream: busy\"`, found a list".to_string(),
            "svc.yaml:7:67: a retriable header is `name` or `name: value`, e.g. `x-retry` or `\"x-upstream: busy\"`, found a mapping".to_string(),
            "svc.yaml:12:32: `host_selection_attempts` must be between 1 and 4294967295, found `0`".to_string(),
            "svc.yaml:16:23: `previous_hosts` must be true or false, found the text `\"yes\"`".to_string(),
            "svc.yaml:19:23: the value of retriable header `x-upstream` must be text, found a list".to_string(),
            "svc.yaml:20:16: the value of retriable header `x-b` must not contain control characters".to_string(),
            format!("svc.yaml:25:7: {why}"),
        ]
    );
}

#[test]
fn attempt_count_header_is_a_boolean() {
    let text = "\
services:
  payments: { endpoints: [127.0.0.1:9001] }
ambassadors:
  web:
    listen: 127.0.0.1:10000
    attempt_count_header: on
    attemp_count_header: true
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:6:27: `attempt_count_header` must be true or false, found `on`",
            "svc.yaml:7:5: unknown key `attemp_count_header` in ambassador `web`; did you mean `attempt_count_header`?",
        ]
    );
}

#[test]
fn route_to_unknown_service_points_at_the_route() {
    let text = "\
services:
  payments: { endpoints: [127.0.0.1:9001] }
  inventory: { endpoints: [127.0.0.1:9002] }
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
    services: [paymnets, inventory]
    routes:
      - { prefix: /pay/, service: paymnets }
      - { prefix: /inv/, service: inventory }
      - { prefix: /api/, split: { payments: 90, shipping: 10 } }
      - prefix: /x/
        service: payments
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:7:16: unknown service `paymnets`; did you mean `payments`?",
            "svc.yaml:9:35: unknown service `paymnets`; did you mean `payments`?",
            "svc.yaml:11:35: route sends to service `payments`, which is not in the `services` of ambassador `checkout`",
            "svc.yaml:11:49: unknown service `shipping`",
            "svc.yaml:13:18: route sends to service `payments`, which is not in the `services` of ambassador `checkout`",
        ]
    );
}

#[test]
fn route_shape_errors_point_at_the_route_item() {
    let text = "\
services:
  payments: { endpoints: [127.0.0.1:9001] }
ambassadors:
  checkout:
    routes:
      - { service: payments }
      - { prefix: /a, path: /b, service: payments }
      - { prefix: a/, split: {} }
      - { path: /c, service: payments, split: { payments: 1 } }
      - { path: /d, split: { payments: 0 } }
      - path: /e
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:4:3: ambassador `checkout` needs `listen` (e.g. `listen: 127.0.0.1:10000`)",
            "svc.yaml:6:9: a route needs `prefix` or `path`",
            "svc.yaml:7:9: a route takes `prefix` or `path`, not both",
            "svc.yaml:8:19: `prefix` must start with `/`, found `a/`",
            "svc.yaml:8:30: `split` needs at least one service",
            "svc.yaml:9:9: a route takes `service` or `split`, not both",
            "svc.yaml:10:40: the weight of `payments` must be between 1 and 4294967295, found `0`",
            "svc.yaml:11:9: a route needs `service` or `split`",
        ]
    );
}

#[test]
fn duplicate_service_across_files_names_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yml");
    std::fs::write(
        &a,
        "# payments\nservices:\n  payments:\n    endpoints: [127.0.0.1:9001]\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "services:\n  other: { endpoints: [127.0.0.1:9003] }\n  payments: { endpoints: [127.0.0.1:9002] }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "services: [").unwrap();
    std::fs::write(dir.path().join(".#a.yaml"), "services: [").unwrap();
    let errors = load(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:3:3: service `payments` is defined twice; first at {}:3:3",
            b.display(),
            a.display()
        )
    );
    assert_eq!(errors[0].file, b);

    // Without the duplicate, both files merge.
    std::fs::write(&b, "services:\n  other: { endpoints: [127.0.0.1:9003] }\n").unwrap();
    let config = load(dir.path()).unwrap();
    assert_eq!(
        config.services.keys().collect::<Vec<_>>(),
        vec!["other", "payments"]
    );
    assert_eq!(config.services["payments"].location.file, a);
    assert_eq!(config.services["other"].location.file, b);
}

#[test]
fn duplicate_keys_in_one_file() {
    let text = "\
services:
  payments:
    endpoints: [127.0.0.1:9001]
    lb: random
    lb: maglev
  payments: { endpoints: [127.0.0.1:9002] }
ambassadors:
  web: { listen: 127.0.0.1:10000 }
  web: { listen: 127.0.0.1:10001 }
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:5:5: duplicate key `lb` in service `payments`; first at svc.yaml:4:5",
            "svc.yaml:6:3: service `payments` is defined twice; first at svc.yaml:2:3",
            "svc.yaml:9:3: ambassador `web` is defined twice; first at svc.yaml:8:3",
        ]
    );
}

#[test]
fn yaml_syntax_error_position() {
    assert_eq!(
        errors("services:\n  a: [1, 2\n  b: 3\n"),
        vec!["svc.yaml:3:4: invalid YAML: illegal placement of ':' indicator"]
    );
    assert_eq!(
        errors("services:\n  payments:\n    endpoints: \"127.0.0.1:1\n"),
        vec![
            "svc.yaml:3:16: invalid YAML: while scanning a quoted scalar, found unexpected end of stream"
        ]
    );
}

#[test]
fn multiple_errors_at_once_sorted() {
    let text = "\
ambassadors:
  web:
    listen: localhost:80
    services: [nope]
services:
  payments:
    endpoints: [127.0.0.1:9001]
    protocol: http3
    lb: roundrobin
    circuit_breaker: { max_connections: -1, max_requests: lots }
    outlier_detection: { max_ejection_percent: 101, interval: 0s }
    retries:
      status_codes: [503, 600]
      backoff: { max: 1s }
      budget: { percent: 120 }
  bad name: { endpoints: [127.0.0.1:9001] }
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:3:13: invalid listen address `localhost:80` (a host name is not allowed here; use an IP address): write IP:port, e.g. `127.0.0.1:10000` or `[::1]:10000`",
            "svc.yaml:4:16: unknown service `nope`",
            "svc.yaml:8:15: unknown protocol `http3`; did you mean `http1`? (expected one of: http1, http2, grpc)",
            "svc.yaml:9:9: unknown lb `roundrobin`; did you mean `round_robin`? (expected one of: round_robin, least_request, random, ring_hash, maglev)",
            "svc.yaml:10:41: `max_connections` must not be negative, found `-1`",
            "svc.yaml:10:59: `max_requests` must be a number, found `lots`",
            "svc.yaml:11:48: `max_ejection_percent` must be between 0 and 100, found `101`",
            "svc.yaml:11:63: `interval` must be greater than 0",
            "svc.yaml:13:27: a status code must be between 100 and 599, found `600`",
            "svc.yaml:14:16: `backoff` of `retries` of service `payments` needs `base` (e.g. `base: 25ms`)",
            "svc.yaml:15:26: `percent` must be between 0 and 100, found `120`",
            "svc.yaml:16:3: invalid service name `bad name`: use only letters, digits, `_`, `.` and `-`",
        ]
    );
}

#[test]
fn wrong_types_are_reported_at_the_node() {
    let text = "\
services:
  a:
    endpoints: 127.0.0.1:9001
  b: [127.0.0.1:9001]
  c:
    endpoints: [127.0.0.1:9001]
    retries: [3]
    tls: { verify_san: [''], sni: { x: 1 } }
ambassadors: [x]
";
    assert_eq!(
        errors(text),
        vec![
            "svc.yaml:3:16: `endpoints` must be a list, e.g. `[a, b]`, found `127.0.0.1:9001`",
            "svc.yaml:4:6: service `b` must be a mapping (`key: value`), found a list",
            "svc.yaml:7:14: `retries` of service `c` must be a mapping (`key: value`), found a list",
            "svc.yaml:8:25: a `verify_san` entry must not be empty",
            "svc.yaml:8:35: `sni` must be text, found a mapping",
            "svc.yaml:9:14: `ambassadors` must be a mapping of names to definitions, found a list",
        ]
    );
}

#[test]
fn tls_files_and_pairs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "ca").unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let file = dir.path().join("svc.yaml");
    let text = "\
services:
  a:
    endpoints: [127.0.0.1:9001]
    tls: { ca: ca.pem, cert: ca.pem }
  b:
    endpoints: [127.0.0.1:9001]
    tls: { ca: missing.pem, key: adir }
";
    let errors: Vec<String> = load_str(&file, text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let f = file.display();
    let d = dir.path().display();
    assert_eq!(
        errors,
        vec![
            format!(
                "{f}:4:10: `tls` of service `a` has `cert` but no `key`; give both for mTLS, or neither"
            ),
            format!(
                "{f}:4:16: `ca` file `{d}/ca.pem` has no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks"
            ),
            format!(
                "{f}:4:30: `cert` file `{d}/ca.pem` has no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks"
            ),
            format!(
                "{f}:7:10: `tls` of service `b` has `key` but no `cert`; give both for mTLS, or neither"
            ),
            format!(
                "{f}:7:16: cannot read `ca` file `{d}/missing.pem`: No such file or directory (os error 2)"
            ),
            format!("{f}:7:34: cannot read `key` file `{d}/adir`: not a file"),
        ]
    );
}

#[test]
fn defaults_when_the_file_is_silent() {
    let config = config(
        "\
services:
  zeta:
    endpoints: [zeta.internal:80]
  alpha:
    endpoints: ['[::1]:8080']
ambassadors:
  web:
    listen: '[::1]:10000'
",
    );
    let alpha = &config.services["alpha"];
    assert_eq!(alpha.name, "alpha");
    assert_eq!(alpha.protocol, Protocol::Http1);
    assert_eq!(alpha.lb, LbPolicy::RoundRobin);
    assert_eq!(alpha.endpoints[0].weight, 1);
    assert_eq!(alpha.connect_timeout, None);
    assert_eq!(alpha.timeout, None);
    assert_eq!(alpha.retries, None);
    assert_eq!(alpha.circuit_breaker, None);
    assert_eq!(alpha.outlier_detection, None);
    assert_eq!(alpha.tls, None);
    assert_eq!(alpha.healthy_panic_threshold, None);
    assert!(!alpha.uses_dns());
    assert!(config.services["zeta"].uses_dns());
    assert_eq!(
        (alpha.location.line, alpha.location.col),
        (4, 3),
        "located at its key"
    );
    let web = &config.ambassadors["web"];
    assert_eq!(web.services, vec!["alpha", "zeta"], "all services, sorted");
    assert!(web.routes.is_empty());
    assert!(!web.attempt_count_header);
    assert_eq!(web.listen, "[::1]:10000".parse().unwrap());
    assert_eq!((web.location.line, web.location.col), (7, 3));
}

#[test]
fn empty_and_comment_only_files_are_valid() {
    for text in [
        "",
        "# nothing yet\n",
        "services:\nambassadors:\n",
        "---\n",
        "~\n",
    ] {
        assert_eq!(config(text), Config::default(), "{text:?}");
    }
    assert_eq!(
        errors("[services]\n"),
        vec!["svc.yaml:1:1: the top level must be a mapping (`key: value`), found a list"]
    );
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let config = config(
        "\
services:
  base: &defaults
    protocol: http2
    timeout: &t 3s
    endpoints: [127.0.0.1:9000]
  a:
    <<: *defaults
    endpoints: [127.0.0.1:9001]
  b:
    <<: *defaults
    protocol: grpc
    endpoints: [127.0.0.1:9002]
    connect_timeout: *t
",
    );
    assert_eq!(config.services["a"].protocol, Protocol::Http2);
    assert_eq!(config.services["a"].timeout, Some(Duration::from_secs(3)));
    assert_eq!(config.services["a"].endpoints[0].port, 9001);
    assert_eq!(config.services["b"].protocol, Protocol::Grpc);
    assert_eq!(
        config.services["b"].connect_timeout,
        Some(Duration::from_secs(3))
    );
}

#[test]
fn missing_paths_and_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let errors = load(dir.path()).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: no *.yaml or *.yml files in this directory",
            dir.path().display()
        )
    );
    let missing = dir.path().join("missing.yaml");
    let errors = load(&missing).unwrap_err();
    assert_eq!(errors[0].file, missing);
    assert!(errors[0].location.is_none());
    assert!(
        errors[0]
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );

    std::fs::write(dir.path().join("bad.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let errors = load(dir.path()).unwrap_err();
    assert_eq!(errors[0].file, dir.path().join("bad.yaml"));
}

#[test]
fn full_example_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    crate::certs::init(&crate::certs::InitOptions::new(
        &certs,
        "example.org",
        &["client"],
    ))
    .unwrap();
    let pem = |name: &str| crate::model::PemFile {
        path: certs.join(name),
        pem: std::fs::read(certs.join(name)).unwrap(),
    };
    let file = dir.path().join("legate.yaml");
    std::fs::write(&file, FULL_EXAMPLE).unwrap();
    let config = match load(&file) {
        Ok(config) => config,
        Err(errors) => panic!("{errors:#?}"),
    };

    let payments = &config.services["payments"];
    assert_eq!(payments.name, "payments");
    assert_eq!(
        payments.endpoints,
        vec![
            Endpoint {
                host: ip(127, 0, 0, 1),
                port: 9001,
                weight: 1
            },
            Endpoint {
                host: ip(127, 0, 0, 1),
                port: 9002,
                weight: 3
            },
        ]
    );
    assert_eq!(payments.protocol, Protocol::Http1);
    assert_eq!(payments.connect_timeout, Some(Duration::from_secs(1)));
    assert_eq!(payments.lb, LbPolicy::RoundRobin);
    assert_eq!(payments.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        payments.retries,
        Some(RetryPolicy {
            attempts: Some(3),
            on: vec!["5xx".into(), "reset".into(), "connect-failure".into()],
            status_codes: vec![503],
            per_try_timeout: Some(Duration::from_secs(1)),
            per_try_idle_timeout: Some(Duration::from_secs(2)),
            previous_hosts: true,
            host_selection_attempts: Some(3),
            retriable_headers: vec![
                RetriableHeader {
                    name: "x-retry".into(),
                    value: None
                },
                RetriableHeader {
                    name: "x-upstream".into(),
                    value: Some("busy".into())
                },
            ],
            backoff: Some(Backoff {
                base: Duration::from_millis(25),
                max: Some(Duration::from_millis(250)),
            }),
            budget: Some(RetryBudget {
                percent: Some(20.0),
                min_concurrency: Some(3),
            }),
        })
    );
    assert_eq!(
        payments.circuit_breaker,
        Some(CircuitBreaker {
            max_connections: Some(1024),
            max_pending_requests: Some(1024),
            max_requests: Some(1024),
            max_retries: Some(3),
            max_connections_per_host: Some(16),
        })
    );
    assert_eq!(
        payments.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: Some(5),
            interval: Some(Duration::from_secs(10)),
            base_ejection_time: Some(Duration::from_secs(30)),
            max_ejection_time: Some(Duration::from_secs(300)),
            max_ejection_percent: Some(10),
            success_rate: Some(SuccessRate {
                minimum_hosts: Some(5),
                request_volume: Some(100),
                stdev_factor: Some(1900),
            }),
            failure_percentage: Some(FailurePercentage {
                threshold: Some(85),
                minimum_hosts: Some(5),
                request_volume: Some(50),
            }),
            split_local_origin_errors: true,
            consecutive_local_origin_failure: Some(4),
            enforcing: Enforcing {
                consecutive_5xx: Some(90),
                consecutive_gateway_failure: Some(0),
                consecutive_local_origin_failure: Some(80),
                success_rate: Some(70),
                failure_percentage: Some(60),
            },
        })
    );
    assert_eq!(payments.healthy_panic_threshold, Some(40.0));
    assert_eq!(
        payments.tls,
        Some(Tls {
            ca: Some(pem("ca.pem")),
            identity: Some(crate::model::Identity {
                cert: pem("client.pem"),
                key: crate::model::PrivateKeyPem::new(
                    certs.join("client.key"),
                    std::fs::read(certs.join("client.key")).unwrap()
                ),
            }),
            sni: Some("payments.internal".into()),
            verify_san: vec![crate::model::SanMatcher::Uri(
                "spiffe://example.org/ns/default/sa/payments".into()
            )],
            min_version: None,
            alpn: vec!["http/1.1".into()],
        })
    );
    assert_eq!(
        payments.location,
        Location {
            file: file.clone(),
            line: 2,
            col: 3
        }
    );

    let canary = &config.services["payments-canary"];
    assert_eq!(canary.protocol, Protocol::Grpc);
    assert_eq!(canary.lb, LbPolicy::LeastRequest);
    assert_eq!(canary.timeout, Some(Duration::ZERO));
    assert_eq!(
        canary.endpoints,
        vec![Endpoint {
            host: Host::Dns("canary.payments.svc".into()),
            port: 443,
            weight: 1
        }]
    );
    assert!(canary.uses_dns());
    assert_eq!(
        canary.retries.as_ref().map(|r| r.retriable_headers.clone()),
        Some(vec![
            RetriableHeader {
                name: "grpc-retry".into(),
                value: None
            },
            RetriableHeader {
                name: "x-upstream".into(),
                value: Some("busy".into())
            },
        ]),
        "a block list item `name: value` is a one-key mapping"
    );
    assert_eq!(canary.healthy_panic_threshold, None);
    assert_eq!(
        canary.retries.as_ref().and_then(|r| r.budget.clone()),
        Some(RetryBudget {
            percent: Some(12.5),
            min_concurrency: None
        })
    );
    assert_eq!(
        config.services["inventory"].endpoints[0].host,
        Host::Ip("::1".parse().unwrap())
    );

    let checkout = &config.ambassadors["checkout"];
    assert_eq!(checkout.name, "checkout");
    assert_eq!(checkout.listen, "127.0.0.1:10000".parse().unwrap());
    assert_eq!(
        checkout.services,
        vec!["inventory", "payments", "payments-canary"],
        "sorted and deduplicated"
    );
    let at = |line| Location {
        file: file.clone(),
        line,
        col: 9,
    };
    assert_eq!(
        checkout.routes,
        vec![
            Route {
                matcher: RouteMatch::Prefix("/pay/".into()),
                action: RouteAction::Service("payments".into()),
                rewrite: Some("/".into()),
                location: at(63),
            },
            Route {
                matcher: RouteMatch::Prefix("/api/".into()),
                action: RouteAction::Split(vec![
                    ("payments".into(), 90),
                    ("payments-canary".into(), 10)
                ]),
                rewrite: None,
                location: at(64),
            },
            Route {
                matcher: RouteMatch::Path("/exact".into()),
                action: RouteAction::Service("payments".into()),
                rewrite: None,
                location: at(65),
            },
        ]
    );
    assert_eq!((checkout.location.line, checkout.location.col), (59, 3));
    assert!(!checkout.attempt_count_header);
    assert!(config.ambassadors["admin"].attempt_count_header);
    assert_eq!(config.ambassadors["admin"].services, vec!["inventory"]);
    assert_eq!(config.ambassadors["admin"].routes[0].location, at(70));
}

const FULL_EXAMPLE: &str = "\
services:
  payments:                          # service name = Envoy cluster name; chars [A-Za-z0-9_.-]
    endpoints:                       # host:port — IPv4, [IPv6] or a DNS name (→ Host::Dns)
      - 127.0.0.1:9001
      - { address: 127.0.0.1:9002, weight: 3 }   # weight >= 1, default 1
    protocol: http1                  # http1 | http2 | grpc   (default http1)
    connect_timeout: 1s
    lb: round_robin                  # round_robin | least_request | random | ring_hash | maglev
    timeout: 5s                      # route timeout; 0s = none (Some(ZERO)); absent = None
    retries:
      attempts: 3                    # num_retries
      on: [5xx, reset, connect-failure]
      status_codes: [503]            # 100..=599
      per_try_timeout: 1s            # > 0
      per_try_idle_timeout: 2s       # > 0
      previous_hosts: true
      host_selection_attempts: 3     # >= 1, needs previous_hosts
      retriable_headers: [x-retry, \"X-Upstream: busy\"]
      backoff: { base: 25ms, max: 250ms }   # base > 0 required if backoff given; max >= base
      budget: { percent: 20, min_concurrency: 3 }   # percent 0..=100 (float ok)
    circuit_breaker: { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3, max_connections_per_host: 16 }
    outlier_detection:
      consecutive_5xx: 5
      consecutive_gateway_failure: 5
      interval: 10s                  # > 0
      base_ejection_time: 30s        # > 0
      max_ejection_time: 300s        # > 0
      max_ejection_percent: 10       # 0..=100
      success_rate: { minimum_hosts: 5, request_volume: 100, stdev_factor: 1900 }
      failure_percentage: { threshold: 85, minimum_hosts: 5, request_volume: 50 }  # threshold 0..=100
      split_local_origin_errors: true
      consecutive_local_origin_failure: 4   # needs split_local_origin_errors
      enforcing: { consecutive_5xx: 90, consecutive_gateway_failure: 0, consecutive_local_origin_failure: 80, success_rate: 70, failure_percentage: 60 }
    healthy_panic_threshold: 40      # 0..=100 (float ok)
    tls:
      ca: certs/ca.pem               # paths relative to the YAML file's directory
      cert: certs/client.pem         # cert and key: both or neither
      key: certs/client.key
      sni: payments.internal
      verify_san: [\"spiffe://example.org/ns/default/sa/payments\"]
  payments-canary:
    endpoints: [canary.payments.svc:443]
    protocol: grpc
    lb: least_request
    timeout: 0s
    retries:
      on: [unavailable, 5xx]
      budget: { percent: 12.5 }
      retriable_headers:
        - grpc-retry
        - x-upstream: busy
  inventory:
    endpoints: ['[::1]:9100']
#
#
#
#
ambassadors:                         # one per application
  checkout:
    listen: 127.0.0.1:10000          # IP:port socket address (IPv6 as [::1]:10000)
    services: [payments, inventory, payments-canary, payments]
    routes:                          # optional explicit routes
      - { prefix: /pay/, service: payments, rewrite: / }
      - { prefix: /api/, split: { payments: 90, payments-canary: 10 } }
      - { path: /exact, service: payments }
  admin:
    listen: '[::1]:10001'
    services: [inventory]
    routes:
      - path: /stock
        service: inventory
    attempt_count_header: true
";

#[test]
fn mangled_input_never_panics() {
    let base = FULL_EXAMPLE;
    let chars: Vec<char> = base.chars().collect();
    let specials = [
        "[", "]", "{", "}", ":", "- ", "&a ", "*a", "'", "\"", "\t", "? ", "!", "|", "<<: ", "%",
        "\n  ", "@", "#", ",", "~",
    ];
    for i in (0..chars.len()).step_by(3) {
        let head: String = chars[..i].iter().collect();
        let tail: String = chars[i + 1..].iter().collect();
        let _ = load_str(Path::new("svc.yaml"), &head);
        let special = specials[i % specials.len()];
        let _ = load_str(Path::new("svc.yaml"), &format!("{head}{special}{tail}"));
    }
}
