//! `GET /clusters` in Envoy's text and JSON forms.

use crate::config::EndpointHealth;
use crate::resilience::outlier::Origin;
use crate::runtime::cluster::Cluster;
use crate::runtime::host::Host;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Envoy's `HostUtility::healthFlagsToString`: the set flags in `HealthFlag` order
/// (`FAILED_ACTIVE_HC`, `FAILED_OUTLIER_CHECK`, `FAILED_EDS_HEALTH`, `DEGRADED_ACTIVE_HC`,
/// `DEGRADED_EDS_HEALTH`, …), or `healthy`. Measured on Envoy 1.40: an ejected UNHEALTHY host
/// shows `/failed_outlier_check/failed_eds_health`.
fn health_flags(host: &Host) -> String {
    let mut flags = String::new();
    if host.outlier.is_ejected() {
        flags.push_str("/failed_outlier_check");
    }
    match host.health {
        EndpointHealth::Healthy => {}
        EndpointHealth::Degraded => flags.push_str("/degraded_eds_health"),
        EndpointHealth::Unhealthy => flags.push_str("/failed_eds_health"),
    }
    if flags.is_empty() {
        flags.push_str("healthy");
    }
    flags
}

/// A `double` as fmt's `{}` prints it (Envoy's per-host `success_rate`): the shortest
/// round-trip digits, in exponent form (`1e-05`, `1e+16`) when the decimal exponent is below
/// −4 or at least 16.
fn fmt_shortest(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        format!("{v}")
    } else {
        exp_form(mantissa, exp)
    }
}

/// A `double` as fmt's `{:g}` prints it (Envoy's cluster `outlier::` lines): six significant
/// digits, trailing zeros dropped, exponent form when the exponent is below −4 or at least 6.
fn fmt_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        let fixed = format!("{v:.*}", (5 - exp) as usize);
        trim_fraction(&fixed).to_string()
    } else {
        exp_form(trim_fraction(mantissa), exp)
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn exp_form(mantissa: &str, exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// A `google.protobuf.DoubleValue` as Envoy's JSON prints it (`{}` for 0).
fn double_value(v: f64) -> serde_json::Value {
    if v == 0.0 {
        serde_json::json!({})
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        serde_json::json!({ "value": v as i64 })
    } else {
        serde_json::json!({ "value": v })
    }
}

/// The text form: `cluster::host::stat::value` lines.
pub fn text(clusters: &[(Arc<Cluster>, bool)]) -> String {
    let mut out = String::new();
    for (c, via_api) in clusters {
        let n = &c.config.name;
        let _ = writeln!(out, "{n}::observability_name::{n}");
        if let Some(od) = c.outlier() {
            for (s, v) in [
                (
                    "success_rate_average",
                    od.success_rate_average(Origin::External),
                ),
                (
                    "success_rate_ejection_threshold",
                    od.success_rate_ejection_threshold(Origin::External),
                ),
                (
                    "local_origin_success_rate_average",
                    od.success_rate_average(Origin::Local),
                ),
                (
                    "local_origin_success_rate_ejection_threshold",
                    od.success_rate_ejection_threshold(Origin::Local),
                ),
            ] {
                let _ = writeln!(out, "{n}::outlier::{s}::{}", fmt_g(v));
            }
        }
        let cb = &c.config.circuit_breakers;
        for (prio, (cx, pending, rq, retries)) in [
            (
                "default",
                (
                    cb.max_connections,
                    cb.max_pending_requests,
                    cb.max_requests,
                    cb.max_retries,
                ),
            ),
            ("high", (1024, 1024, 1024, 3)),
        ] {
            let _ = writeln!(out, "{n}::{prio}_priority::max_connections::{cx}");
            let _ = writeln!(out, "{n}::{prio}_priority::max_pending_requests::{pending}");
            let _ = writeln!(out, "{n}::{prio}_priority::max_requests::{rq}");
            let _ = writeln!(out, "{n}::{prio}_priority::max_retries::{retries}");
        }
        let _ = writeln!(out, "{n}::added_via_api::{via_api}");
        for h in &c.hosts().all {
            let a = &h.address_text;
            let cx = h.pool.host_stats();
            let s = &h.stats;
            let rows: [(&str, u64); 9] = [
                ("cx_active", cx.cx_active.load(Ordering::Relaxed)),
                (
                    "cx_connect_fail",
                    cx.cx_connect_fail.load(Ordering::Relaxed),
                ),
                ("cx_total", cx.cx_total.load(Ordering::Relaxed)),
                ("rq_active", s.rq_active.load(Ordering::Relaxed)),
                ("rq_error", s.rq_error.load(Ordering::Relaxed)),
                ("rq_pending_active", 0),
                ("rq_success", s.rq_success.load(Ordering::Relaxed)),
                ("rq_timeout", s.rq_timeout.load(Ordering::Relaxed)),
                ("rq_total", s.rq_total.load(Ordering::Relaxed)),
            ];
            for (k, v) in rows {
                let _ = writeln!(out, "{n}::{a}::{k}::{v}");
            }
            let _ = writeln!(
                out,
                "{n}::{a}::hostname::{}",
                h.hostname.as_deref().unwrap_or("")
            );
            let _ = writeln!(out, "{n}::{a}::health_flags::{}", health_flags(h));
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight);
            for k in ["region", "zone", "sub_zone"] {
                let _ = writeln!(out, "{n}::{a}::{k}::");
            }
            let _ = writeln!(out, "{n}::{a}::canary::false");
            let _ = writeln!(out, "{n}::{a}::priority::{}", h.priority);
            let _ = writeln!(
                out,
                "{n}::{a}::success_rate::{}",
                fmt_shortest(h.outlier.success_rate(Origin::External))
            );
            let _ = writeln!(
                out,
                "{n}::{a}::local_origin_success_rate::{}",
                fmt_shortest(h.outlier.success_rate(Origin::Local))
            );
        }
    }
    out
}

/// A per-host `SimpleMetric` as Envoy's JSON prints it: fields in proto order (`type`,
/// `value`, `name`), `type` only for gauges, `value` (a 64-bit integer, so a string) left out
/// when 0.
fn metric(name: &str, value: u64, gauge: bool) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if gauge {
        m.insert("type".into(), "GAUGE".into());
    }
    if value != 0 {
        m.insert("value".into(), value.to_string().into());
    }
    m.insert("name".into(), name.into());
    serde_json::Value::Object(m)
}

/// The JSON form (`?format=json`), shaped like Envoy's `envoy.admin.v3.Clusters`: fields in
/// proto order, those at their default value (`false`, `0`, `""`) left out, as Envoy's JSON
/// does.
pub fn json(clusters: &[(Arc<Cluster>, bool)]) -> serde_json::Value {
    let statuses: Vec<serde_json::Value> = clusters
        .iter()
        .map(|(c, via_api)| {
            let hosts: Vec<serde_json::Value> = c
                .hosts()
                .all
                .iter()
                .map(|h| {
                    let cx = h.pool.host_stats();
                    let s = &h.stats;
                    let mut health = serde_json::json!({"eds_health_status": match h.health {
                        EndpointHealth::Healthy => "HEALTHY",
                        EndpointHealth::Degraded => "DEGRADED",
                        EndpointHealth::Unhealthy => "UNHEALTHY",
                    }});
                    if h.outlier.is_ejected() {
                        health["failed_outlier_check"] = true.into();
                    }
                    let mut status = serde_json::Map::new();
                    status.insert(
                        "address".into(),
                        serde_json::json!({"socket_address": {"address": h.address.ip().to_string(), "port_value": h.address.port()}}),
                    );
                    status.insert(
                        "stats".into(),
                        serde_json::json!([
                            metric("cx_connect_fail", cx.cx_connect_fail.load(Ordering::Relaxed), false),
                            metric("cx_total", cx.cx_total.load(Ordering::Relaxed), false),
                            metric("rq_error", s.rq_error.load(Ordering::Relaxed), false),
                            metric("rq_success", s.rq_success.load(Ordering::Relaxed), false),
                            metric("rq_timeout", s.rq_timeout.load(Ordering::Relaxed), false),
                            metric("rq_total", s.rq_total.load(Ordering::Relaxed), false),
                            metric("cx_active", cx.cx_active.load(Ordering::Relaxed), true),
                            metric("rq_active", s.rq_active.load(Ordering::Relaxed), true),
                            // As in the text form: not tracked per host.
                            metric("rq_pending_active", 0, true),
                        ]),
                    );
                    status.insert("health_status".into(), health);
                    // Envoy sets these only when computed (≥ 0).
                    let success_rate = |origin| {
                        let v = h.outlier.success_rate(origin);
                        (v >= 0.0).then(|| double_value(v))
                    };
                    if let Some(v) = success_rate(Origin::External) {
                        status.insert("success_rate".into(), v);
                    }
                    if h.weight != 0 {
                        status.insert("weight".into(), h.weight.into());
                    }
                    if let Some(name) = h.hostname.as_deref().filter(|n| !n.is_empty()) {
                        status.insert("hostname".into(), name.into());
                    }
                    if h.priority != 0 {
                        status.insert("priority".into(), h.priority.into());
                    }
                    if let Some(v) = success_rate(Origin::Local) {
                        status.insert("local_origin_success_rate".into(), v);
                    }
                    // Envoy always sets the host's locality (empty without one).
                    status.insert("locality".into(), serde_json::json!({}));
                    serde_json::Value::Object(status)
                })
                .collect();
            let cb = &c.config.circuit_breakers;
            let mut status = serde_json::Map::new();
            status.insert("name".into(), c.config.name.clone().into());
            if *via_api {
                status.insert("added_via_api".into(), true.into());
            }
            // Envoy sets the cluster thresholds only when positive.
            let threshold = |origin| {
                c.outlier()
                    .map(|od| od.success_rate_ejection_threshold(origin))
                    .filter(|v| *v > 0.0)
                    .map(double_value)
            };
            if let Some(v) = threshold(Origin::External) {
                status.insert("success_rate_ejection_threshold".into(), v);
            }
            if !hosts.is_empty() {
                status.insert("host_statuses".into(), hosts.into());
            }
            if let Some(v) = threshold(Origin::Local) {
                status.insert("local_origin_success_rate_ejection_threshold".into(), v);
            }
            let thresholds = |priority: Option<&str>, limits: [(&str, u64); 4]| {
                let mut t = serde_json::Map::new();
                if let Some(p) = priority {
                    t.insert("priority".into(), p.into());
                }
                for (k, v) in limits.into_iter().filter(|(_, v)| *v != 0) {
                    t.insert(k.into(), v.into());
                }
                serde_json::Value::Object(t)
            };
            status.insert(
                "circuit_breakers".into(),
                serde_json::json!({"thresholds": [
                    thresholds(None, [
                        ("max_connections", u64::from(cb.max_connections)),
                        ("max_pending_requests", u64::from(cb.max_pending_requests)),
                        ("max_requests", u64::from(cb.max_requests)),
                        ("max_retries", u64::from(cb.max_retries)),
                    ]),
                    thresholds(Some("HIGH"), [
                        ("max_connections", 1024),
                        ("max_pending_requests", 1024),
                        ("max_requests", 1024),
                        ("max_retries", 3),
                    ]),
                ]}),
            );
            status.insert("observability_name".into(), c.config.name.clone().into());
            serde_json::Value::Object(status)
        })
        .collect();
    serde_json::json!({ "cluster_statuses": statuses })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{
        CircuitBreakerThresholds, ClusterConfig, Discovery, EndpointConfig, LbPolicy,
        OutlierConfig, UpstreamProtocol,
    };
    use crate::resilience::Outcome;
    use crate::stats::Store;
    use std::time::{Duration, Instant};

    /// The scenario measured on Envoy 1.40 (`/clusters` and `/stats` after one sweep): five
    /// hosts, one answering 503 to everything, one 5 of 7, the others 200; 7 requests each.
    #[test]
    fn outlier_lines_match_envoy() {
        let eps: Vec<EndpointConfig> = (1..=5)
            .map(|i| EndpointConfig {
                address: format!("127.0.0.1:1800{i}").parse().unwrap(),
                weight: 1,
                locality_weight: 1,
                priority: 0,
                health: EndpointHealth::Healthy,
            })
            .collect();
        let store = Store::new();
        let c = Cluster::new(
            ClusterConfig {
                name: "five".into(),
                discovery: Discovery::Static(eps.clone()),
                lb: LbPolicy::RoundRobin,
                connect_timeout: Duration::from_secs(5),
                protocol: UpstreamProtocol::Http1,
                circuit_breakers: CircuitBreakerThresholds::default(),
                outlier_detection: Some(OutlierConfig {
                    consecutive_5xx: 1000,
                    consecutive_gateway_failure: 1000,
                    interval: Duration::from_secs(2),
                    success_rate_request_volume: 6,
                    failure_percentage_request_volume: 3,
                    max_ejection_percent: 100,
                    ..OutlierConfig::default()
                }),
                panic_threshold: 50.0,
                buffer_limit: 1 << 20,
                idle_timeout: None,
                max_requests_per_connection: None,
                per_host_max_connections: None,
                tls: None,
            },
            &store,
        );
        c.set_endpoints(&eps, &[]);
        let t0 = Instant::now();
        let out = text(&[(c.clone(), false)]);
        assert!(out.contains("five::outlier::success_rate_average::-1\n"));
        assert!(out.contains("five::127.0.0.1:18001::success_rate::-1\n"));
        for (i, ok) in [7, 0, 5, 7, 7].into_iter().enumerate() {
            let h = c.hosts().all[i].clone();
            for k in 0..7 {
                let status = if k < ok { 200 } else { 503 };
                c.report_at(&h, Outcome::Response(status), t0);
            }
        }
        c.outlier_tick(t0 + Duration::from_secs(2));
        let out = text(&[(c.clone(), false)]);
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.contains("outlier::success_rate")
                    || l.contains("::health_flags::")
                    || l.contains("::success_rate::")
            })
            .collect();
        assert_eq!(
            lines,
            [
                "five::outlier::success_rate_average::74.2857",
                "five::outlier::success_rate_ejection_threshold::0.648989",
                "five::127.0.0.1:18001::health_flags::healthy",
                "five::127.0.0.1:18001::success_rate::100",
                "five::127.0.0.1:18002::health_flags::/failed_outlier_check",
                "five::127.0.0.1:18002::success_rate::0",
                "five::127.0.0.1:18003::health_flags::healthy",
                "five::127.0.0.1:18003::success_rate::71.42857142857143",
                "five::127.0.0.1:18004::health_flags::healthy",
                "five::127.0.0.1:18004::success_rate::100",
                "five::127.0.0.1:18005::health_flags::healthy",
                "five::127.0.0.1:18005::success_rate::100",
            ]
        );
        let stats = store.render_text(None, false);
        let nonzero: Vec<&str> = stats
            .lines()
            .filter(|l| l.starts_with("cluster.five.outlier_detection.") && !l.ends_with(": 0"))
            .collect();
        assert_eq!(
            nonzero,
            [
                "cluster.five.outlier_detection.ejections_active: 1",
                "cluster.five.outlier_detection.ejections_detected_failure_percentage: 1",
                "cluster.five.outlier_detection.ejections_detected_success_rate: 1",
                "cluster.five.outlier_detection.ejections_enforced_success_rate: 1",
                "cluster.five.outlier_detection.ejections_enforced_total: 1",
                "cluster.five.outlier_detection.ejections_success_rate: 1",
                "cluster.five.outlier_detection.ejections_total: 1",
            ]
        );
        let json = json(&[(c.clone(), false)]);
        let hosts = &json["cluster_statuses"][0]["host_statuses"];
        assert_eq!(hosts[1]["health_status"]["failed_outlier_check"], true);
        assert_eq!(hosts[1]["success_rate"], serde_json::json!({}));
        assert_eq!(hosts[2]["success_rate"]["value"], 500.0 / 7.0);
        assert_eq!(hosts[0]["success_rate"].to_string(), r#"{"value":100}"#);
        assert!(
            hosts[0]["health_status"]
                .get("failed_outlier_check")
                .is_none()
        );
        assert!(hosts[0].get("local_origin_success_rate").is_none());
        let threshold = json["cluster_statuses"][0]["success_rate_ejection_threshold"]["value"]
            .as_f64()
            .unwrap();
        assert!((threshold - 0.648_989).abs() < 1e-6);
    }

    #[test]
    fn doubles_print_as_envoy_prints_them() {
        // `{}`: values measured on Envoy 1.40's /clusters, then fmt's exponent rules.
        assert_eq!(fmt_shortest(-1.0), "-1");
        assert_eq!(fmt_shortest(100.0), "100");
        assert_eq!(fmt_shortest(0.0), "0");
        assert_eq!(fmt_shortest(62.5), "62.5");
        assert_eq!(fmt_shortest(500.0 / 7.0), "71.42857142857143");
        assert_eq!(fmt_shortest(0.0001), "0.0001");
        assert_eq!(fmt_shortest(0.00001), "1e-05");
        assert_eq!(fmt_shortest(1.5e16), "1.5e+16");
        assert_eq!(fmt_shortest(1e15), "1000000000000000");
        // `{:g}`: 74.2857, 0.648989, -1.69737, 80, 4 measured on Envoy 1.40.
        assert_eq!(fmt_g(-1.0), "-1");
        assert_eq!(fmt_g(80.0), "80");
        assert_eq!(fmt_g(4.0), "4");
        assert_eq!(fmt_g(520.0 / 7.0), "74.2857");
        assert_eq!(fmt_g(0.648_989_2), "0.648989");
        assert_eq!(fmt_g(-1.697_366), "-1.69737");
        assert_eq!(fmt_g(99.999_999), "100");
        assert_eq!(fmt_g(0.000_012_345_67), "1.23457e-05");
        assert_eq!(fmt_g(1_234_567.0), "1.23457e+06");
        assert_eq!(fmt_g(123_456.0), "123456");
        assert_eq!(fmt_g(0.0), "0");
    }

    #[test]
    fn double_values_in_json() {
        assert_eq!(double_value(0.0), serde_json::json!({}));
        assert_eq!(double_value(100.0).to_string(), r#"{"value":100}"#);
        assert_eq!(double_value(62.5).to_string(), r#"{"value":62.5}"#);
    }
}
