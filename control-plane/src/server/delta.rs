//! Incremental (delta) streams (ADS and per-type).
//!
//! Versions are per resource (content hashes). Subscription changes apply even when the nonce
//! is stale. On reconnect the client's `initial_resource_versions` say what it already has, so
//! unchanged resources are not sent again; deleted names go in `removed_resources`.

use super::drive::StreamMachine;
use super::registry::Registry;
use super::sotw::control_plane_id;
use super::stream::{StreamCore, aliases, clusters_still_referenced};
use super::subscription::Subscription;
use crate::cache::Resource;
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use legate_proto::type_url;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// What the client holds of one resource.
#[derive(Clone)]
struct Held {
    version: String,
    /// The resource we sent; `None` for versions the client announced on reconnect.
    resource: Option<Arc<Resource>>,
}

/// One type's state on a delta stream.
#[derive(Default)]
struct TypeState {
    subscription: Subscription,
    held: BTreeMap<String, Held>,
    /// Explicitly subscribed names already reported as absent.
    reported_absent: BTreeSet<String>,
    nonce: String,
    pending: bool,
    force: bool,
}

impl TypeState {
    fn held_resources(&self) -> BTreeMap<String, Arc<Resource>> {
        self.held
            .iter()
            .filter_map(|(n, h)| h.resource.clone().map(|r| (n.clone(), r)))
            .collect()
    }

    fn held_version(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (name, held) in &self.held {
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(held.version.as_bytes());
        }
        format!("{:016x}", h.digest())
    }
}

/// A delta stream's state machine.
pub struct DeltaStream {
    core: StreamCore,
    types: BTreeMap<String, TypeState>,
    out: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl StreamMachine for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn core_mut(&mut self) -> &mut StreamCore {
        &mut self.core
    }

    fn out(&self) -> &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>> {
        &self.out
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        self.handle_request(req).await
    }

    async fn push_all(&mut self) -> Result<(), Status> {
        self.push_changes().await
    }
}

impl DeltaStream {
    /// A stream that writes responses to `out`.
    pub fn new(
        core: StreamCore,
        out: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Self {
        DeltaStream {
            core,
            types: BTreeMap::new(),
            out,
        }
    }

    async fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        let t = self.core.request_type(&req.type_url)?;
        self.core.observe_node(req.node.as_ref());
        self.core.observe_request(&t, &req.resource_names_subscribe);
        let registry = self.core.registry.clone();
        let first = !self.types.contains_key(&t);
        let st = self.types.entry(t.clone()).or_default();
        if first {
            st.subscription = Subscription::delta_initial(&t, &req.resource_names_subscribe);
            st.held = req
                .initial_resource_versions
                .iter()
                .map(|(name, version)| {
                    let held = Held {
                        version: version.clone(),
                        resource: None,
                    };
                    (name.clone(), held)
                })
                .collect();
            st.force = true;
        } else {
            let before = st.subscription.clone();
            st.subscription.apply_delta(
                &req.resource_names_subscribe,
                &req.resource_names_unsubscribe,
            );
            for name in &req.resource_names_unsubscribe {
                if !st.subscription.covers(name) {
                    st.held.remove(name);
                    st.reported_absent.remove(name);
                }
            }
            if st.subscription.adds_to(&before) {
                // A re-subscribed name is sent again even if the client had it.
                for name in &req.resource_names_subscribe {
                    st.held.remove(name);
                    st.reported_absent.remove(name);
                }
            }
        }
        let described = st.subscription.describe();
        registry.update_type(self.core.id, &t, |s| s.subscribed = described);
        if !req.response_nonce.is_empty() {
            if req.response_nonce != st.nonce {
                tracing::debug!(stream = self.core.id, type_url = %t, "stale nonce: applied the subscription change only");
            } else if let Some(err) = &req.error_detail {
                // The client keeps its previous resources. We keep our record of what we sent,
                // so the rejected versions are not resent until their content changes.
                st.pending = false;
                Registry::count(&registry.counters.nacks);
                tracing::warn!(
                    stream = self.core.id,
                    type_url = %t,
                    error = %err.message,
                    "client rejected (NACKed) a delta response"
                );
                let (msg, version) = (err.message.clone(), st.held_version());
                registry.update_type(self.core.id, &t, |s| {
                    s.nacks += 1;
                    s.last_nack = Some(msg);
                    s.nacked_version = Some(version);
                });
            } else {
                st.pending = false;
                Registry::count(&registry.counters.acks);
                let version = st.held_version();
                registry.update_type(self.core.id, &t, |s| {
                    s.acks += 1;
                    s.acked_version = version;
                });
            }
        }
        self.push_changes().await
    }

    async fn push_changes(&mut self) -> Result<(), Status> {
        for t in self.core.push_order() {
            if !self.types.contains_key(t) {
                continue;
            }
            if self.core.kind.is_ads()
                && type_url::held_back_by(t)
                    .iter()
                    .any(|blocker| self.types.get(*blocker).is_some_and(|s| s.pending))
            {
                continue;
            }
            if let Some(resp) = self.prepare(t) {
                self.out
                    .send(Ok(resp))
                    .await
                    .map_err(|_| Status::cancelled("client went away"))?;
            }
        }
        Ok(())
    }

    fn prepare(&mut self, t: &'static str) -> Option<DeltaDiscoveryResponse> {
        let snapshot = self.core.snapshot()?;
        let typed = snapshot.of(t)?;
        let st = self.types.get(t)?;
        let mut wanted: BTreeMap<String, Arc<Resource>> = typed
            .items
            .iter()
            .filter(|(name, _)| st.subscription.covers(name))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        wanted.extend(aliases(snapshot, t, &st.subscription, &wanted));
        if t == type_url::CLUSTER
            && let Some(routes) = self.types.get(type_url::ROUTE)
        {
            let held_routes = routes.held_resources();
            wanted.extend(clusters_still_referenced(
                &held_routes,
                &st.held_resources(),
                &wanted,
            ));
        }
        let changed: Vec<Arc<Resource>> = wanted
            .values()
            .filter(|r| st.held.get(&r.name).is_none_or(|h| h.version != r.version))
            .cloned()
            .collect();
        let mut removed: Vec<String> = st
            .held
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        let absent: Vec<String> = st
            .subscription
            .names
            .iter()
            .filter(|n| {
                !wanted.contains_key(*n)
                    && !st.held.contains_key(*n)
                    && !st.reported_absent.contains(*n)
            })
            .cloned()
            .collect();
        removed.extend(absent.iter().cloned());
        if changed.is_empty() && removed.is_empty() && !st.force {
            return None;
        }
        let nonce = self.core.next_nonce();
        let st = self.types.get_mut(t)?;
        for r in &changed {
            st.held.insert(
                r.name.clone(),
                Held {
                    version: r.version.clone(),
                    resource: Some(r.clone()),
                },
            );
        }
        for name in &removed {
            st.held.remove(name);
        }
        st.reported_absent.extend(absent);
        st.nonce = nonce.clone();
        st.pending = true;
        st.force = false;
        let version = st.held_version();
        Registry::count(&self.core.registry.counters.pushes);
        let (n, v) = (nonce.clone(), version.clone());
        let held = st.held_resources();
        self.core.registry.update_type(self.core.id, t, |s| {
            s.pushes += 1;
            s.sent_version = v;
            s.sent_nonce = n;
            s.resources = held;
        });
        tracing::debug!(
            stream = self.core.id,
            type_url = t,
            changed = changed.len(),
            removed = removed.len(),
            "delta push"
        );
        Some(DeltaDiscoveryResponse {
            system_version_info: self.core.generation().to_string(),
            resources: changed
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: t.to_string(),
            removed_resources: removed,
            nonce,
            control_plane: Some(control_plane_id()),
            ..Default::default()
        })
    }
}
