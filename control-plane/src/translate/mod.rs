//! Pure translation of the validated model into Envoy resources.
//!
//! Invariant: nothing in this module does I/O, reads a clock or draws a random number; the same
//! model always yields the same resources (so content hashes are stable across restarts).

mod cluster;
mod endpoint;
pub mod grpc;
mod listener;
mod route;
mod secret;
mod util;

use crate::model::{Ambassador, Config};
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use legate_proto::pb::envoy::config::listener::v3::Listener;
use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

pub use cluster::{HTTP_PROTOCOL_OPTIONS, cluster};
pub use endpoint::load_assignment;
pub use listener::listener;
pub use route::route_configuration;
pub use secret::{
    TLS_TRANSPORT_SOCKET, ca_secret_name, cert_secret_name, secrets, upstream_tls_context,
};

/// Everything one ambassador receives, before encoding. `Debug` lists secrets by name only.
#[derive(Clone, Default, PartialEq)]
pub struct Resources {
    /// CDS: one cluster per service the ambassador may call.
    pub clusters: Vec<Cluster>,
    /// EDS: one assignment per EDS cluster (STRICT_DNS clusters carry theirs inline).
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS: the ambassador's listener.
    pub listeners: Vec<Listener>,
    /// RDS: the ambassador's route table.
    pub routes: Vec<RouteConfiguration>,
    /// SDS: the client certificates and trusted CAs its TLS clusters name (see `secret.rs`).
    pub secrets: Vec<Secret>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret_names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Resources")
            .field("clusters", &self.clusters)
            .field("endpoints", &self.endpoints)
            .field("listeners", &self.listeners)
            .field("routes", &self.routes)
            .field("secrets", &secret_names)
            .finish()
    }
}

/// Translates what one ambassador may see.
pub fn ambassador(config: &Config, amb: &Ambassador) -> Resources {
    let services = amb
        .services
        .iter()
        .filter_map(|name| config.services.get(name));
    let mut out = Resources::default();
    for svc in services {
        out.clusters.push(cluster(svc));
        out.secrets.extend(secrets(svc));
        if !svc.uses_dns() {
            out.endpoints.push(load_assignment(svc));
        }
    }
    out.listeners.push(listener(amb));
    out.routes.push(route_configuration(config, amb));
    out
}

#[cfg(test)]
mod tests;
