//! What SotW and delta streams share: node identity, the ambassador it maps to, the snapshot it
//! reads, nonces, make-before-break ordering and registry bookkeeping.

use super::registry::{Registry, StreamKind};
use crate::cache::{Resource, Snapshot, Snapshots};
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
        let (id, cluster) = (self.node_id.clone(), self.node_cluster.clone());
        self.registry.update(self.id, |c| {
            c.node_id = id;
            c.node_cluster = cluster;
        });
        self.resolve_ambassador();
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

    /// The snapshot this client gets, if its node maps to an ambassador.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.ambassador
            .as_ref()
            .and_then(|a| self.snapshots.by_ambassador.get(a))
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
