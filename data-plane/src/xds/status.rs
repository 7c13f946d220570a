//! Observable state of the ADS client, for the admin `/config_dump`, stats and tests.
//!
//! The client task is the only writer: it keeps its own copy, changes it once per event and
//! publishes an immutable snapshot through an [`ArcSwap`]. Readers never block the client and
//! never see a half-applied update; reading is a lock-free pointer load.

use arc_swap::ArcSwap;
use legate_proto::type_url::{CLUSTER, LISTENER};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// A snapshot of the ADS client's state.
#[derive(Clone, Debug, Default)]
pub struct XdsStatus {
    /// True while a stream to a management server is established.
    pub connected: bool,
    /// The management server (`host:port`) of the current or last stream.
    pub server: Option<String>,
    /// True for incremental (`DELTA_GRPC`) ADS, false for state of the world (`GRPC`).
    pub delta: bool,
    /// Streams established since start.
    pub streams_established: u64,
    /// Connection attempts that failed and established streams that were lost.
    pub stream_failures: u64,
    /// Per resource type URL; a type appears once its first response arrived.
    pub types: BTreeMap<String, TypeStatus>,
}

/// What the client knows about one resource type.
#[derive(Clone, Debug, Default)]
pub struct TypeStatus {
    /// The version in force: the last ACKed `version_info` (SotW) or `system_version_info`
    /// (delta). Empty until the first update is accepted.
    pub version_info: String,
    /// Delta only: name → version of every resource in force (what the client would announce
    /// in `initial_resource_versions`). Empty for SotW.
    pub resource_versions: Arc<BTreeMap<String, String>>,
    /// Number of resources in force.
    pub resource_count: usize,
    /// When the last update was accepted.
    pub last_updated: Option<SystemTime>,
    /// The last rejected update. It is kept after later successes (compare `at` with
    /// `last_updated` to know whether the rejection is still the latest event).
    pub last_nack: Option<NackStatus>,
    /// Resources carried by the last response (accepted or not): for delta, how much the
    /// server actually sent (after a reconnect, only what changed).
    pub last_response_resources: usize,
    /// Names in the last response's `removed_resources` (delta).
    pub last_response_removed: usize,
    /// Responses received for the type (Envoy's `update_attempt`).
    pub update_attempt: u64,
    /// Responses accepted and ACKed (Envoy's `update_success`).
    pub update_success: u64,
    /// Responses rejected and NACKed (Envoy's `update_rejected`).
    pub update_rejected: u64,
}

/// One rejected (NACKed) response.
#[derive(Clone, Debug)]
pub struct NackStatus {
    /// The rejected response's `version_info` (SotW) or `system_version_info` (delta).
    pub version_info: String,
    /// The rejected response's nonce.
    pub nonce: String,
    /// The `error_detail.message` sent to the server.
    pub message: String,
    /// When the response was rejected.
    pub at: SystemTime,
}

/// The prefix of Envoy's xDS update statistics for a type, where Envoy has a single one:
/// `cluster_manager.cds` and `listener_manager.lds`. (Envoy keeps EDS statistics per cluster,
/// `cluster.<name>.update_*`, and RDS per route configuration,
/// `http.<stat_prefix>.rds.<name>.update_*`.)
pub fn envoy_stat_prefix(type_url: &str) -> Option<&'static str> {
    match type_url {
        CLUSTER => Some("cluster_manager.cds"),
        LISTENER => Some("listener_manager.lds"),
        _ => None,
    }
}

/// What one response carried.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Received {
    /// Resources in the response.
    pub(crate) resources: usize,
    /// Names removed by the response (delta).
    pub(crate) removed: usize,
}

impl Received {
    fn record(self, t: &mut TypeStatus) {
        t.last_response_resources = self.resources;
        t.last_response_removed = self.removed;
    }
}

/// The single writer of an [`XdsStatus`] cell.
pub(crate) struct StatusWriter {
    local: XdsStatus,
    cell: Arc<ArcSwap<XdsStatus>>,
}

impl StatusWriter {
    /// A writer publishing into `cell`, starting from its current content.
    pub(crate) fn new(cell: Arc<ArcSwap<XdsStatus>>) -> Self {
        let local = XdsStatus::clone(&cell.load());
        StatusWriter { local, cell }
    }

    /// Changes the status and publishes the result.
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut XdsStatus)) {
        f(&mut self.local);
        self.cell.store(Arc::new(self.local.clone()));
    }

    /// Changes one type's status and publishes the result.
    pub(crate) fn update_type(&mut self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.update(|s| f(s.types.entry(type_url.to_string()).or_default()));
    }

    /// Records an accepted (ACKed) response.
    pub(crate) fn accepted(
        &mut self,
        type_url: &str,
        version_info: &str,
        resource_count: usize,
        resource_versions: Option<Arc<BTreeMap<String, String>>>,
        received: Received,
    ) {
        self.update_type(type_url, |t| {
            received.record(t);
            t.update_attempt += 1;
            t.update_success += 1;
            t.version_info = version_info.to_string();
            t.resource_count = resource_count;
            if let Some(versions) = resource_versions {
                t.resource_versions = versions;
            }
            t.last_updated = Some(SystemTime::now());
        });
    }

    /// Records a rejected (NACKed) response.
    pub(crate) fn rejected(
        &mut self,
        type_url: &str,
        version_info: &str,
        nonce: &str,
        message: &str,
        received: Received,
    ) {
        self.update_type(type_url, |t| {
            received.record(t);
            t.update_attempt += 1;
            t.update_rejected += 1;
            t.last_nack = Some(NackStatus {
                version_info: version_info.to_string(),
                nonce: nonce.to_string(),
                message: message.to_string(),
                at: SystemTime::now(),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_publishes_each_update() {
        let cell = Arc::new(ArcSwap::from_pointee(XdsStatus::default()));
        let mut w = StatusWriter::new(cell.clone());
        let before = cell.load_full();
        w.update_type(CLUSTER, |t| t.update_attempt += 1);
        assert!(before.types.is_empty(), "old snapshots are immutable");
        assert_eq!(cell.load().types[CLUSTER].update_attempt, 1);
        assert_eq!(envoy_stat_prefix(CLUSTER), Some("cluster_manager.cds"));
    }
}
