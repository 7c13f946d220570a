//! The gRPC flavour: what proxyless gRPC clients (`xds:///SERVICE`) receive.
//!
//! A gRPC client names the Listener it wants after its target (`payments` for
//! `xds:///payments`, or `payments:PORT`), then follows the chain Listener (`api_listener`) →
//! RouteConfiguration → Cluster (EDS) → ClusterLoadAssignment. gRPC NACKs a whole response
//! for one value it cannot handle, so this module emits only what gRPC understands (gRFCs A27,
//! A28, A31, A42, A44, A50, A52):
//!
//! - Listener `S`: `api_listener` = HttpConnectionManager with RDS over ADS and the router
//!   filter as the only (so the last) HTTP filter; no address, no filter chains.
//! - RouteConfiguration `grpc/S`: one virtual host, `domains: [S, "S:*"]`, one route with the
//!   empty prefix to cluster `S`. The timeout becomes `max_stream_duration` (gRPC ignores
//!   `timeout`); the retry policy keeps gRPC's status names, `num_retries` and `retry_back_off`
//!   and never `per_try_timeout`.
//! - Cluster `S`: EDS over ADS; ROUND_ROBIN or RING_HASH in `lb_policy`, the other policies
//!   as a `load_balancing_policy` list that ends with one every gRPC supports; circuit
//!   breakers with `max_requests` only; outlier detection with the success-rate and
//!   failure-percentage fields only.
//! - ClusterLoadAssignment `S`: one weighted locality of IP-literal addresses. DNS endpoints
//!   are resolved by the loading stage ([`Resolved`]), never here: translation stays pure.
//!
//! - A service with `tls`: the cluster's transport socket is the gRFC A29 form, certificate
//!   provider instances of the client's bootstrap (see [`tls`]); never SDS, never key material.
//!   A TLS service that gRPC cannot express (no `ca`) is left out ([`excluded`]) rather than
//!   sent in plaintext.

use super::Resources;
use super::util::{ads_config_source, duration, u32_value};
use crate::model::{Ambassador, Config, Host, LbPolicy, Service};
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, LoadBalancingPolicy, OutlierDetection, circuit_breakers::Thresholds,
    cluster, load_balancing_policy,
};
use legate_proto::pb::envoy::config::core::v3::{
    Address, Locality, RoutingPriority, SocketAddress, TypedExtensionConfig, address,
    socket_address::PortSpecifier,
};
use legate_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use legate_proto::pb::envoy::config::listener::v3::{ApiListener, Listener};
use legate_proto::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, retry_policy,
    route, route_action, route_match,
};
use legate_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use legate_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use legate_proto::pb::envoy::extensions::load_balancing_policies::{
    least_request::v3::LeastRequest, maglev::v3::Maglev, random::v3::Random, ring_hash,
    ring_hash::v3::RingHash, round_robin::v3::RoundRobin, wrr_locality::v3::WrrLocality,
};
use prost::Name;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

pub mod tls;

/// Addresses of the DNS names that endpoints use, resolved by the loading stage (the control
/// plane resolves for gRPC clients, which accept only IP literals). A name that is missing
/// contributes no endpoint.
pub type Resolved = BTreeMap<String, Vec<IpAddr>>;

/// The prefix of gRPC route configuration names (`grpc/payments`).
pub const ROUTE_PREFIX: &str = "grpc/";

/// The retry conditions gRPC understands (gRFC A44); every other name is dropped.
pub const GRPC_RETRY_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The gRPC resources of what one ambassador may call.
pub fn ambassador(config: &Config, amb: &Ambassador, resolved: &Resolved) -> Resources {
    let mut out = Resources::default();
    for svc in amb.services.iter().filter_map(|n| config.services.get(n)) {
        if excluded(svc).is_some() {
            continue;
        }
        out.clusters.push(cluster(svc));
        out.endpoints.push(load_assignment(svc, resolved));
        out.listeners.push(listener(&svc.name));
        out.routes.push(route_configuration(svc));
    }
    out
}

/// Why a service is not offered to gRPC clients, if it is not: only a TLS service that gRPC
/// cannot express (see [`tls::unverifiable`]).
pub fn excluded(svc: &Service) -> Option<&'static str> {
    svc.tls.as_ref().and_then(tls::unverifiable)
}

/// The route configuration name of a service's gRPC listener.
pub fn route_config_name(service: &str) -> String {
    format!("{ROUTE_PREFIX}{service}")
}

/// The listener a gRPC client asks for as `name` (`xds:///name`): an API listener, not a socket.
pub fn listener(name: &str) -> Listener {
    let service = port_alias(name).unwrap_or(name);
    let hcm = HttpConnectionManager {
        stat_prefix: service.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config_name(service),
        })),
        http_filters: vec![HttpFilter {
            name: super::listener::ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    }
}

/// `S` for a listener name `S:PORT` (a target `xds:///S:PORT`), else `None`.
pub fn port_alias(name: &str) -> Option<&str> {
    let (service, port) = name.rsplit_once(':')?;
    (!service.is_empty() && port.parse::<u16>().is_ok()).then_some(service)
}

/// The route configuration of one service: its name and `name:*` go to its cluster.
pub fn route_configuration(svc: &Service) -> RouteConfiguration {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(svc.name.clone())),
        max_stream_duration: svc.timeout.map(|t| route_action::MaxStreamDuration {
            // gRPC reads `grpc_timeout_header_max` first (gRFC A31); both say the same here, and
            // a zero duration means "no limit", as the YAML's `timeout: 0s` does.
            max_stream_duration: Some(duration(t)),
            grpc_timeout_header_max: Some(duration(t)),
            ..Default::default()
        }),
        retry_policy: svc.retries.as_ref().and_then(retry_policy),
        ..Default::default()
    };
    RouteConfiguration {
        name: route_config_name(&svc.name),
        virtual_hosts: vec![VirtualHost {
            name: svc.name.clone(),
            domains: vec![svc.name.clone(), format!("{}:*", svc.name)],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// gRPC's subset of a retry policy (gRFC A44), or `None` when nothing of it is left: no gRPC
/// condition, or zero retries (gRPC NACKs `num_retries: 0`).
fn retry_policy(r: &crate::model::RetryPolicy) -> Option<RetryPolicy> {
    let on: Vec<&str> =
        r.on.iter()
            .map(String::as_str)
            .filter(|o| GRPC_RETRY_ON.contains(o))
            .collect();
    if on.is_empty() || r.attempts == Some(0) {
        return None;
    }
    // The loader guarantees base > 0 and max >= base; gRPC NACKs anything else, so check anyway.
    let backoff = r
        .backoff
        .as_ref()
        .filter(|b| !b.base.is_zero() && b.max.is_none_or(|m| m >= b.base))
        .map(|b| retry_policy::RetryBackOff {
            base_interval: Some(duration(b.base)),
            max_interval: b.max.map(duration),
        });
    Some(RetryPolicy {
        retry_on: on.join(","),
        num_retries: r.attempts.map(u32_value),
        retry_back_off: backoff,
        ..Default::default()
    })
}

/// The cluster of one service, as gRPC reads it.
pub fn cluster(svc: &Service) -> Cluster {
    let (lb_policy, load_balancing_policy) = lb(svc.lb);
    Cluster {
        name: svc.name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        }),
        lb_policy: lb_policy as i32,
        load_balancing_policy,
        circuit_breakers: svc
            .circuit_breaker
            .as_ref()
            .and_then(|cb| cb.max_requests)
            .map(|max| CircuitBreakers {
                thresholds: vec![Thresholds {
                    priority: RoutingPriority::Default as i32,
                    max_requests: Some(u32_value(max)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        outlier_detection: svc.outlier_detection.as_ref().map(outlier_detection),
        transport_socket: svc.tls.as_ref().map(tls::transport_socket),
        ..Default::default()
    }
}

fn policy<M: prost::Message + Name>(message: &M) -> load_balancing_policy::Policy {
    load_balancing_policy::Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: M::full_name(),
            typed_config: Some(pack(message)),
        }),
    }
}

/// `wrr_locality` (locality weights) around `[preferred, round_robin]`: gRPC takes the first
/// policy of a list that it supports (gRFC A52), and every gRPC supports round robin.
fn with_round_robin_fallback(preferred: load_balancing_policy::Policy) -> LoadBalancingPolicy {
    let endpoint_picking = LoadBalancingPolicy {
        policies: vec![preferred, policy(&RoundRobin::default())],
    };
    LoadBalancingPolicy {
        policies: vec![policy(&WrrLocality {
            endpoint_picking_policy: Some(endpoint_picking),
        })],
    }
}

/// ROUND_ROBIN and RING_HASH go in `lb_policy`, which every gRPC reads. The others go in
/// `load_balancing_policy`, with a fallback that gRPC-C (grpcio) and grpc-js support: neither
/// implements least request, random or Maglev.
fn lb(policy_of: LbPolicy) -> (cluster::LbPolicy, Option<LoadBalancingPolicy>) {
    match policy_of {
        LbPolicy::RoundRobin => (cluster::LbPolicy::RoundRobin, None),
        LbPolicy::RingHash => (cluster::LbPolicy::RingHash, None),
        LbPolicy::LeastRequest => (
            cluster::LbPolicy::RoundRobin,
            Some(with_round_robin_fallback(policy(&LeastRequest::default()))),
        ),
        LbPolicy::Random => (
            cluster::LbPolicy::RoundRobin,
            Some(with_round_robin_fallback(policy(&Random::default()))),
        ),
        LbPolicy::Maglev => (
            cluster::LbPolicy::RingHash,
            Some(LoadBalancingPolicy {
                policies: vec![
                    policy(&Maglev::default()),
                    // grpc-js rejects DEFAULT_HASH (the proto default); XX_HASH is what it means.
                    policy(&RingHash {
                        hash_function: ring_hash::v3::ring_hash::HashFunction::XxHash as i32,
                        ..Default::default()
                    }),
                ],
            }),
        ),
    }
}

/// gRPC's subset of outlier detection (gRFC A50): ejection timing, success rate and failure
/// percentage. The consecutive-error detectors have no gRPC equivalent and are dropped.
fn outlier_detection(od: &crate::model::OutlierDetection) -> OutlierDetection {
    let mut out = OutlierDetection {
        interval: od.interval.map(duration),
        base_ejection_time: od.base_ejection_time.map(duration),
        max_ejection_time: od.max_ejection_time.map(duration),
        max_ejection_percent: od.max_ejection_percent.map(u32_value),
        enforcing_success_rate: od.enforcing.success_rate.map(u32_value),
        // As in the Envoy flavour: a written detector is enforced unless `enforcing` says not.
        enforcing_failure_percentage: od
            .enforcing
            .failure_percentage
            .or(od.failure_percentage.as_ref().map(|_| 100))
            .map(u32_value),
        ..Default::default()
    };
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

/// The load assignment: one locality (present, and of weight 1: gRPC NACKs a locality without
/// the field and ignores one without a weight) holding IP-literal endpoints. A DNS endpoint becomes one endpoint per resolved address; an
/// address reached twice is listed once with the weights added (gRPC NACKs duplicates).
pub fn load_assignment(svc: &Service, resolved: &Resolved) -> ClusterLoadAssignment {
    let mut weights: Vec<(SocketAddr, u32)> = Vec::new();
    let mut add = |addr: SocketAddr, weight: u32| match weights.iter_mut().find(|(a, _)| *a == addr)
    {
        Some((_, w)) => *w = w.saturating_add(weight),
        None => weights.push((addr, weight)),
    };
    for ep in &svc.endpoints {
        match &ep.host {
            Host::Ip(ip) => add(SocketAddr::new(*ip, ep.port), ep.weight),
            Host::Dns(name) => {
                for ip in resolved.get(name).into_iter().flatten() {
                    add(SocketAddr::new(*ip, ep.port), ep.weight);
                }
            }
        }
    }
    let lb_endpoints: Vec<LbEndpoint> = weights
        .into_iter()
        .map(|(addr, weight)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            load_balancing_weight: Some(u32_value(weight.max(1))),
            ..Default::default()
        })
        .collect();
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![LocalityLbEndpoints {
            // gRPC requires the field, even empty (one unnamed locality).
            locality: Some(Locality::default()),
            lb_endpoints,
            load_balancing_weight: Some(u32_value(1)),
            ..Default::default()
        }]
    };
    ClusterLoadAssignment {
        cluster_name: svc.name.clone(),
        endpoints,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use legate_proto::any::unpack;
    use legate_proto::pb::envoy::config::core::v3::transport_socket;
    use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateProviderPluginInstance, CertificateValidationContext, UpstreamTlsContext,
        common_tls_context::ValidationContextType,
    };
    use legate_proto::pb::envoy::r#type::matcher::v3::string_matcher;
    use std::path::Path;

    fn load(text: &str) -> Config {
        load_str(Path::new("t.yaml"), text)
            .unwrap_or_else(|errors| panic!("{}", crate::config::error_lines(&errors)))
    }

    const FULL: &str = "\
services:
  payments:
    protocol: grpc
    endpoints: [127.0.0.1:9001, { address: 'localhost:9002', weight: 3 }, 10.0.0.7:9001]
    timeout: 2s
    retries:
      attempts: 3
      on: [unavailable, 5xx, reset, cancelled]
      per_try_timeout: 1s
      backoff: { base: 10ms, max: 100ms }
    circuit_breaker: { max_requests: 7, max_connections: 3, max_pending_requests: 2 }
    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 5s
      max_ejection_percent: 50
      failure_percentage: { threshold: 60, minimum_hosts: 2, request_volume: 4 }
  secure:
    endpoints: [127.0.0.1:9443]
    tls: { sni: secure.internal }
  hashing:
    endpoints: [127.0.0.1:9010]
    lb: ring_hash
  fewest:
    endpoints: [127.0.0.1:9011]
    lb: least_request
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
";

    fn resolved() -> Resolved {
        [(
            "localhost".to_string(),
            vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
        )]
        .into_iter()
        .collect()
    }

    fn grpc(config: &Config) -> Resources {
        ambassador(config, &config.ambassadors["checkout"], &resolved())
    }

    #[test]
    fn listener_is_an_api_listener_with_rds_over_ads_and_router_last() {
        for name in ["payments", "payments:8443"] {
            let l = listener(name);
            assert_eq!(l.name, name);
            assert!(l.address.is_none() && l.filter_chains.is_empty());
            let any = l
                .api_listener
                .and_then(|a| a.api_listener)
                .expect("api_listener");
            let hcm: HttpConnectionManager = unpack(&any).expect("an HCM");
            let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
                panic!("not RDS");
            };
            assert_eq!(rds.route_config_name, "grpc/payments");
            assert!(matches!(
                rds.config_source.and_then(|c| c.config_source_specifier),
                Some(legate_proto::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_))
            ));
            let last = hcm.http_filters.last().expect("filters");
            let Some(http_filter::ConfigType::TypedConfig(router)) = &last.config_type else {
                panic!("router without typed_config");
            };
            assert_eq!(
                router.type_url,
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            );
        }
    }

    #[test]
    fn port_alias_parses_only_numeric_ports() {
        assert_eq!(port_alias("payments:8080"), Some("payments"));
        assert_eq!(port_alias("payments"), None);
        assert_eq!(port_alias("payments:http"), None);
        assert_eq!(port_alias(":80"), None);
    }

    #[test]
    fn route_has_grpc_retry_subset_and_no_per_try_timeout() {
        let config = load(FULL);
        let rc = route_configuration(&config.services["payments"]);
        assert_eq!(rc.name, "grpc/payments");
        let vh = &rc.virtual_hosts[0];
        assert_eq!(vh.domains, vec!["payments", "payments:*"]);
        let Some(route::Action::Route(action)) = &vh.routes[0].action else {
            panic!("not a route action");
        };
        assert_eq!(
            action.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster("payments".into()))
        );
        assert_eq!(
            vh.routes[0].r#match.as_ref().unwrap().path_specifier,
            Some(route_match::PathSpecifier::Prefix(String::new()))
        );
        let msd = action.max_stream_duration.as_ref().expect("timeout");
        assert_eq!(
            msd.grpc_timeout_header_max,
            Some(duration(std::time::Duration::from_secs(2)))
        );
        assert_eq!(action.timeout, None, "gRPC ignores `timeout`");
        let policy = action.retry_policy.as_ref().expect("retry policy");
        assert_eq!(policy.retry_on, "unavailable,cancelled");
        assert_eq!(policy.num_retries, Some(u32_value(3)));
        assert_eq!(policy.per_try_timeout, None);
        assert_eq!(policy.per_try_idle_timeout, None);
        assert!(policy.retriable_status_codes.is_empty());
        let backoff = policy.retry_back_off.as_ref().expect("backoff");
        assert_eq!(
            backoff.base_interval,
            Some(duration(std::time::Duration::from_millis(10)))
        );
    }

    #[test]
    fn retry_policy_without_grpc_conditions_or_retries_is_dropped() {
        let only_http = load(
            "services:\n  a:\n    endpoints: [127.0.0.1:1]\n    retries: { on: [5xx, reset] }\n",
        );
        let rc = route_configuration(&only_http.services["a"]);
        let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        assert_eq!(action.retry_policy, None);
        let zero = load(
            "services:\n  a:\n    protocol: grpc\n    endpoints: [127.0.0.1:1]\n    retries: { attempts: 0, on: [unavailable] }\n",
        );
        let rc = route_configuration(&zero.services["a"]);
        let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        assert_eq!(action.retry_policy, None, "gRPC NACKs num_retries 0");
    }

    #[test]
    fn cluster_keeps_only_what_grpc_reads() {
        let config = load(FULL);
        let c = cluster(&config.services["payments"]);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
        assert!(c.load_balancing_policy.is_none());
        assert!(c.transport_socket.is_none());
        assert!(c.typed_extension_protocol_options.is_empty());
        let cb = c.circuit_breakers.expect("breakers");
        assert_eq!(
            cb.thresholds,
            vec![Thresholds {
                priority: RoutingPriority::Default as i32,
                max_requests: Some(u32_value(7)),
                ..Default::default()
            }]
        );
        let od = c.outlier_detection.expect("outlier detection");
        assert_eq!(od.consecutive_5xx, None, "not a gRPC detector");
        assert_eq!(od.failure_percentage_threshold, Some(u32_value(60)));
        assert_eq!(od.failure_percentage_minimum_hosts, Some(u32_value(2)));
        assert_eq!(od.failure_percentage_request_volume, Some(u32_value(4)));
        assert_eq!(od.enforcing_failure_percentage, Some(u32_value(100)));
        assert_eq!(od.max_ejection_percent, Some(u32_value(50)));
        assert_eq!(
            od.interval,
            Some(duration(std::time::Duration::from_secs(1)))
        );
    }

    #[test]
    fn lb_policies_map_to_what_grpc_supports() {
        let config = load(FULL);
        assert_eq!(
            cluster(&config.services["hashing"]).lb_policy,
            cluster::LbPolicy::RingHash as i32
        );
        let fewest = cluster(&config.services["fewest"]);
        let lbp = fewest.load_balancing_policy.expect("load_balancing_policy");
        let wrr = lbp.policies[0].typed_extension_config.as_ref().unwrap();
        let wrr: WrrLocality = unpack(wrr.typed_config.as_ref().unwrap()).expect("wrr_locality");
        let inner: Vec<String> = wrr
            .endpoint_picking_policy
            .unwrap()
            .policies
            .iter()
            .map(|p| {
                p.typed_extension_config
                    .as_ref()
                    .unwrap()
                    .typed_config
                    .as_ref()
                    .unwrap()
                    .type_url
                    .clone()
            })
            .collect();
        assert_eq!(
            inner,
            vec![
                "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
            ]
        );
    }

    #[test]
    fn load_assignment_has_ip_literals_and_a_weighted_locality() {
        let config = load(FULL);
        let cla = load_assignment(&config.services["payments"], &resolved());
        assert_eq!(cla.endpoints.len(), 1);
        let locality = &cla.endpoints[0];
        assert_eq!(locality.load_balancing_weight, Some(u32_value(1)));
        assert!(
            locality.locality.is_some(),
            "gRPC NACKs a locality without the field"
        );
        let addrs: Vec<(String, u32)> = locality
            .lb_endpoints
            .iter()
            .map(|e| {
                let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    panic!()
                };
                let Some(address::Address::SocketAddress(sa)) =
                    ep.address.as_ref().and_then(|a| a.address.clone())
                else {
                    panic!()
                };
                let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                    panic!()
                };
                assert!(
                    sa.address.parse::<IpAddr>().is_ok(),
                    "{} is not an IP",
                    sa.address
                );
                (
                    format!("{}:{port}", sa.address),
                    e.load_balancing_weight.unwrap().value,
                )
            })
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("127.0.0.1:9001".to_string(), 1),
                ("127.0.0.1:9002".to_string(), 3),
                ("127.0.0.2:9002".to_string(), 3),
                ("10.0.0.7:9001".to_string(), 1),
            ]
        );
        let unresolved = load_assignment(&config.services["payments"], &Resolved::default());
        assert_eq!(
            unresolved.endpoints[0].lb_endpoints.len(),
            2,
            "DNS names without addresses are skipped"
        );
    }

    #[test]
    fn duplicate_addresses_are_merged() {
        let config = load("services:\n  a:\n    endpoints: [127.0.0.1:9001, 'localhost:9001']\n");
        let r: Resolved = [("localhost".to_string(), vec!["127.0.0.1".parse().unwrap()])]
            .into_iter()
            .collect();
        let cla = load_assignment(&config.services["a"], &r);
        assert_eq!(cla.endpoints[0].lb_endpoints.len(), 1);
        assert_eq!(
            cla.endpoints[0].lb_endpoints[0].load_balancing_weight,
            Some(u32_value(2))
        );
        let none = load_assignment(&config.services["a"], &Resolved::default());
        assert_eq!(none.endpoints[0].lb_endpoints.len(), 1);
    }

    #[test]
    fn unverified_tls_services_are_left_out() {
        let config = load(FULL);
        assert!(excluded(&config.services["secure"]).is_some_and(|why| why.contains("`ca`")));
        let r = grpc(&config);
        let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["fewest", "hashing", "payments"]);
        assert!(r.clusters.iter().all(|c| c.transport_socket.is_none()));
        assert_eq!(r.listeners.len(), 3);
        assert!(r.listeners.iter().all(|l| l.api_listener.is_some()));
        assert_eq!(r.routes.len(), 3);
        assert_eq!(r.endpoints.len(), 3);
    }

    fn tls_context(c: &Cluster) -> UpstreamTlsContext {
        let ts = c.transport_socket.as_ref().expect("a transport socket");
        assert_eq!(ts.name, "envoy.transport_sockets.tls");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("no typed_config");
        };
        unpack(any).expect("an UpstreamTlsContext")
    }

    #[test]
    #[allow(deprecated)] // match_subject_alt_names: what gRPC reads.
    fn tls_services_get_certificate_providers_and_never_sds() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::init(&crate::certs::InitOptions::new(
            dir.path(),
            "example.org",
            &["checkout"],
        ))
        .expect("certs");
        let d = dir.path().display();
        let yaml = format!(
            "services:\n  \
               mutual:\n    protocol: grpc\n    endpoints: [127.0.0.1:9443]\n    tls:\n      \
                 ca: {d}/ca.pem\n      cert: {d}/checkout.pem\n      key: {d}/checkout.key\n      \
                 sni: mutual.internal\n      min_version: '1.3'\n      alpn: [h2]\n      \
                 verify_san: [spiffe://example.org/ns/default/sa/mutual, {{ dns: payments.internal }}, {{ ip: 127.0.0.1 }}]\n  \
               oneway:\n    protocol: grpc\n    endpoints: [127.0.0.1:9444]\n    tls: {{ ca: {d}/ca.pem }}\n  \
               unverified:\n    protocol: grpc\n    endpoints: [127.0.0.1:9445]\n    tls: {{ sni: x }}\n\
             ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n"
        );
        let config = load_str(&dir.path().join("t.yaml"), &yaml).expect("valid");
        let r = grpc(&config);
        let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["mutual", "oneway"], "`unverified` is left out");
        assert!(r.secrets.is_empty());

        let mutual = tls_context(&r.clusters[0]);
        assert_eq!(mutual.sni, "mutual.internal");
        let common = mutual.common_tls_context.expect("common_tls_context");
        let provider = |p: &Option<CertificateProviderPluginInstance>| {
            p.as_ref().map(|p| p.instance_name.clone())
        };
        assert_eq!(
            provider(&common.tls_certificate_provider_instance).as_deref(),
            Some(crate::grpc_bootstrap::CERTIFICATE_PROVIDER)
        );
        assert!(common.tls_certificate_sds_secret_configs.is_empty());
        assert!(common.tls_certificates.is_empty());
        assert_eq!(common.tls_params, None, "gRPC NACKs tls_params");
        assert!(common.alpn_protocols.is_empty());
        let Some(ValidationContextType::ValidationContext(vc)) = &common.validation_context_type
        else {
            panic!(
                "not a plain validation_context: {:?}",
                common.validation_context_type
            );
        };
        assert_eq!(
            provider(&vc.ca_certificate_provider_instance).as_deref(),
            Some("default")
        );
        assert_eq!(vc.trusted_ca, None);
        assert!(vc.match_typed_subject_alt_names.is_empty());
        let sans: Vec<String> = vc
            .match_subject_alt_names
            .iter()
            .map(|m| match &m.match_pattern {
                Some(string_matcher::MatchPattern::Exact(v)) if !m.ignore_case => v.clone(),
                other => panic!("not an exact matcher: {other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            vec![
                "spiffe://example.org/ns/default/sa/mutual",
                "payments.internal",
                "127.0.0.1"
            ]
        );

        let oneway = tls_context(&r.clusters[1]);
        let common = oneway.common_tls_context.expect("common_tls_context");
        assert_eq!(
            common.tls_certificate_provider_instance, None,
            "TLS, not mTLS"
        );
        assert!(matches!(
            common.validation_context_type,
            Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    ca_certificate_provider_instance: Some(_),
                    ..
                }
            ))
        ));
        assert_eq!(oneway.sni, "");

        // Nothing of the sidecars' form reaches a gRPC client: no SDS, no file, no key.
        for c in &r.clusters {
            let json = legate_proto::json::to_json(c).expect("json").to_string();
            for absent in ["sds", "inline", "filename", "tls_params", "BEGIN"] {
                assert!(!json.contains(absent), "{absent} in {json}");
            }
        }
    }

    #[test]
    fn translation_is_deterministic() {
        let config = load(FULL);
        assert_eq!(grpc(&config), grpc(&config));
    }
}
