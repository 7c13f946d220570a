//! What every connected xDS client is doing, for `/clients`, CSDS and `/metrics`.
//!
//! Streams write their own entry; readers take a consistent copy. Nothing here blocks a stream
//! for longer than one map-shard lock.

use crate::cache::{Flavor, Resource};
use dashmap::DashMap;
use legate_proto::pb::envoy::config::core::v3::Node;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kind of stream a client opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// ADS, state of the world.
    AdsSotw,
    /// ADS, incremental.
    AdsDelta,
    /// A per-type service, state of the world.
    Sotw,
    /// A per-type service, incremental.
    Delta,
}

impl StreamKind {
    /// True for the aggregated (ADS) kinds.
    pub fn is_ads(self) -> bool {
        matches!(self, StreamKind::AdsSotw | StreamKind::AdsDelta)
    }
}

/// Per-type status of one client.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent (SotW), or of the last resource set sent (delta).
    pub sent_version: String,
    /// Version the client last ACKed.
    pub acked_version: String,
    /// Nonce of the last response sent.
    pub sent_nonce: String,
    /// Resource names the client subscribes to (`*` for wildcard).
    pub subscribed: Vec<String>,
    /// The last NACK's error message.
    pub last_nack: Option<String>,
    /// The version that was NACKed last.
    pub nacked_version: Option<String>,
    /// Responses sent.
    pub pushes: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// What the client was last sent and holds (once ACKed), by name; for CSDS.
    #[serde(skip)]
    pub resources: BTreeMap<String, Arc<Resource>>,
}

/// One connected stream.
#[derive(Clone, Debug, Serialize)]
pub struct ClientStatus {
    /// Stream id, unique for the life of the process.
    pub stream_id: u64,
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// The ambassador whose snapshot this client gets, if any.
    pub ambassador: Option<String>,
    /// The flavour of snapshot it gets, chosen on its first request.
    pub flavor: Option<Flavor>,
    /// `node.user_agent_name`.
    pub user_agent: String,
    /// The node as the client sent it (for CSDS).
    #[serde(skip)]
    pub node: Option<Node>,
    /// Stream kind.
    pub kind: StreamKind,
    /// Peer address.
    pub peer: String,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Process-wide counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses sent.
    pub pushes: AtomicU64,
    /// ACKs received.
    pub acks: AtomicU64,
    /// NACKs received.
    pub nacks: AtomicU64,
    /// Streams opened since start.
    pub streams_total: AtomicU64,
}

/// All connected clients.
#[derive(Debug, Default)]
pub struct Registry {
    clients: DashMap<u64, ClientStatus>,
    next_id: AtomicU64,
    /// Counters.
    pub counters: Counters,
}

impl Registry {
    /// Registers a new stream and returns its id.
    pub fn open(&self, kind: StreamKind, peer: String) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.counters.streams_total.fetch_add(1, Ordering::Relaxed);
        self.clients.insert(
            id,
            ClientStatus {
                stream_id: id,
                node_id: String::new(),
                node_cluster: String::new(),
                ambassador: None,
                flavor: None,
                user_agent: String::new(),
                node: None,
                kind,
                peer,
                types: BTreeMap::new(),
            },
        );
        id
    }

    /// Removes a stream.
    pub fn close(&self, id: u64) {
        self.clients.remove(&id);
    }

    /// Updates a stream's entry in place.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut ClientStatus)) {
        if let Some(mut entry) = self.clients.get_mut(&id) {
            f(&mut entry);
        }
    }

    /// Updates one type's status of a stream.
    pub fn update_type(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.update(id, |c| f(c.types.entry(type_url.to_string()).or_default()));
    }

    /// A copy of every client, ordered by stream id.
    pub fn snapshot(&self) -> Vec<ClientStatus> {
        let mut all: Vec<ClientStatus> = self.clients.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|c| c.stream_id);
        all
    }

    /// Number of connected streams.
    pub fn connected(&self) -> usize {
        self.clients.len()
    }

    /// Counts one event.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
