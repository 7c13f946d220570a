//! Versioned snapshot cache: one snapshot per ambassador, each resource encoded once.
//!
//! The cache knows nothing about streams (that is `crate::server`); the server knows nothing
//! about YAML or translation. Updates are published through one `watch` channel holding an
//! immutable [`Snapshots`] value; streams compare what they last sent with the new value and
//! push only what changed for them.
//!
//! Invariants:
//! - a [`Resource`] is immutable and encoded exactly once; equal content anywhere (two
//!   ambassadors, two generations) shares one `Arc`;
//! - versions are content hashes, so an unchanged resource keeps its version across reloads
//!   and restarts.

mod flavor;
mod resource;
mod snapshot;

pub use flavor::{Aliases, Flavor};
pub use resource::Resource;
pub use snapshot::{Snapshot, Snapshots, TypeResources};

use crate::model::Config;
use crate::translate;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

/// Holds the current [`Snapshots`] and notifies streams when they change.
pub struct SnapshotCache {
    tx: watch::Sender<Arc<Snapshots>>,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotCache {
    /// An empty cache (no ambassadors, generation 0).
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshots::default()));
        SnapshotCache { tx }
    }

    /// The current snapshots.
    pub fn current(&self) -> Arc<Snapshots> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshots>> {
        self.tx.subscribe()
    }

    /// Translates `config` and publishes it as generation `generation`. Resources whose content
    /// did not change keep their previous `Arc` (and bytes); an ambassador whose snapshot is
    /// unchanged keeps its previous `Arc<Snapshot>`, so streams skip it cheaply.
    pub fn publish(&self, config: &Config, generation: u64) -> Arc<Snapshots> {
        self.publish_with(config, &translate::grpc::Resolved::default(), generation)
    }

    /// [`SnapshotCache::publish`] with the addresses of DNS endpoints, which the gRPC flavour
    /// needs (gRPC clients take IP literals only; the loading stage resolves them).
    pub fn publish_with(
        &self,
        config: &Config,
        resolved: &translate::grpc::Resolved,
        generation: u64,
    ) -> Arc<Snapshots> {
        let envoy = config
            .ambassadors
            .iter()
            .map(|(name, amb)| (name.clone(), translate::ambassador(config, amb)))
            .collect();
        let grpc = config
            .ambassadors
            .iter()
            .map(|(name, amb)| {
                let resources = translate::grpc::ambassador(config, amb, resolved);
                (name.clone(), resources)
            })
            .collect();
        self.publish_flavors(envoy, grpc, generation)
    }

    /// Publishes already-translated resources per ambassador as generation `generation`.
    /// `publish` is this plus translation; tests use it directly to serve resources that the
    /// YAML cannot express (for example, ones a data plane must reject).
    pub fn publish_resources(
        &self,
        by_ambassador: BTreeMap<String, translate::Resources>,
        generation: u64,
    ) -> Arc<Snapshots> {
        self.publish_flavors(by_ambassador, BTreeMap::new(), generation)
    }

    /// Publishes already-translated resources of both flavours (see [`Flavor`]).
    pub fn publish_flavors(
        &self,
        envoy: BTreeMap<String, translate::Resources>,
        grpc: BTreeMap<String, translate::Resources>,
        generation: u64,
    ) -> Arc<Snapshots> {
        let previous = self.current();
        let mut interner = Interner::from_previous(&previous);
        let mut build = |flavor: Flavor, translated: BTreeMap<String, translate::Resources>| {
            let mut snapshots = BTreeMap::new();
            for (name, resources) in translated {
                let mut snapshot = Snapshot::build(&resources, &mut interner);
                if flavor == Flavor::Grpc {
                    snapshot.aliases = Aliases::grpc_listeners();
                }
                let snapshot = match previous.of_flavor(flavor).get(&name) {
                    Some(old) if old.same_content(&snapshot) => old.clone(),
                    _ => Arc::new(snapshot),
                };
                snapshots.insert(name, snapshot);
            }
            snapshots
        };
        let by_ambassador = build(Flavor::Envoy, envoy);
        let grpc_by_ambassador = build(Flavor::Grpc, grpc);
        let next = Arc::new(Snapshots {
            generation,
            by_ambassador,
            grpc_by_ambassador,
        });
        self.tx.send_replace(next.clone());
        next
    }
}

/// Deduplicates encoded resources by content hash within one publish, seeded with the previous
/// generation so unchanged resources keep their allocation.
pub(crate) struct Interner {
    by_hash: HashMap<(String, u64), Arc<Resource>>,
}

impl Interner {
    fn from_previous(previous: &Snapshots) -> Self {
        let mut by_hash = HashMap::new();
        let all = previous.by_ambassador.values();
        for snap in all.chain(previous.grpc_by_ambassador.values()) {
            for typed in snap.types.values() {
                for r in typed.items.values() {
                    by_hash.insert((r.type_url.clone(), r.hash), r.clone());
                }
            }
        }
        Interner { by_hash }
    }

    /// Returns the shared resource for this content, encoding it only if it is new.
    pub(crate) fn intern(&mut self, fresh: Resource) -> Arc<Resource> {
        self.by_hash
            .entry((fresh.type_url.clone(), fresh.hash))
            .or_insert_with(|| Arc::new(fresh))
            .clone()
    }
}
