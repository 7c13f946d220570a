//! `ClusterLoadAssignment` → endpoints, and the socket-address helpers that clusters and
//! listeners share.
//!
//! One walker ([`raw_endpoints`]) reads localities and endpoints with Envoy's defaults; EDS and
//! STATIC clusters then require IP literals ([`endpoints`]), STRICT_DNS / LOGICAL_DNS clusters
//! accept host names ([`dns_targets`]).

use super::error::{ConfigError, FieldError, Result, Under, reject, unsupported};
use super::types::{DnsTarget, EndpointConfig, EndpointHealth};
use legate_proto::pb::envoy::config::core::v3::{Address, HealthStatus, address, socket_address};
use legate_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, lb_endpoint, locality_lb_endpoints,
};
use std::net::{IpAddr, SocketAddr};

/// Envoy's default `overprovisioning_factor` (140 %).
const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;
/// Envoy's highest priority number (`lte: 128`).
const MAX_PRIORITY: u32 = 128;

/// Converts an EDS `ClusterLoadAssignment` into endpoints (IP literals only).
pub fn load_assignment(
    cla: &ClusterLoadAssignment,
) -> std::result::Result<Vec<EndpointConfig>, ConfigError> {
    endpoints(cla).map_err(|e| e.into_config("load assignment", &cla.cluster_name))
}

/// One endpoint as written, before the address is interpreted.
#[derive(Clone, Debug)]
pub(crate) struct RawEndpoint<'a> {
    /// The socket address's `address` (IP literal or host name).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Endpoint weight (default 1).
    pub weight: u32,
    /// Locality weight (default 1).
    pub locality_weight: u32,
    /// Priority of the locality.
    pub priority: u32,
    /// `health_status` as reduced for load balancing.
    pub health: EndpointHealth,
    /// Whether `health_status` was anything but UNKNOWN/HEALTHY.
    pub health_set: bool,
    /// Path of the locality (`endpoints[i]`), for errors.
    pub locality_field: String,
    /// Path of the `LbEndpoint` (`endpoints[i].lb_endpoints[j]`), for errors.
    pub lb_endpoint_field: String,
    /// Path of the endpoint's `address` field, for errors.
    pub address_field: String,
}

/// Reads every endpoint of a load assignment with Envoy's defaults resolved.
pub(crate) fn raw_endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<RawEndpoint<'_>>> {
    if cla.cluster_name.is_empty() {
        return Err(FieldError::new("cluster_name", "must not be empty"));
    }
    if let Some(policy) = &cla.policy {
        reject(!policy.drop_overloads.is_empty(), "policy.drop_overloads")?;
        reject(
            policy
                .overprovisioning_factor
                .is_some_and(|f| f.value != DEFAULT_OVERPROVISIONING_FACTOR),
            "policy.overprovisioning_factor",
        )?;
        reject(
            policy.endpoint_stale_after.is_some(),
            "policy.endpoint_stale_after",
        )?;
        reject(
            policy.weighted_priority_health,
            "policy.weighted_priority_health",
        )?;
    }
    let mut out = Vec::new();
    for (i, locality) in cla.endpoints.iter().enumerate() {
        let lf = format!("endpoints[{i}]");
        #[allow(deprecated)]
        match &locality.lb_config {
            None => {}
            Some(locality_lb_endpoints::LbConfig::LoadBalancerEndpoints(_)) => {
                return Err(unsupported(&format!("{lf}.load_balancer_endpoints")));
            }
            Some(locality_lb_endpoints::LbConfig::LedsClusterLocalityConfig(_)) => {
                return Err(unsupported(&format!("{lf}.leds_cluster_locality_config")));
            }
        }
        let locality_weight = match locality.load_balancing_weight {
            None => 1,
            Some(w) if w.value >= 1 => w.value,
            Some(_) => {
                return Err(FieldError::new(
                    format!("{lf}.load_balancing_weight"),
                    "must be at least 1",
                ));
            }
        };
        if locality.priority > MAX_PRIORITY {
            return Err(FieldError::new(
                format!("{lf}.priority"),
                format!("must be at most {MAX_PRIORITY}"),
            ));
        }
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let ef = format!("{lf}.lb_endpoints[{j}]");
            let (endpoint, endpoint_field): (&Endpoint, String) = match &lb.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(e)) => (e, format!("{ef}.endpoint")),
                Some(lb_endpoint::HostIdentifier::EndpointName(name)) => {
                    match cla.named_endpoints.get(name) {
                        Some(e) => (e, format!("named_endpoints[\"{name}\"]")),
                        None => {
                            return Err(FieldError::new(
                                format!("{ef}.endpoint_name"),
                                format!("no named endpoint `{name}`"),
                            ));
                        }
                    }
                }
                None => return Err(FieldError::new(ef, "an endpoint is required")),
            };
            let weight = match lb.load_balancing_weight {
                None => 1,
                Some(w) if w.value >= 1 => w.value,
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{ef}.load_balancing_weight"),
                        "must be at least 1",
                    ));
                }
            };
            reject(
                !endpoint.additional_addresses.is_empty(),
                &format!("{endpoint_field}.additional_addresses"),
            )?;
            let address_field = format!("{endpoint_field}.address");
            let (host, port) = socket_address(endpoint.address.as_ref()).under(&address_field)?;
            let (health, health_set) = health(lb.health_status);
            out.push(RawEndpoint {
                host,
                port,
                weight,
                locality_weight,
                priority: locality.priority,
                health,
                health_set,
                locality_field: lf.clone(),
                lb_endpoint_field: ef,
                address_field,
            });
        }
    }
    Ok(out)
}

/// Envoy's `health_status` reduced for load balancing (and whether it was set to anything but
/// UNKNOWN/HEALTHY).
fn health(status: i32) -> (EndpointHealth, bool) {
    match HealthStatus::try_from(status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy) => (EndpointHealth::Healthy, false),
        Ok(HealthStatus::Degraded) => (EndpointHealth::Degraded, true),
        _ => (EndpointHealth::Unhealthy, true),
    }
}

/// EDS/STATIC endpoints: every address must be an IP literal.
pub(crate) fn endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<EndpointConfig>> {
    raw_endpoints(cla)?
        .into_iter()
        .map(|raw| {
            let ip: IpAddr = raw.host.parse().map_err(|_| {
                FieldError::new(
                    raw.address_field.clone(),
                    format!(
                        "`{}` is not an IP address (STATIC and EDS endpoints need IP literals)",
                        raw.host
                    ),
                )
            })?;
            Ok(EndpointConfig {
                address: SocketAddr::new(ip, raw.port),
                weight: raw.weight,
                locality_weight: raw.locality_weight,
                priority: raw.priority,
                health: raw.health,
            })
        })
        .collect()
}

/// STRICT_DNS / LOGICAL_DNS targets: host names or IP literals, priority 0, no health status.
///
/// `logical` applies Envoy's LOGICAL_DNS rule: exactly one locality with exactly one endpoint.
pub(crate) fn dns_targets(cla: &ClusterLoadAssignment, logical: bool) -> Result<Vec<DnsTarget>> {
    let raw = raw_endpoints(cla)?;
    if logical && (cla.endpoints.len() != 1 || raw.len() != 1) {
        return Err(FieldError::new(
            "endpoints",
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        ));
    }
    raw.into_iter()
        .map(|raw| {
            if raw.priority != 0 {
                return Err(FieldError::new(
                    format!("{}.priority", raw.locality_field),
                    "priorities are not supported for DNS clusters yet",
                ));
            }
            if raw.health_set {
                return Err(FieldError::new(
                    format!("{}.health_status", raw.lb_endpoint_field),
                    "health_status is not supported for DNS clusters",
                ));
            }
            if raw.host.is_empty() {
                return Err(FieldError::new(raw.address_field, "host must not be empty"));
            }
            Ok(DnsTarget {
                host: raw.host.to_string(),
                port: raw.port,
                weight: raw.weight,
            })
        })
        .collect()
}

/// Host and port of a TCP socket address (the host is not interpreted). Errors are relative to
/// the `Address` field.
pub(crate) fn socket_address(a: Option<&Address>) -> Result<(&str, u16)> {
    let sa = match a.and_then(|a| a.address.as_ref()) {
        None => return Err(FieldError::new("", "a socket address is required")),
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => {
            return Err(FieldError::new("pipe", "pipe addresses are not supported"));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(FieldError::new(
                "envoy_internal_address",
                "internal addresses are not supported",
            ));
        }
    };
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(FieldError::new(
            "socket_address.protocol",
            "only TCP is supported",
        ));
    }
    reject(!sa.resolver_name.is_empty(), "socket_address.resolver_name")?;
    reject(
        !sa.network_namespace_filepath.is_empty(),
        "socket_address.network_namespace_filepath",
    )?;
    if sa.address.is_empty() {
        return Err(FieldError::new(
            "socket_address.address",
            "must not be empty",
        ));
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(*p).map_err(|_| {
            FieldError::new(
                "socket_address.port_value",
                format!("{p} is not a valid port"),
            )
        })?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(unsupported("socket_address.named_port"));
        }
        None => {
            return Err(FieldError::new(
                "socket_address.port_value",
                "a port is required",
            ));
        }
    };
    Ok((&sa.address, port))
}

/// An IP socket address (listeners): the host must be an IP literal.
pub(crate) fn ip_socket_address(a: Option<&Address>) -> Result<SocketAddr> {
    let (host, port) = socket_address(a)?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| FieldError::new("", format!("`{host}` is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::json::from_json;
    use serde_json::json;

    fn cla(v: serde_json::Value) -> ClusterLoadAssignment {
        from_json(&v).expect("valid ClusterLoadAssignment JSON")
    }

    fn ep(host: &str, port: u16) -> serde_json::Value {
        json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}})
    }

    #[test]
    fn defaults_localities_priorities_health() {
        let mut degraded = ep("10.0.0.3", 82);
        degraded["health_status"] = json!("DEGRADED");
        degraded["load_balancing_weight"] = json!(7);
        let mut draining = ep("::1", 83);
        draining["health_status"] = json!("DRAINING");
        let mut healthy = ep("10.0.0.2", 81);
        healthy["health_status"] = json!("HEALTHY");
        let c = cla(json!({
            "cluster_name": "payments",
            "endpoints": [
                {"lb_endpoints": [ep("10.0.0.1", 80), healthy]},
                {"priority": 1, "load_balancing_weight": 3, "lb_endpoints": [degraded, draining]}
            ]
        }));
        let eps = load_assignment(&c).expect("valid");
        assert_eq!(eps.len(), 4);
        assert_eq!(
            eps[0],
            EndpointConfig {
                address: "10.0.0.1:80".parse().unwrap(),
                weight: 1,
                locality_weight: 1,
                priority: 0,
                health: EndpointHealth::Healthy,
            }
        );
        assert_eq!(eps[1].health, EndpointHealth::Healthy);
        assert_eq!(eps[2].priority, 1);
        assert_eq!(eps[2].locality_weight, 3);
        assert_eq!(eps[2].weight, 7);
        assert_eq!(eps[2].health, EndpointHealth::Degraded);
        assert_eq!(eps[3].address, "[::1]:83".parse().unwrap());
        assert_eq!(eps[3].health, EndpointHealth::Unhealthy);
    }

    #[test]
    fn named_endpoints_resolve() {
        let c = cla(json!({
            "cluster_name": "c",
            "named_endpoints": {"a": {"address": {"socket_address": {"address": "10.1.1.1", "port_value": 9}}}},
            "endpoints": [{"lb_endpoints": [{"endpoint_name": "a"}]}]
        }));
        assert_eq!(
            load_assignment(&c).unwrap()[0].address,
            "10.1.1.1:9".parse().unwrap()
        );
        let c = cla(json!({
            "cluster_name": "c",
            "endpoints": [{"lb_endpoints": [{"endpoint_name": "missing"}]}]
        }));
        assert_eq!(
            load_assignment(&c).unwrap_err().field,
            "endpoints[0].lb_endpoints[0].endpoint_name"
        );
    }

    #[test]
    fn host_names_are_rejected_for_eds() {
        let c = cla(json!({
            "cluster_name": "payments",
            "endpoints": [{"lb_endpoints": [ep("10.0.0.1", 80), ep("payments.internal", 80)]}]
        }));
        let err = load_assignment(&c).unwrap_err();
        assert_eq!(err.kind, "load assignment");
        assert_eq!(err.name, "payments");
        assert_eq!(err.field, "endpoints[0].lb_endpoints[1].endpoint.address");
        assert!(err.message.contains("payments.internal"), "{err}");
        assert!(
            err.to_string().starts_with(
                "load assignment `payments`: endpoints[0].lb_endpoints[1].endpoint.address: "
            ),
            "{err}"
        );
    }

    #[test]
    fn errors_name_fields() {
        let bad = |v: serde_json::Value| load_assignment(&cla(v)).unwrap_err().field;
        assert_eq!(bad(json!({"endpoints": []})), "cluster_name");
        assert_eq!(
            bad(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "named_port": "http"}}}}
            ]}]})),
            "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.named_port"
        );
        assert_eq!(
            bad(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": "/tmp/x"}}}}
            ]}]})),
            "endpoints[0].lb_endpoints[0].endpoint.address.pipe"
        );
        assert_eq!(
            bad(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 70000}}}}
            ]}]})),
            "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"
        );
        assert_eq!(
            bad(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [{}]}]})),
            "endpoints[0].lb_endpoints[0]"
        );
        let mut zero = ep("10.0.0.1", 1);
        zero["load_balancing_weight"] = json!(0);
        assert_eq!(
            bad(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [zero]}]})),
            "endpoints[0].lb_endpoints[0].load_balancing_weight"
        );
        assert_eq!(
            bad(
                json!({"cluster_name": "c", "endpoints": [{"load_balancing_weight": 0, "lb_endpoints": []}]})
            ),
            "endpoints[0].load_balancing_weight"
        );
        assert_eq!(
            bad(
                json!({"cluster_name": "c", "policy": {"drop_overloads": [{"category": "x", "drop_percentage": {"numerator": 1}}]}})
            ),
            "policy.drop_overloads"
        );
        assert_eq!(
            bad(json!({"cluster_name": "c", "policy": {"overprovisioning_factor": 200}})),
            "policy.overprovisioning_factor"
        );
        // The default factor is accepted.
        assert!(
            load_assignment(&cla(
                json!({"cluster_name": "c", "policy": {"overprovisioning_factor": 140}})
            ))
            .is_ok()
        );
    }

    #[test]
    fn dns_targets_accept_names() {
        let mut weighted = ep("b.example", 443);
        weighted["load_balancing_weight"] = json!(5);
        let c = cla(json!({
            "cluster_name": "c",
            "endpoints": [{"lb_endpoints": [ep("localhost", 8080), weighted, ep("10.0.0.1", 1)]}]
        }));
        let t = dns_targets(&c, false).unwrap();
        assert_eq!(
            t,
            vec![
                DnsTarget {
                    host: "localhost".into(),
                    port: 8080,
                    weight: 1
                },
                DnsTarget {
                    host: "b.example".into(),
                    port: 443,
                    weight: 5
                },
                DnsTarget {
                    host: "10.0.0.1".into(),
                    port: 1,
                    weight: 1
                },
            ]
        );
        assert_eq!(
            dns_targets(&c, true).unwrap_err().field,
            "endpoints",
            "LOGICAL_DNS wants exactly one endpoint"
        );
        let c = cla(json!({
            "cluster_name": "c",
            "endpoints": [{"priority": 1, "lb_endpoints": [ep("a", 1)]}]
        }));
        assert_eq!(
            dns_targets(&c, false).unwrap_err().field,
            "endpoints[0].priority"
        );
        let mut unhealthy = ep("a", 1);
        unhealthy["health_status"] = json!("UNHEALTHY");
        let c = cla(json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [unhealthy]}]}));
        assert_eq!(
            dns_targets(&c, false).unwrap_err().field,
            "endpoints[0].lb_endpoints[0].health_status"
        );
    }
}
