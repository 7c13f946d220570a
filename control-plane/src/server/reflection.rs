//! gRPC server reflection (v1 and v1alpha) on the xDS port, so grpcurl-style tools can list and
//! describe the served services.
//!
//! The descriptors come from the Envoy descriptor set that `legate-proto` embeds, cut down to
//! the files the served services need (the whole set is over 3 MB, mostly unrelated
//! extensions).

use legate_proto::json::pool;
use prost_types::FileDescriptorSet;
use std::collections::BTreeSet;

/// Every service the xDS port serves, by full name.
pub const SERVED: [&str; 7] = [
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "envoy.service.cluster.v3.ClusterDiscoveryService",
    "envoy.service.endpoint.v3.EndpointDiscoveryService",
    "envoy.service.listener.v3.ListenerDiscoveryService",
    "envoy.service.route.v3.RouteDiscoveryService",
    "envoy.service.secret.v3.SecretDiscoveryService",
    "envoy.service.status.v3.ClientStatusDiscoveryService",
];

/// The reflection service names themselves.
pub const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The files that define the served services, with everything they import.
pub fn descriptor_set() -> FileDescriptorSet {
    let pool = pool();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<_> = SERVED
        .iter()
        .filter_map(|s| pool.get_service_by_name(s))
        .map(|s| s.parent_file())
        .collect();
    let mut file = Vec::new();
    while let Some(f) = stack.pop() {
        if !seen.insert(f.name().to_string()) {
            continue;
        }
        file.push(f.file_descriptor_proto().clone());
        stack.extend(f.dependencies());
    }
    FileDescriptorSet { file }
}

fn builder(set: FileDescriptorSet) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure().register_file_descriptor_set(set);
    for name in SERVED.iter().chain(REFLECTION.iter()) {
        b = b.with_service_name(*name);
    }
    b
}

/// Adds both reflection services to `routes`. A descriptor set that does not build is logged and
/// leaves reflection out: it must never stop xDS from being served.
pub fn add_to(routes: tonic::service::Routes) -> tonic::service::Routes {
    let set = descriptor_set();
    match (
        builder(set.clone()).build_v1(),
        builder(set).build_v1alpha(),
    ) {
        (Ok(v1), Ok(v1alpha)) => routes.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "gRPC reflection is not served");
            routes
        }
    }
}
