//! The SDS secrets in force, and how they reach the clusters that reference them.
//!
//! An SDS update is the complete set of subscribed secrets. It is validated as a whole (every
//! secret parses and its key matches its certificate; every cluster it changes builds a
//! client configuration) before anything changes, so a bad secret is a NACK naming the secret
//! and the field, and the previous secrets stay in force. An accepted update installs new
//! client configurations in the clusters whose secrets changed: new connections use them,
//! connections made with the old ones drain (see `proxy/pool.rs`).

use super::{ClusterTls, Secret, TlsClient, parse_secret};
use crate::config::ClusterConfig;
use crate::runtime::cluster::Cluster;
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret as SecretProto;
use legate_proto::pb::google::protobuf::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One secret in force.
#[derive(Clone, Debug)]
pub struct SecretEntry {
    /// The validated material.
    pub secret: Arc<Secret>,
    /// The resource as received (for `/config_dump`, which redacts the key).
    pub any: Any,
    /// When it last changed.
    pub updated: SystemTime,
    /// The version it came with.
    pub version: String,
}

/// The SDS secrets in force, by name.
#[derive(Debug, Default)]
pub struct SecretStore {
    secrets: Mutex<BTreeMap<String, SecretEntry>>,
}

impl SecretStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SecretEntry>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The secret named `name`, if it has arrived.
    pub fn get(&self, name: &str) -> Option<Arc<Secret>> {
        self.lock().get(name).map(|e| e.secret.clone())
    }

    /// The secrets in force (for `/config_dump`).
    pub fn entries(&self) -> Vec<(String, SecretEntry)> {
        self.lock()
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }

    /// Checks that a cluster's TLS context can be built now: its inline material reads and
    /// parses, and the secrets it references that have arrived are of the right kind. Errors
    /// read ``cluster `name`: field: message``.
    pub fn check(&self, cfg: &ClusterConfig) -> Result<(), String> {
        let Some(tls) = &cfg.tls else { return Ok(()) };
        let secrets = self.lock();
        let lookup = |name: &str| secrets.get(name).map(|e| e.secret.clone());
        super::build_client(tls, cfg.protocol, &lookup)
            .map(|_| ())
            .map_err(|e| format!("cluster `{}`: {e}", cfg.name))
    }

    /// Installs the client configuration of a new cluster if its secrets are there (else it
    /// warms until they arrive).
    pub fn attach(&self, cluster: &Cluster) {
        let Some(tls) = &cluster.tls else { return };
        let secrets = self.lock();
        let lookup = |name: &str| secrets.get(name).map(|e| e.secret.clone());
        match tls.build(&lookup) {
            Ok(Some(client)) => tls.install(client),
            Ok(None) => {}
            // `check` ran before the cluster was created; only a file changing in between gets
            // here. The cluster keeps warming.
            Err(e) => tracing::warn!(cluster = %cluster.config.name, error = %e, "TLS context"),
        }
    }

    /// Applies a complete SDS update. `clusters` are every cluster the manager holds (warm or
    /// warming); `version_of` gives a secret's version. Nothing changes on error.
    pub fn apply(
        &self,
        resources: &BTreeMap<String, Any>,
        clusters: &[Arc<Cluster>],
        version_of: &dyn Fn(&str) -> String,
    ) -> Result<(), String> {
        let mut current = self.lock();
        let now = SystemTime::now();
        let mut next: BTreeMap<String, SecretEntry> = BTreeMap::new();
        let mut changed: Vec<&str> = Vec::new();
        for (name, any) in resources {
            if let Some(old) = current.get(name)
                && old.any == *any
            {
                next.insert(name.clone(), old.clone());
                continue;
            }
            let proto: SecretProto =
                legate_proto::any::unpack(any).map_err(|e| format!("secret `{name}`: {e}"))?;
            let secret = parse_secret(&proto)?;
            changed.push(name);
            next.insert(
                name.clone(),
                SecretEntry {
                    secret: Arc::new(secret),
                    any: any.clone(),
                    updated: now,
                    version: version_of(name),
                },
            );
        }
        // Build every affected cluster's new configuration before installing any.
        let lookup = |name: &str| next.get(name).map(|e| e.secret.clone());
        let mut staged: Vec<(&ClusterTls, Option<TlsClient>, u64)> = Vec::new();
        for cluster in clusters {
            let Some(tls) = &cluster.tls else { continue };
            let updated = tls
                .config
                .sds_names()
                .filter(|n| changed.contains(n))
                .count() as u64;
            let removed = tls
                .config
                .sds_names()
                .any(|n| current.contains_key(n) && !next.contains_key(n));
            if updated == 0 && !removed {
                continue;
            }
            match tls.build(&lookup) {
                Ok(client) => staged.push((tls, client, updated)),
                Err(e) => return Err(format!("cluster `{}`: {e}", cluster.config.name)),
            }
        }
        for (tls, client, updated) in staged {
            // Envoy counts each secret update its TLS context receives.
            tls.stats.context_update_by_sds.add(updated);
            // `None`: a referenced secret went away; Envoy keeps the context it has.
            if let Some(client) = client {
                tls.install(client);
            }
        }
        if !changed.is_empty() {
            tracing::info!(secrets = ?changed, "SDS secrets updated");
        }
        *current = next;
        Ok(())
    }
}
