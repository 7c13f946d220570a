//! Service endpoints → `ClusterLoadAssignment`.

use super::util::{socket_address, u32_value};
use crate::model::Service;
use legate_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};

/// The load assignment of a service: one locality (weight 1, which gRPC clients require) holding
/// every endpoint with its weight.
pub fn load_assignment(svc: &Service) -> ClusterLoadAssignment {
    let lb_endpoints = svc
        .endpoints
        .iter()
        .map(|ep| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&ep.host, ep.port)),
                ..Default::default()
            })),
            load_balancing_weight: Some(u32_value(ep.weight)),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: svc.name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(u32_value(1)),
            ..Default::default()
        }],
        ..Default::default()
    }
}
