//! The xDS resource type URLs this project serves and consumes, and their order on ADS.

/// `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Every type, in make-before-break push order for ADS: clusters first, then what clusters need
/// to warm (endpoints, secrets), then listeners, then the routes that listeners need.
pub const ADS_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE];

/// The types whose in-flight (un-ACKed) responses hold back a push of `type_url` on ADS.
///
/// Listeners and routes wait for clusters and endpoints, so a route never points at a cluster
/// the client does not have yet. Nothing waits for listeners, and endpoints and secrets never
/// wait: Envoy ACKs a cluster update only once its new clusters have warmed, which needs their
/// endpoints (and secrets), and ACKs a listener update only once its routes arrived.
pub fn held_back_by(type_url: &str) -> &'static [&'static str] {
    match type_url {
        LISTENER | ROUTE => &[CLUSTER, ENDPOINT],
        _ => &[],
    }
}

/// True for the types whose SotW subscription may be a wildcard (LDS and CDS).
pub fn is_wildcard_capable(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// A short human name for a type URL (`clusters`, `endpoints`, …), for logs and metrics.
pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "clusters",
        ENDPOINT => "endpoints",
        LISTENER => "listeners",
        ROUTE => "routes",
        SECRET => "secrets",
        _ => "unknown",
    }
}

/// The protobuf full name inside a type URL (`envoy.config.cluster.v3.Cluster`).
pub fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}
