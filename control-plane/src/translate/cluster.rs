//! Service → `Cluster`: discovery type, LB policy, timeouts, circuit breakers, outlier detection,
//! the upstream HTTP protocol and the TLS transport socket (`secret.rs`).

use super::endpoint::load_assignment;
use super::util::{ads_config_source, duration, u32_value};
use crate::model::{LbPolicy, RetryBudget, Service};
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers::Thresholds,
    circuit_breakers::thresholds, cluster,
};
use legate_proto::pb::envoy::config::core::v3::{Http2ProtocolOptions, RoutingPriority};
use legate_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::ExplicitHttpConfig,
    http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use legate_proto::pb::envoy::r#type::v3::Percent;

/// The key under which Envoy reads upstream HTTP protocol options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Translates one service into its cluster.
pub fn cluster(svc: &Service) -> Cluster {
    let mut c = Cluster {
        name: svc.name.clone(),
        connect_timeout: svc.connect_timeout.map(duration),
        lb_policy: lb_policy(svc.lb) as i32,
        circuit_breakers: circuit_breakers(svc),
        outlier_detection: svc.outlier_detection.as_ref().map(outlier_detection),
        common_lb_config: svc
            .healthy_panic_threshold
            .map(|value| cluster::CommonLbConfig {
                healthy_panic_threshold: Some(Percent { value }),
                ..Default::default()
            }),
        ..Default::default()
    };
    if svc.uses_dns() {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        c.load_assignment = Some(load_assignment(svc));
        // Deviation from Envoy's AUTO (IPv6 first): an ambassador's `localhost:PORT` should reach
        // an IPv4 listener; IPv6 stays the fallback. Documented in docs/compat.md.
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    } else {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ));
        c.eds_cluster_config = Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        });
    }
    if svc.protocol.is_http2() {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&options));
    }
    if let Some(tls) = &svc.tls {
        c.transport_socket = Some(super::secret::transport_socket(svc, tls));
    }
    c
}

fn lb_policy(lb: LbPolicy) -> cluster::LbPolicy {
    match lb {
        LbPolicy::RoundRobin => cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::Random => cluster::LbPolicy::Random,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
    }
}

/// Thresholds for the default priority, present only when the file sets a breaker or a budget.
fn circuit_breakers(svc: &Service) -> Option<CircuitBreakers> {
    let budget = svc.retries.as_ref().and_then(|r| r.budget.as_ref());
    let cb = svc.circuit_breaker.as_ref();
    if cb.is_none() && budget.is_none() {
        return None;
    }
    let mut t = Thresholds {
        priority: RoutingPriority::Default as i32,
        retry_budget: budget.map(retry_budget),
        ..Default::default()
    };
    let mut per_host_thresholds = Vec::new();
    if let Some(cb) = cb {
        t.max_connections = cb.max_connections.map(u32_value);
        t.max_pending_requests = cb.max_pending_requests.map(u32_value);
        t.max_requests = cb.max_requests.map(u32_value);
        t.max_retries = cb.max_retries.map(u32_value);
        // Envoy reads only `max_connections` from per-host thresholds.
        if let Some(max) = cb.max_connections_per_host {
            per_host_thresholds.push(Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: Some(u32_value(max)),
                ..Default::default()
            });
        }
    }
    Some(CircuitBreakers {
        thresholds: vec![t],
        per_host_thresholds,
    })
}

fn retry_budget(b: &RetryBudget) -> thresholds::RetryBudget {
    thresholds::RetryBudget {
        budget_percent: b.percent.map(|value| Percent { value }),
        min_retry_concurrency: b.min_concurrency.map(u32_value),
        ..Default::default()
    }
}

fn outlier_detection(od: &crate::model::OutlierDetection) -> OutlierDetection {
    let mut out = OutlierDetection {
        consecutive_5xx: od.consecutive_5xx.map(u32_value),
        consecutive_gateway_failure: od.consecutive_gateway_failure.map(u32_value),
        interval: od.interval.map(duration),
        base_ejection_time: od.base_ejection_time.map(duration),
        max_ejection_time: od.max_ejection_time.map(duration),
        max_ejection_percent: od.max_ejection_percent.map(u32_value),
        ..Default::default()
    };
    let enforcing = &od.enforcing;
    out.enforcing_consecutive_5xx = enforcing.consecutive_5xx.map(u32_value);
    out.enforcing_success_rate = enforcing.success_rate.map(u32_value);
    // Envoy detects gateway failures but enforces 0 % by default; writing the key means "eject",
    // unless `enforcing` says otherwise.
    out.enforcing_consecutive_gateway_failure = enforcing
        .consecutive_gateway_failure
        .or(od.consecutive_gateway_failure.map(|_| 100))
        .map(u32_value);
    // Same for failure percentage.
    out.enforcing_failure_percentage = enforcing
        .failure_percentage
        .or(od.failure_percentage.as_ref().map(|_| 100))
        .map(u32_value);
    // The loader accepts local-origin keys only when errors are split.
    out.split_external_local_origin_errors = od.split_local_origin_errors;
    out.consecutive_local_origin_failure = od.consecutive_local_origin_failure.map(u32_value);
    out.enforcing_consecutive_local_origin_failure =
        enforcing.consecutive_local_origin_failure.map(u32_value);
    if let Some(sr) = &od.success_rate {
        out.success_rate_minimum_hosts = sr.minimum_hosts.map(u32_value);
        out.success_rate_request_volume = sr.request_volume.map(u32_value);
        out.success_rate_stdev_factor = sr.stdev_factor.map(u32_value);
    }
    if let Some(fp) = &od.failure_percentage {
        out.failure_percentage_threshold = fp.threshold.map(u32_value);
        out.failure_percentage_minimum_hosts = fp.minimum_hosts.map(u32_value);
        out.failure_percentage_request_volume = fp.request_volume.map(u32_value);
    }
    out
}
