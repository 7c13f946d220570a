//! State-of-the-world streams (ADS and per-type).
//!
//! Rules (see ../shared/REFERENCE.md): a request whose nonce is stale for its type is ignored;
//! `error_detail` marks a NACK, which is recorded and never answered by resending the same
//! version; a re-subscribed name is sent again; LDS/CDS responses are complete.

use super::drive::StreamMachine;
use super::registry::Registry;
use super::stream::{StreamCore, aliases, clusters_still_referenced, set_version};
use super::subscription::Subscription;
use crate::cache::Resource;
use legate_proto::pb::envoy::config::core::v3::ControlPlane;
use legate_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_proto::type_url;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// Identifies this control plane in responses.
pub fn control_plane_id() -> ControlPlane {
    ControlPlane {
        identifier: format!("legate-cp/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// One type's state on a SotW stream.
#[derive(Default)]
struct TypeState {
    subscription: Subscription,
    /// Nonce of the last response of this type.
    nonce: String,
    /// Version of the last response.
    sent_version: String,
    /// What the last response held (the client's view, once ACKed).
    sent: BTreeMap<String, Arc<Resource>>,
    /// A response is out and not yet ACKed or NACKed.
    pending: bool,
    /// Send even if the version did not change (first request, or names added).
    force: bool,
}

/// A SotW stream's state machine.
pub struct SotwStream {
    core: StreamCore,
    types: BTreeMap<String, TypeState>,
    out: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

impl StreamMachine for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn core_mut(&mut self) -> &mut StreamCore {
        &mut self.core
    }

    fn out(&self) -> &mpsc::Sender<Result<DiscoveryResponse, Status>> {
        &self.out
    }

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        self.handle_request(req).await
    }

    async fn push_all(&mut self) -> Result<(), Status> {
        self.push_changes().await
    }
}

impl SotwStream {
    /// A stream that writes responses to `out`.
    pub fn new(core: StreamCore, out: mpsc::Sender<Result<DiscoveryResponse, Status>>) -> Self {
        SotwStream {
            core,
            types: BTreeMap::new(),
            out,
        }
    }

    async fn handle_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        let t = self.core.request_type(&req.type_url)?;
        self.core.observe_node(req.node.as_ref());
        self.core.observe_request(&t, &req.resource_names);
        let first = !self.types.contains_key(&t);
        let st = self.types.entry(t.clone()).or_default();
        if !req.response_nonce.is_empty() && req.response_nonce != st.nonce {
            tracing::debug!(stream = self.core.id, type_url = %t, nonce = %req.response_nonce, "ignoring request with a stale nonce");
            return Ok(());
        }
        let registry = &self.core.registry;
        if let Some(err) = &req.error_detail {
            st.pending = false;
            Registry::count(&registry.counters.nacks);
            tracing::warn!(
                stream = self.core.id,
                type_url = %t,
                version = %st.sent_version,
                error = %err.message,
                "client rejected (NACKed) a response; keeping it on its previous version"
            );
            let (msg, version) = (err.message.clone(), st.sent_version.clone());
            registry.update_type(self.core.id, &t, |s| {
                s.nacks += 1;
                s.last_nack = Some(msg);
                s.nacked_version = Some(version);
            });
        } else if !req.response_nonce.is_empty() {
            st.pending = false;
            Registry::count(&registry.counters.acks);
            let version = req.version_info.clone();
            registry.update_type(self.core.id, &t, |s| {
                s.acks += 1;
                s.acked_version = version;
            });
        }
        let previous = (!first).then_some(&st.subscription);
        let next = Subscription::sotw(&t, &req.resource_names, previous);
        if first || next.adds_to(&st.subscription) {
            st.force = true;
        }
        let described = next.describe();
        st.subscription = next;
        registry.update_type(self.core.id, &t, |s| s.subscribed = described);
        self.push_changes().await
    }

    /// Pushes every type whose content changed (or that must be resent), in make-before-break
    /// order on ADS: listeners and routes wait while clusters or endpoints are in flight.
    async fn push_changes(&mut self) -> Result<(), Status> {
        for t in self.core.push_order() {
            if !self.types.contains_key(t) {
                continue;
            }
            if self.held_back(t) {
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

    fn held_back(&self, t: &str) -> bool {
        self.core.kind.is_ads()
            && type_url::held_back_by(t)
                .iter()
                .any(|blocker| self.types.get(*blocker).is_some_and(|s| s.pending))
    }

    /// Builds the response for type `t` if one is due, and records it as sent.
    fn prepare(&mut self, t: &'static str) -> Option<DiscoveryResponse> {
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
            wanted.extend(clusters_still_referenced(&routes.sent, &st.sent, &wanted));
        }
        let version = set_version(wanted.iter());
        if !st.force && version == st.sent_version {
            return None;
        }
        let nonce = self.core.next_nonce();
        let resources = wanted.values().map(|r| r.any.clone()).collect();
        let st = self.types.get_mut(t)?;
        st.nonce = nonce.clone();
        st.sent_version = version.clone();
        st.sent = wanted;
        st.pending = true;
        st.force = false;
        Registry::count(&self.core.registry.counters.pushes);
        let n = nonce.clone();
        let v = version.clone();
        let held = st.sent.clone();
        self.core.registry.update_type(self.core.id, t, |s| {
            s.pushes += 1;
            s.sent_version = v;
            s.sent_nonce = n;
            s.resources = held;
        });
        tracing::debug!(stream = self.core.id, type_url = t, %version, %nonce, generation = self.core.generation(), "push");
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: t.to_string(),
            nonce,
            control_plane: Some(control_plane_id()),
            ..Default::default()
        })
    }
}
