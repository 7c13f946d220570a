//! What SotW and delta streams share: node identity, the ambassador it maps to, the snapshot it
//! reads, nonces, make-before-break ordering and registry bookkeeping.

use super::registry::{Registry, StreamKind};
use crate::cache::{Flavor, Resource, Snapshot, Snapshots};
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::type_url;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Per-stream state common to both protocol variants.
pub struct StreamCore {
    /// Registry id of this stream.
    pub id: u64,
    /// Kind of stream.
    pub kind: StreamKind,
    /// The only type a per-type stream serves; `None` on ADS.
    pub fixed_type: Option<&'static str>,
    /// Shared registry.
    pub registry: Arc<Registry>,
    node_id: String,
    node_cluster: String,
    has_node: bool,
    ambassador: Option<String>,
    snapshots: Arc<Snapshots>,
    warned_unknown: bool,
    nonce: u64,
    /// Chosen from the first request (see [`choose_flavor`]); `None` before it.
    flavor: Option<Flavor>,
    node: Option<Node>,
}

impl StreamCore {
    /// A new stream core reading `snapshots`.
    pub fn new(
        registry: Arc<Registry>,
        kind: StreamKind,
        fixed_type: Option<&'static str>,
        peer: String,
        snapshots: Arc<Snapshots>,
    ) -> Self {
        let id = registry.open(kind, peer);
        StreamCore {
            id,
            kind,
            fixed_type,
            registry,
            node_id: String::new(),
            node_cluster: String::new(),
            has_node: false,
            ambassador: None,
            snapshots,
            warned_unknown: false,
            nonce: 0,
            flavor: None,
            node: None,
        }
    }

    /// The type URL a request is about: fixed for per-type streams, required on ADS.
    pub fn request_type(&self, requested: &str) -> Result<String, tonic::Status> {
        match self.fixed_type {
            Some(t) => Ok(t.to_string()),
            None if requested.is_empty() => Err(tonic::Status::invalid_argument(
                "type_url is required on an aggregated (ADS) stream",
            )),
            None => Ok(requested.to_string()),
        }
    }

    /// Records the node from the first request that carries one (only the first must).
    pub fn observe_node(&mut self, node: Option<&Node>) {
        if self.has_node {
            return;
        }
        let Some(node) = node else { return };
        self.has_node = true;
        self.node_id = node.id.clone();
        self.node_cluster = node.cluster.clone();
        self.node = Some(node.clone());
        let (id, cluster) = (self.node_id.clone(), self.node_cluster.clone());
        let (agent, full) = (node.user_agent_name.clone(), node.clone());
        self.registry.update(self.id, |c| {
            c.node_id = id;
            c.node_cluster = cluster;
            c.user_agent = agent;
            c.node = Some(full);
        });
        self.resolve_ambassador();
    }

    /// Chooses the stream's flavour on its first request (after [`StreamCore::observe_node`]);
    /// later requests change nothing.
    pub fn observe_request(&mut self, type_url: &str, names: &[String]) {
        if self.flavor.is_some() {
            return;
        }
        let (flavor, why) = choose_flavor(self.node.as_ref(), type_url, names);
        tracing::debug!(stream = self.id, node.id = %self.node_id, flavor = flavor.as_str(), why, "flavour chosen");
        self.flavor = Some(flavor);
        self.registry.update(self.id, |c| c.flavor = Some(flavor));
    }

    /// Installs new snapshots and re-resolves the ambassador.
    pub fn set_snapshots(&mut self, snapshots: Arc<Snapshots>) {
        self.snapshots = snapshots;
        self.resolve_ambassador();
    }

    fn resolve_ambassador(&mut self) {
        if !self.has_node {
            return;
        }
        let found = self
            .snapshots
            .ambassador_for(&self.node_cluster, &self.node_id)
            .map(str::to_string);
        if found.is_none() && !self.warned_unknown {
            self.warned_unknown = true;
            tracing::warn!(
                node.id = %self.node_id,
                node.cluster = %self.node_cluster,
                "node matches no ambassador and there is no `default` ambassador; it gets nothing"
            );
        }
        if found != self.ambassador {
            let amb = found.clone();
            self.registry.update(self.id, |c| c.ambassador = amb);
            self.ambassador = found;
        }
    }

    /// The snapshot this client gets, if its node maps to an ambassador: the ambassador's
    /// snapshot of the stream's flavour.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        let flavor = self.flavor.unwrap_or_default();
        self.ambassador
            .as_ref()
            .and_then(|a| self.snapshots.of_flavor(flavor).get(a))
            .map(|s| s.as_ref())
    }

    /// The configuration generation currently read.
    pub fn generation(&self) -> u64 {
        self.snapshots.generation
    }

    /// A fresh nonce, unique on this stream.
    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// The order in which to consider pushes: make-before-break on ADS, the one type otherwise.
    pub fn push_order(&self) -> Vec<&'static str> {
        match self.fixed_type {
            Some(t) => vec![t],
            None => type_url::ADS_ORDER.to_vec(),
        }
    }
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        self.registry.close(self.id);
    }
}

/// The node metadata key that names a flavour explicitly (`grpc` or `envoy`).
pub const FLAVOR_METADATA_KEY: &str = "LEGATE_FLAVOR";

/// Which flavour of snapshot a stream gets, and why. The first rule that applies wins:
/// 1. node metadata `LEGATE_FLAVOR: grpc | envoy`;
/// 2. the node's `user_agent_name`: one that mentions gRPC (`gRPC C-core`, `gRPC Java`, `gRPC Go`,
///    `gRPC Node Pure JS`) is a gRPC client; one that mentions Envoy or Legate is not;
/// 3. the first request: LDS naming listeners explicitly, without the wildcard, is how a gRPC
///    client starts (it asks for its target), while Envoy asks for every listener;
/// 4. otherwise Envoy.
pub fn choose_flavor(
    node: Option<&Node>,
    type_url: &str,
    names: &[String],
) -> (Flavor, &'static str) {
    use legate_proto::pb::google::protobuf::value::Kind;
    let declared = node
        .and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get(FLAVOR_METADATA_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.to_ascii_lowercase()),
            _ => None,
        });
    match declared.as_deref() {
        Some("grpc") => return (Flavor::Grpc, "node metadata LEGATE_FLAVOR"),
        Some("envoy") => return (Flavor::Envoy, "node metadata LEGATE_FLAVOR"),
        _ => {}
    }
    let agent = node
        .map(|n| n.user_agent_name.to_ascii_lowercase())
        .unwrap_or_default();
    if agent.contains("grpc") {
        return (Flavor::Grpc, "user agent");
    }
    if agent.contains("envoy") || agent.contains("legate") {
        return (Flavor::Envoy, "user agent");
    }
    if type_url == type_url::LISTENER && !names.is_empty() && !names.iter().any(|n| n == "*") {
        return (Flavor::Grpc, "first request names listeners");
    }
    (Flavor::Envoy, "default")
}

/// Version of a set of resources: a hash of their names and versions (stable, content-based).
pub fn set_version<'a>(items: impl Iterator<Item = (&'a String, &'a Arc<Resource>)>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, r) in items {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(&r.hash.to_le_bytes());
    }
    format!("{:016x}", h.digest())
}

/// Explicitly subscribed names that the snapshot answers under another name (gRPC listeners
/// `S:PORT`), and that `wanted` does not hold yet.
pub fn aliases(
    snapshot: &Snapshot,
    type_url: &str,
    subscription: &super::subscription::Subscription,
    wanted: &BTreeMap<String, Arc<Resource>>,
) -> Vec<(String, Arc<Resource>)> {
    subscription
        .names
        .iter()
        .filter(|n| !wanted.contains_key(*n))
        .filter_map(|n| snapshot.alias(type_url, n).map(|r| (n.clone(), r)))
        .collect()
}

/// Make-before-break for clusters: the clusters the client must keep because a route it still
/// holds points at them, even though the new snapshot dropped them.
pub fn clusters_still_referenced(
    held_routes: &BTreeMap<String, Arc<Resource>>,
    held_clusters: &BTreeMap<String, Arc<Resource>>,
    wanted: &BTreeMap<String, Arc<Resource>>,
) -> Vec<(String, Arc<Resource>)> {
    let mut keep = Vec::new();
    for route in held_routes.values() {
        for c in &route.referenced_clusters {
            if wanted.contains_key(c) {
                continue;
            }
            if let Some(r) = held_clusters.get(c) {
                keep.push((c.clone(), r.clone()));
            }
        }
    }
    keep
}
