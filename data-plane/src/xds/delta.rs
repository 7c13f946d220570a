//! The incremental (delta) ADS protocol, as a synchronous state machine: responses in, requests
//! out.
//!
//! Per type the client keeps name → (version, resource) across streams. On reconnect the
//! versions in force go out as `initial_resource_versions`, so the server sends only what
//! changed.
//!
//! A NACKed delta is not forgotten: the server records what it sent as held by the client
//! whatever the answer, and never sends unchanged resources again. So the changes of rejected
//! responses stay *pending* and the next candidate is the state in force plus every pending
//! change plus the new response, i.e. exactly the server's view. Otherwise a resource that
//! arrived in a rejected response next to a bad one would be lost for good while later
//! updates are ACKed. (This makes delta behave like SotW, whose responses carry everything.)
//! Candidates are built in place with an undo log, so a NACK costs time proportional to the
//! changes, not to the whole state.

use super::resource::delta_resource;
use super::status::{Received, StatusWriter};
use super::{ConfigSink, Subscriptions, Update, nack_status, static_type};
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url::{self, ADS_ORDER};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// One type's state.
#[derive(Debug, Default)]
struct TypeState {
    /// The resources in force (what the sink last accepted).
    resources: BTreeMap<String, Any>,
    /// Their versions.
    versions: BTreeMap<String, String>,
    /// Changes of rejected responses on this stream, still to be offered (name → new version
    /// and resource, or `None` for a removal).
    pending: BTreeMap<String, Option<(String, Any)>>,
    /// `system_version_info` of the last accepted response.
    system_version: String,
    /// A request for this type went out on this stream.
    requested: bool,
    /// Names subscribed on this stream (named types only).
    names: BTreeSet<String>,
}

impl TypeState {
    /// Forgets resources outside `keep` (they are no longer subscribed).
    fn retain(&mut self, keep: &BTreeSet<String>) {
        self.resources.retain(|n, _| keep.contains(n));
        self.versions.retain(|n, _| keep.contains(n));
        self.pending.retain(|n, _| keep.contains(n));
    }
}

/// One change made while building a candidate, with what it replaced.
struct Undo {
    name: String,
    resource: Option<Any>,
    version: Option<String>,
}

/// Delta ADS client state.
pub(crate) struct Delta {
    node: Node,
    subs: Subscriptions,
    node_sent: bool,
    types: BTreeMap<&'static str, TypeState>,
}

impl Delta {
    /// A client that has nothing yet.
    pub(crate) fn new(node: Node, subs: Subscriptions) -> Self {
        Delta {
            node,
            subs,
            node_sent: false,
            types: ADS_ORDER
                .iter()
                .map(|t| (*t, TypeState::default()))
                .collect(),
        }
    }

    /// The requests that open a stream, in ADS order: CDS and LDS by wildcard (an empty
    /// subscribe list), the named types the sink wants by name, each announcing the versions
    /// it holds.
    pub(crate) fn start(&mut self, sink: &dyn ConfigSink) -> Vec<DeltaDiscoveryRequest> {
        self.node_sent = false;
        let mut out = Vec::new();
        for t in ADS_ORDER {
            let st = self.state(t);
            st.requested = false;
            st.names.clear();
            // A new stream starts from what is in force, which is what gets announced.
            st.pending.clear();
            if self.subs.is_wildcard(t) {
                let st = self.state(t);
                st.requested = true;
                let initial = st
                    .versions
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                let req = DeltaDiscoveryRequest {
                    type_url: t.to_string(),
                    initial_resource_versions: initial,
                    ..Default::default()
                };
                out.push(self.with_node(req));
            } else if let Some(req) = self.resubscribe(t, sink) {
                out.push(req);
            }
        }
        out
    }

    /// Handles one response: validates it, applies it to the state, offers the result to the
    /// sink (undoing it if refused), updates named subscriptions that changed, ACKs or NACKs.
    pub(crate) fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
        sink: &dyn ConfigSink,
        status: &mut StatusWriter,
    ) -> Vec<DeltaDiscoveryRequest> {
        if resp.type_url.is_empty() {
            tracing::warn!("ignoring a delta ADS response without a type_url");
            return Vec::new();
        }
        let t = match static_type(&resp.type_url) {
            Some(t) if self.state(t).requested => t,
            _ => {
                tracing::warn!(type_url = %resp.type_url, "response for a type this client did not subscribe to; ACKing it to avoid a stall");
                let req = DeltaDiscoveryRequest {
                    type_url: resp.type_url,
                    response_nonce: resp.nonce,
                    ..Default::default()
                };
                return vec![self.with_node(req)];
            }
        };
        let system_version = resp.system_version_info.clone();
        let nonce = resp.nonce.clone();
        let received = Received {
            resources: resp.resources.len(),
            removed: resp.removed_resources.len() + resp.removed_resource_names.len(),
        };
        let error = match self.apply(t, resp, sink) {
            Ok(()) => {
                let st = self.state(t);
                st.system_version = system_version.clone();
                let versions = Arc::new(st.versions.clone());
                let count = st.resources.len();
                status.accepted(t, &system_version, count, Some(versions), received);
                tracing::debug!(type_url = t, version = %system_version, resources = count, "accepted");
                None
            }
            Err(message) => {
                tracing::warn!(type_url = t, version = %system_version, error = %message, "rejected; keeping the previous configuration");
                status.rejected(t, &system_version, &nonce, &message, received);
                Some(message)
            }
        };
        let mut out: Vec<DeltaDiscoveryRequest> = super::NAMED_TYPES
            .into_iter()
            .filter(|n| *n != t)
            .filter_map(|n| self.resubscribe(n, sink))
            .collect();
        let mut ack = DeltaDiscoveryRequest {
            type_url: t.to_string(),
            response_nonce: nonce,
            error_detail: error.map(nack_status),
            ..Default::default()
        };
        if !self.subs.is_wildcard(t) {
            let (subscribe, unsubscribe) = self.diff(t, sink.wanted(t));
            ack.resource_names_subscribe = subscribe;
            ack.resource_names_unsubscribe = unsubscribe;
        }
        out.push(self.with_node(ack));
        out
    }

    /// Adds a response's changes to the pending ones, applies them all to the state of `t` and
    /// asks the sink to accept the result. On refusal the state is as before and the changes
    /// stay pending; on a validation error nothing changes.
    fn apply(
        &mut self,
        t: &'static str,
        resp: DeltaDiscoveryResponse,
        sink: &dyn ConfigSink,
    ) -> Result<(), String> {
        let what = type_url::short_name(t);
        let mut updates = Vec::with_capacity(resp.resources.len());
        let mut seen = HashSet::new();
        for r in resp.resources {
            let (name, version, any) = delta_resource(t, r)?;
            if !seen.insert(name.clone()) {
                return Err(format!("{what} response: duplicate resource name {name:?}"));
            }
            updates.push((name, version, any));
        }
        let removed = resp
            .removed_resources
            .into_iter()
            .chain(resp.removed_resource_names.into_iter().map(|r| r.name));
        let wildcard = self.subs.is_wildcard(t);
        let st = self.state(t);
        for (name, version, any) in updates {
            if !wildcard && !st.names.contains(&name) {
                tracing::debug!(type_url = t, %name, "ignoring a resource that is not subscribed");
                continue;
            }
            st.pending.insert(name, Some((version, any)));
        }
        for name in removed {
            st.pending.insert(name, None);
        }
        let mut undo = Vec::with_capacity(st.pending.len());
        for (name, change) in std::mem::take(&mut st.pending) {
            let (resource, version) = match change {
                Some((version, any)) => (
                    st.resources.insert(name.clone(), any),
                    st.versions.insert(name.clone(), version),
                ),
                None => (st.resources.remove(&name), st.versions.remove(&name)),
            };
            undo.push(Undo {
                name,
                resource,
                version,
            });
        }
        let touched: BTreeSet<String> = undo.iter().map(|u| u.name.clone()).collect();
        let update = Update {
            version_info: &resp.system_version_info,
            resource_versions: Some(&st.versions),
            received: &touched,
        };
        let result = sink.apply(t, &st.resources, &update);
        if result.is_err() {
            // Put back what was in force; what it displaces goes back to pending.
            for u in undo {
                let resource = match u.resource {
                    Some(r) => st.resources.insert(u.name.clone(), r),
                    None => st.resources.remove(&u.name),
                };
                let version = match u.version {
                    Some(v) => st.versions.insert(u.name.clone(), v),
                    None => st.versions.remove(&u.name),
                };
                let change = version.zip(resource);
                st.pending.insert(u.name, change);
            }
        }
        result
    }

    /// The request that brings a named type's subscription in line with what the sink wants,
    /// if it changed: the first one on a stream subscribes by name and announces the versions
    /// held; later ones carry subscribe/unsubscribe differences.
    fn resubscribe(
        &mut self,
        t: &'static str,
        sink: &dyn ConfigSink,
    ) -> Option<DeltaDiscoveryRequest> {
        let wanted = sink.wanted(t);
        let st = self.state(t);
        let req = if st.requested {
            let (subscribe, unsubscribe) = self.diff(t, wanted);
            if subscribe.is_empty() && unsubscribe.is_empty() {
                return None;
            }
            DeltaDiscoveryRequest {
                type_url: t.to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            }
        } else {
            if wanted.is_empty() {
                return None;
            }
            st.retain(&wanted);
            st.requested = true;
            let initial: HashMap<String, String> = st
                .versions
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let subscribe = wanted.iter().cloned().collect();
            st.names = wanted;
            DeltaDiscoveryRequest {
                type_url: t.to_string(),
                resource_names_subscribe: subscribe,
                initial_resource_versions: initial,
                ..Default::default()
            }
        };
        tracing::debug!(
            type_url = t,
            subscribe = ?req.resource_names_subscribe,
            unsubscribe = ?req.resource_names_unsubscribe,
            "subscription update"
        );
        Some(self.with_node(req))
    }

    /// Moves the subscription of `t` to `wanted`; returns (subscribe, unsubscribe). Unsubscribed
    /// resources are forgotten, so they are neither announced on reconnect nor offered again.
    fn diff(&mut self, t: &'static str, wanted: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let st = self.state(t);
        let subscribe: Vec<String> = wanted.difference(&st.names).cloned().collect();
        let unsubscribe: Vec<String> = st.names.difference(&wanted).cloned().collect();
        if !unsubscribe.is_empty() {
            st.retain(&wanted);
        }
        st.names = wanted;
        (subscribe, unsubscribe)
    }

    fn with_node(&mut self, mut req: DeltaDiscoveryRequest) -> DeltaDiscoveryRequest {
        if !std::mem::replace(&mut self.node_sent, true) {
            req.node = Some(self.node.clone());
        }
        req
    }

    fn state(&mut self, t: &'static str) -> &mut TypeState {
        self.types.entry(t).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::tests::{FakeSink, cla, cluster, status_writer};
    use legate_proto::pb::envoy::service::discovery::v3::Resource;
    use legate_proto::type_url::{CLUSTER, ENDPOINT, LISTENER};

    fn node() -> Node {
        Node {
            id: "n".into(),
            ..Default::default()
        }
    }

    /// A client subscribed to CDS and LDS by wildcard as told.
    fn client(cds: bool, lds: bool) -> Delta {
        Delta::new(node(), Subscriptions { cds, lds })
    }

    fn res(any: Any, version: &str) -> Resource {
        Resource {
            name: crate::xds::resource_name(&any).expect("name"),
            version: version.into(),
            resource: Some(any),
            ..Default::default()
        }
    }

    fn resp(
        t: &str,
        nonce: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: format!("sys-{nonce}"),
            resources,
            type_url: t.into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcard_start_then_named_subscriptions() {
        let sink = FakeSink::default();
        let (mut status, cell) = status_writer();
        let mut d = client(true, true);
        let reqs = d.start(&sink);
        assert_eq!(reqs.len(), 2);
        assert!(reqs[0].node.is_some() && reqs[1].node.is_none());
        assert!(reqs[0].resource_names_subscribe.is_empty());
        let reqs = d.on_response(
            resp(
                CLUSTER,
                "1",
                vec![res(cluster("a"), "1"), res(cluster("b"), "1")],
                &[],
            ),
            &sink,
            &mut status,
        );
        assert_eq!(reqs[0].type_url, ENDPOINT);
        assert_eq!(reqs[0].resource_names_subscribe, ["a", "b"]);
        assert_eq!(
            (reqs[1].type_url.as_str(), reqs[1].response_nonce.as_str()),
            (CLUSTER, "1")
        );
        let (version, _, versions) = sink.last_update(CLUSTER);
        assert_eq!(version, "sys-1");
        assert_eq!(versions["a"], "1", "delta: each resource's own version");
        let reqs = d.on_response(resp(CLUSTER, "2", vec![], &["a"]), &sink, &mut status);
        let (version, received, _) = sink.last_update(CLUSTER);
        assert_eq!(
            (version.as_str(), received),
            ("sys-2", vec!["a".to_string()])
        );
        assert_eq!(reqs[0].resource_names_unsubscribe, ["a"]);
        assert!(reqs[0].resource_names_subscribe.is_empty());
        assert_eq!(sink.applied(CLUSTER), ["b"]);
        let st = cell.load();
        assert_eq!(
            st.types[CLUSTER]
                .resource_versions
                .keys()
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(st.types[CLUSTER].version_info, "sys-2");
    }

    #[test]
    fn nack_restores_the_previous_state() {
        let sink = FakeSink::default();
        let (mut status, _) = status_writer();
        let mut d = client(true, false);
        d.start(&sink);
        d.on_response(
            resp(
                CLUSTER,
                "1",
                vec![res(cluster("a"), "1"), res(cluster("b"), "1")],
                &[],
            ),
            &sink,
            &mut status,
        );
        sink.reject(CLUSTER, "cluster c: nope");
        let reqs = d.on_response(
            resp(
                CLUSTER,
                "2",
                vec![res(cluster("a"), "2"), res(cluster("c"), "1")],
                &["b"],
            ),
            &sink,
            &mut status,
        );
        assert_eq!(reqs.len(), 1);
        let nack = &reqs[0];
        assert_eq!(nack.response_nonce, "2");
        assert_eq!(
            nack.error_detail.as_ref().map(|e| e.message.as_str()),
            Some("cluster c: nope")
        );
        let st = &d.types[CLUSTER];
        let versions: Vec<(&str, &str)> = st
            .versions
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(versions, [("a", "1"), ("b", "1")]);
        assert_eq!(st.resources.keys().collect::<Vec<_>>(), ["a", "b"]);

        assert_eq!(
            st.pending.len(),
            3,
            "a@2, b removed, c@1 wait for the next candidate"
        );

        // The server will not resend a@2 or c: the next candidate still carries them.
        sink.accept(CLUSTER);
        d.on_response(
            resp(CLUSTER, "3", vec![res(cluster("d"), "1")], &[]),
            &sink,
            &mut status,
        );
        assert_eq!(sink.applied(CLUSTER), ["a", "c", "d"]);
        let st = &d.types[CLUSTER];
        assert_eq!(st.versions.get("a").map(String::as_str), Some("2"));
        assert!(st.pending.is_empty());

        // A rejected response, then a reconnect: only what is in force is announced.
        sink.reject(CLUSTER, "no");
        d.on_response(resp(CLUSTER, "4", vec![], &["d"]), &sink, &mut status);
        let reqs = d.start(&sink);
        let initial: BTreeMap<_, _> = reqs[0]
            .initial_resource_versions
            .clone()
            .into_iter()
            .collect();
        assert_eq!(initial.keys().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert!(d.types[CLUSTER].pending.is_empty());
        assert_eq!(reqs[1].type_url, ENDPOINT);
        assert_eq!(reqs[1].resource_names_subscribe, ["a", "c", "d"]);
    }

    #[test]
    fn named_types_ignore_unsubscribed_and_reject_mismatched_types() {
        let sink = FakeSink::default();
        let (mut status, _) = status_writer();
        let mut d = client(true, false);
        d.start(&sink);
        d.on_response(
            resp(CLUSTER, "1", vec![res(cluster("a"), "1")], &[]),
            &sink,
            &mut status,
        );
        d.on_response(
            resp(
                ENDPOINT,
                "2",
                vec![res(cla("a"), "1"), res(cla("zzz"), "1")],
                &[],
            ),
            &sink,
            &mut status,
        );
        assert_eq!(sink.applied(ENDPOINT), ["a"]);
        let mut wrong = res(cluster("x"), "1");
        wrong.name = "x".into();
        let reqs = d.on_response(resp(ENDPOINT, "3", vec![wrong], &[]), &sink, &mut status);
        let msg = &reqs[0].error_detail.as_ref().expect("nack").message;
        assert!(msg.contains("\"x\"") && msg.contains("Cluster"), "{msg}");
        let reqs = d.on_response(resp(LISTENER, "4", vec![], &[]), &sink, &mut status);
        assert_eq!(reqs.len(), 1);
        assert!(reqs[0].error_detail.is_none(), "unsubscribed type is ACKed");
    }
}
