//! Flavours of snapshot: what Envoy-like data planes get, and what proxyless gRPC clients get.
//!
//! Every ambassador has one snapshot of each flavour; a stream reads one of them, chosen once
//! from its first request (see `crate::server::stream::choose_flavor`). The gRPC flavour also
//! answers listener names `S:PORT` (targets `xds:///S:PORT`) by renaming the listener `S`; each
//! such alias is encoded once per snapshot and shared by every stream that asks for it.

use super::{Resource, Snapshot};
use crate::translate::grpc;
use legate_proto::type_url;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Which kind of client a snapshot is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Envoy and legate-proxy: a listener on a socket per ambassador, SDS for TLS.
    #[default]
    Envoy,
    /// Proxyless gRPC clients: one API listener per service, IP-literal endpoints, only the
    /// fields gRPC understands.
    Grpc,
}

impl Flavor {
    /// The name used in `/clients`, logs and node metadata (`LEGATE_FLAVOR`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Envoy => "envoy",
            Flavor::Grpc => "grpc",
        }
    }
}

/// Lazily encoded `S:PORT` listeners of a gRPC snapshot. Ignored by equality: two snapshots with
/// the same resources are the same whatever aliases clients asked for.
#[derive(Debug, Default)]
pub struct Aliases {
    /// `None`: this snapshot answers no alias (the Envoy flavour).
    by_name: Option<Mutex<BTreeMap<String, Arc<Resource>>>>,
}

impl Aliases {
    /// Aliases for a gRPC snapshot.
    pub(crate) fn grpc_listeners() -> Self {
        Aliases {
            by_name: Some(Mutex::new(BTreeMap::new())),
        }
    }
}

impl PartialEq for Aliases {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Snapshot {
    /// A resource that is not in `items` but answers `name` all the same: the gRPC listener
    /// `S:PORT` when the snapshot has the listener `S`.
    pub fn alias(&self, type_url: &str, name: &str) -> Option<Arc<Resource>> {
        let memo = self.aliases.by_name.as_ref()?;
        if type_url != type_url::LISTENER {
            return None;
        }
        let service = grpc::port_alias(name)?;
        if !self.of(type_url)?.items.contains_key(service) {
            return None;
        }
        let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
        let r = memo
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Resource::encode(name, &grpc::listener(name), Vec::new())));
        Some(r.clone())
    }
}
