//! `GET /clusters` in Envoy's text and JSON forms.

use crate::config::EndpointHealth;
use crate::runtime::cluster::Cluster;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn health_flags(host: &crate::runtime::host::Host) -> String {
    match host.health {
        EndpointHealth::Healthy => "healthy".to_string(),
        EndpointHealth::Degraded => "/degraded_eds_health".to_string(),
        EndpointHealth::Unhealthy => "/failed_eds_health".to_string(),
    }
}

/// The text form: `cluster::host::stat::value` lines.
pub fn text(clusters: &[(Arc<Cluster>, bool)]) -> String {
    let mut out = String::new();
    for (c, via_api) in clusters {
        let n = &c.config.name;
        let _ = writeln!(out, "{n}::observability_name::{n}");
        if c.config.outlier_detection.is_some() {
            for s in [
                "success_rate_average",
                "success_rate_ejection_threshold",
                "local_origin_success_rate_average",
                "local_origin_success_rate_ejection_threshold",
            ] {
                let _ = writeln!(out, "{n}::outlier::{s}::-1");
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
            let _ = writeln!(out, "{n}::{a}::success_rate::-1");
            let _ = writeln!(out, "{n}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

/// The JSON form (`?format=json`), shaped like Envoy's `envoy.admin.v3.Clusters`.
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
                    let counter = |name: &str, v: u64| serde_json::json!({"name": name, "value": v.to_string()});
                    let gauge = |name: &str, v: u64| serde_json::json!({"name": name, "type": "GAUGE", "value": v.to_string()});
                    serde_json::json!({
                        "address": {"socket_address": {"address": h.address.ip().to_string(), "port_value": h.address.port()}},
                        "stats": [
                            counter("cx_connect_fail", cx.cx_connect_fail.load(Ordering::Relaxed)),
                            counter("cx_total", cx.cx_total.load(Ordering::Relaxed)),
                            counter("rq_error", s.rq_error.load(Ordering::Relaxed)),
                            counter("rq_success", s.rq_success.load(Ordering::Relaxed)),
                            counter("rq_timeout", s.rq_timeout.load(Ordering::Relaxed)),
                            counter("rq_total", s.rq_total.load(Ordering::Relaxed)),
                            gauge("cx_active", cx.cx_active.load(Ordering::Relaxed)),
                            gauge("rq_active", s.rq_active.load(Ordering::Relaxed)),
                        ],
                        "health_status": {"eds_health_status": match h.health {
                            EndpointHealth::Healthy => "HEALTHY",
                            EndpointHealth::Degraded => "DEGRADED",
                            EndpointHealth::Unhealthy => "UNHEALTHY",
                        }},
                        "weight": h.weight,
                        "priority": h.priority,
                        "hostname": h.hostname.clone().unwrap_or_default(),
                    })
                })
                .collect();
            let cb = &c.config.circuit_breakers;
            serde_json::json!({
                "name": c.config.name,
                "observability_name": c.config.name,
                "added_via_api": via_api,
                "host_statuses": hosts,
                "circuit_breakers": {"thresholds": [
                    {"max_connections": cb.max_connections, "max_pending_requests": cb.max_pending_requests, "max_requests": cb.max_requests, "max_retries": cb.max_retries},
                    {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
                ]},
            })
        })
        .collect();
    serde_json::json!({ "cluster_statuses": statuses })
}
