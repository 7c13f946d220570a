//! Pure translation of the validated model into Envoy resources.
//!
//! Invariant: nothing in this module does I/O, reads a clock or draws a random number; the same
//! model always yields the same resources (so content hashes are stable across restarts).

mod cluster;
mod endpoint;
mod listener;
mod route;
mod util;

use crate::model::{Ambassador, Config};
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use legate_proto::pb::envoy::config::listener::v3::Listener;
use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;

pub use cluster::{HTTP_PROTOCOL_OPTIONS, cluster};
pub use endpoint::load_assignment;
pub use listener::listener;
pub use route::route_configuration;

/// Everything one ambassador receives, before encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CDS: one cluster per service the ambassador may call.
    pub clusters: Vec<Cluster>,
    /// EDS: one assignment per EDS cluster (STRICT_DNS clusters carry theirs inline).
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS: the ambassador's listener.
    pub listeners: Vec<Listener>,
    /// RDS: the ambassador's route table.
    pub routes: Vec<RouteConfiguration>,
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
