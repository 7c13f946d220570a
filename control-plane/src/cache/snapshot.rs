//! Per-ambassador snapshots and the set of all of them.

use super::{Aliases, Flavor, Interner, Resource};
use crate::translate::Resources;
use legate_proto::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use legate_proto::type_url;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Every ambassador's snapshot at one configuration generation.
#[derive(Debug, Default)]
pub struct Snapshots {
    /// Increases by one with every accepted configuration.
    pub generation: u64,
    /// Snapshot per ambassador name.
    pub by_ambassador: BTreeMap<String, Arc<Snapshot>>,
    /// The gRPC flavour of each ambassador's snapshot (proxyless gRPC clients).
    pub grpc_by_ambassador: BTreeMap<String, Arc<Snapshot>>,
}

impl Snapshots {
    /// The ambassador for a node: `node.cluster` if it names one, else `node.id`, else `default`.
    pub fn ambassador_for(&self, node_cluster: &str, node_id: &str) -> Option<&str> {
        [node_cluster, node_id, "default"]
            .into_iter()
            .find_map(|name| {
                self.by_ambassador
                    .get_key_value(name)
                    .map(|(k, _)| k.as_str())
            })
    }

    /// The snapshots of one flavour, by ambassador.
    pub fn of_flavor(&self, flavor: Flavor) -> &BTreeMap<String, Arc<Snapshot>> {
        match flavor {
            Flavor::Envoy => &self.by_ambassador,
            Flavor::Grpc => &self.grpc_by_ambassador,
        }
    }
}

/// The resources of one type in a snapshot.
#[derive(Debug, Default, PartialEq)]
pub struct TypeResources {
    /// Resources by name.
    pub items: BTreeMap<String, Arc<Resource>>,
}

/// Everything one ambassador receives.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Resources by type URL (every served type is present, possibly empty).
    pub types: BTreeMap<&'static str, TypeResources>,
    /// Resources answered under another name (gRPC listeners `S:PORT`); see `flavor.rs`.
    pub(crate) aliases: Aliases,
}

impl Snapshot {
    /// Encodes translated resources, sharing equal ones through `interner`.
    pub(crate) fn build(resources: &Resources, interner: &mut Interner) -> Snapshot {
        let mut types: BTreeMap<&'static str, TypeResources> = type_url::ADS_ORDER
            .iter()
            .map(|t| (*t, TypeResources::default()))
            .collect();
        let mut put = |t: &'static str, r: Resource| {
            let r = interner.intern(r);
            if let Some(typed) = types.get_mut(t) {
                typed.items.insert(r.name.clone(), r);
            }
        };
        for c in &resources.clusters {
            put(type_url::CLUSTER, Resource::encode(&c.name, c, Vec::new()));
        }
        for e in &resources.endpoints {
            put(
                type_url::ENDPOINT,
                Resource::encode(&e.cluster_name, e, Vec::new()),
            );
        }
        for l in &resources.listeners {
            put(type_url::LISTENER, Resource::encode(&l.name, l, Vec::new()));
        }
        for s in &resources.secrets {
            put(type_url::SECRET, Resource::encode(&s.name, s, Vec::new()));
        }
        for r in &resources.routes {
            put(
                type_url::ROUTE,
                Resource::encode(&r.name, r, referenced_clusters(r)),
            );
        }
        Snapshot {
            types,
            aliases: Aliases::default(),
        }
    }

    /// The resources of a type (empty when the type is not served).
    pub fn of(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }

    /// True when both snapshots hold the same resources (pointer or content equality).
    pub fn same_content(&self, other: &Snapshot) -> bool {
        self.types.len() == other.types.len()
            && self.types.iter().all(|(t, a)| {
                other.types.get(t).is_some_and(|b| {
                    a.items.len() == b.items.len()
                        && a.items
                            .iter()
                            .zip(b.items.iter())
                            .all(|((n1, r1), (n2, r2))| n1 == n2 && r1.hash == r2.hash)
                })
            })
    }
}

/// Every cluster a route configuration can send traffic to.
fn referenced_clusters(rc: &RouteConfiguration) -> Vec<String> {
    let mut out = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            let Some(route::Action::Route(action)) = &r.action else {
                continue;
            };
            match &action.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => {
                    out.insert(c.clone());
                }
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    out.extend(w.clusters.iter().map(|c| c.name.clone()));
                }
                _ => {}
            }
        }
    }
    out.into_iter().collect()
}
