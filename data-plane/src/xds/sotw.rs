//! The state-of-the-world ADS protocol, as a synchronous state machine: responses in, requests
//! out. The transport ([`super::client`]) owns the stream; this module owns what survives a
//! reconnect (the accepted version and resources of each type) and what belongs to one stream
//! (nonces, the names last requested).

use super::resource::sotw_resource;
use super::status::{Received, StatusWriter};
use super::{ConfigSink, Subscriptions, Update, nack_status, static_type};
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url::{self, ADS_ORDER};
use std::collections::{BTreeMap, BTreeSet};

/// One type's state.
#[derive(Debug, Default)]
struct TypeState {
    /// `version_info` of the last accepted response (kept across streams, sent on reconnect).
    accepted_version: String,
    /// The resources in force: the last set the sink accepted.
    resources: BTreeMap<String, Any>,
    /// Nonce of the last response of this type on this stream.
    nonce: String,
    /// A request for this type went out on this stream.
    requested: bool,
    /// Names of the last request (named types only).
    names: BTreeSet<String>,
}

/// SotW ADS client state.
pub(crate) struct Sotw {
    node: Node,
    subs: Subscriptions,
    node_sent: bool,
    types: BTreeMap<&'static str, TypeState>,
}

impl Sotw {
    /// A client that has nothing yet.
    pub(crate) fn new(node: Node, subs: Subscriptions) -> Self {
        Sotw {
            node,
            subs,
            node_sent: false,
            types: ADS_ORDER
                .iter()
                .map(|t| (*t, TypeState::default()))
                .collect(),
        }
    }

    /// The requests that open a stream, in ADS order: CDS and LDS by wildcard (when enabled)
    /// and the named types the sink wants, each with the version in force.
    pub(crate) fn start(&mut self, sink: &dyn ConfigSink) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        let mut out = Vec::new();
        for t in ADS_ORDER {
            let st = self.state(t);
            st.nonce.clear();
            st.requested = false;
            st.names.clear();
            if self.subs.is_wildcard(t) {
                let st = self.state(t);
                st.requested = true;
                let version = st.accepted_version.clone();
                out.push(self.request(t, version, String::new(), Vec::new(), None));
            } else if let Some(req) = self.resubscribe(t, sink) {
                out.push(req);
            }
        }
        out
    }

    /// Handles one response: validates it, hands the candidate set to the sink, updates named
    /// subscriptions that changed, and ACKs or NACKs.
    pub(crate) fn on_response(
        &mut self,
        resp: DiscoveryResponse,
        sink: &dyn ConfigSink,
        status: &mut StatusWriter,
    ) -> Vec<DiscoveryRequest> {
        if resp.type_url.is_empty() {
            tracing::warn!("ignoring an ADS response without a type_url");
            return Vec::new();
        }
        let t = match static_type(&resp.type_url) {
            Some(t) if self.state(t).requested => t,
            _ => {
                tracing::warn!(type_url = %resp.type_url, "response for a type this client did not subscribe to; ACKing it to avoid a stall");
                let req = DiscoveryRequest {
                    node: self.take_node(),
                    version_info: resp.version_info,
                    type_url: resp.type_url,
                    response_nonce: resp.nonce,
                    ..Default::default()
                };
                return vec![req];
            }
        };
        let DiscoveryResponse {
            version_info,
            resources,
            nonce,
            ..
        } = resp;
        self.state(t).nonce = nonce.clone();
        let received = Received {
            resources: resources.len(),
            removed: 0,
        };
        let mut carried = BTreeSet::new();
        let outcome = self
            .candidate(t, resources, &mut carried)
            .and_then(|candidate| {
                let update = Update {
                    version_info: &version_info,
                    resource_versions: None,
                    received: &carried,
                };
                sink.apply(t, &candidate, &update).map(|()| candidate)
            });
        let error = match outcome {
            Ok(candidate) => {
                let st = self.state(t);
                st.accepted_version = version_info.clone();
                st.resources = candidate;
                status.accepted(t, &version_info, st.resources.len(), None, received);
                tracing::debug!(type_url = t, version = %version_info, resources = st.resources.len(), "accepted");
                None
            }
            Err(message) => {
                tracing::warn!(type_url = t, version = %version_info, error = %message, "rejected; keeping the previous configuration");
                status.rejected(t, &version_info, &nonce, &message, received);
                Some(message)
            }
        };
        let mut out: Vec<DiscoveryRequest> = super::NAMED_TYPES
            .into_iter()
            .filter(|n| *n != t)
            .filter_map(|n| self.resubscribe(n, sink))
            .collect();
        let names = if self.subs.is_wildcard(t) {
            Vec::new()
        } else {
            let wanted = sink.wanted(t);
            let names = wanted.iter().cloned().collect();
            self.state(t).names = wanted;
            names
        };
        let version = self.state(t).accepted_version.clone();
        out.push(self.request(t, version, nonce, names, error));
        out
    }

    /// The complete set the sink is offered for a response of type `t`: the response for
    /// wildcard types; for named types the response merged over the set in force, restricted
    /// to the names subscribed. The names the response carried (and kept) go to `carried`.
    fn candidate(
        &mut self,
        t: &'static str,
        resources: Vec<Any>,
        carried: &mut BTreeSet<String>,
    ) -> Result<BTreeMap<String, Any>, String> {
        let wildcard = self.subs.is_wildcard(t);
        let st = self.state(t);
        let mut candidate = BTreeMap::new();
        for (index, any) in resources.into_iter().enumerate() {
            let (name, any) = sotw_resource(t, index, any)?;
            if !wildcard && !st.names.contains(&name) {
                tracing::debug!(type_url = t, %name, "ignoring a resource that was not requested");
                continue;
            }
            if candidate.insert(name.clone(), any).is_some() {
                return Err(format!(
                    "{} response: duplicate resource name {name:?}",
                    type_url::short_name(t)
                ));
            }
            carried.insert(name);
        }
        if !wildcard {
            for (name, any) in &st.resources {
                if st.names.contains(name) && !candidate.contains_key(name) {
                    candidate.insert(name.clone(), any.clone());
                }
            }
        }
        Ok(candidate)
    }

    /// The request that brings a named type's subscription in line with what the sink wants,
    /// if it changed: the full list with the version in force and the type's last nonce. An
    /// empty list is sent only to drop names requested before.
    fn resubscribe(&mut self, t: &'static str, sink: &dyn ConfigSink) -> Option<DiscoveryRequest> {
        let wanted = sink.wanted(t);
        let st = self.state(t);
        if st.requested && st.names == wanted {
            return None;
        }
        if !st.requested && wanted.is_empty() {
            return None;
        }
        st.requested = true;
        let names = wanted.iter().cloned().collect();
        st.names = wanted;
        let (version, nonce) = (st.accepted_version.clone(), st.nonce.clone());
        tracing::debug!(type_url = t, ?names, "subscription update");
        Some(self.request(t, version, nonce, names, None))
    }

    fn request(
        &mut self,
        t: &str,
        version_info: String,
        response_nonce: String,
        resource_names: Vec<String>,
        error: Option<String>,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            node: self.take_node(),
            version_info,
            resource_names,
            type_url: t.to_string(),
            response_nonce,
            error_detail: error.map(nack_status),
            ..Default::default()
        }
    }

    /// The node, on the first request of a stream only.
    fn take_node(&mut self) -> Option<Node> {
        (!std::mem::replace(&mut self.node_sent, true)).then(|| self.node.clone())
    }

    fn state(&mut self, t: &'static str) -> &mut TypeState {
        self.types.entry(t).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::tests::{FakeSink, cla, cluster, status_writer};
    use legate_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

    fn node() -> Node {
        Node {
            id: "n".into(),
            ..Default::default()
        }
    }

    /// A client subscribed to CDS and LDS by wildcard as told.
    fn client(cds: bool, lds: bool) -> Sotw {
        Sotw::new(node(), Subscriptions { cds, lds })
    }

    fn resp(t: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: t.into(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn start_subscribes_wildcards_and_sends_node_once() {
        let sink = FakeSink::default();
        let mut s = client(true, true);
        let reqs = s.start(&sink);
        let types: Vec<&str> = reqs.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CLUSTER, LISTENER]);
        assert!(reqs[0].node.is_some() && reqs[1].node.is_none());
        assert!(reqs.iter().all(|r| r.resource_names.is_empty()));
    }

    #[test]
    fn ack_nack_and_eds_follow_cds() {
        let sink = FakeSink::default();
        let (mut status, cell) = status_writer();
        let mut s = client(true, false);
        s.start(&sink);
        let reqs = s.on_response(
            resp(CLUSTER, "v1", "1", vec![cluster("a")]),
            &sink,
            &mut status,
        );
        // EDS request (new subscription) first, then the CDS ACK.
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].type_url, ENDPOINT);
        assert_eq!(reqs[0].resource_names, ["a"]);
        assert_eq!(reqs[0].response_nonce, "");
        assert_eq!(reqs[1].type_url, CLUSTER);
        assert_eq!(
            (
                reqs[1].version_info.as_str(),
                reqs[1].response_nonce.as_str()
            ),
            ("v1", "1")
        );
        assert!(reqs[1].error_detail.is_none());

        sink.reject(CLUSTER, "cluster b: bad field");
        let reqs = s.on_response(
            resp(CLUSTER, "v2", "2", vec![cluster("b")]),
            &sink,
            &mut status,
        );
        assert_eq!(reqs.len(), 1, "rejected config changes no subscription");
        let nack = &reqs[0];
        assert_eq!(nack.version_info, "v1", "NACK carries the version in force");
        assert_eq!(nack.response_nonce, "2");
        let detail = nack.error_detail.as_ref().expect("error_detail");
        assert_eq!(
            (detail.code, detail.message.as_str()),
            (3, "cluster b: bad field")
        );
        let st = cell.load();
        assert_eq!(st.types[CLUSTER].update_rejected, 1);
        assert_eq!(st.types[CLUSTER].version_info, "v1");
        assert_eq!(sink.applied(CLUSTER), ["a"]);
    }

    #[test]
    fn eds_merges_and_restricts_to_subscribed_names() {
        let sink = FakeSink::default();
        let (mut status, _) = status_writer();
        let mut s = client(true, false);
        s.start(&sink);
        s.on_response(
            resp(CLUSTER, "v1", "1", vec![cluster("a"), cluster("b")]),
            &sink,
            &mut status,
        );
        s.on_response(
            resp(ENDPOINT, "e1", "2", vec![cla("a")]),
            &sink,
            &mut status,
        );
        s.on_response(
            resp(ENDPOINT, "e2", "3", vec![cla("b"), cla("zzz")]),
            &sink,
            &mut status,
        );
        assert_eq!(
            sink.applied(ENDPOINT),
            ["a", "b"],
            "merged; unrequested zzz ignored"
        );
        // The sink learns the response's version and which subscribed names it carried.
        let (version, received, versions) = sink.last_update(ENDPOINT);
        assert_eq!((version.as_str(), received), ("e2", vec!["b".to_string()]));
        assert_eq!(
            versions["a"], "e2",
            "SotW: every resource has the response's version"
        );
        let reqs = s.on_response(
            resp(CLUSTER, "v2", "4", vec![cluster("b")]),
            &sink,
            &mut status,
        );
        assert_eq!(reqs[0].type_url, ENDPOINT);
        assert_eq!(reqs[0].resource_names, ["b"]);
        assert_eq!(
            (
                reqs[0].version_info.as_str(),
                reqs[0].response_nonce.as_str()
            ),
            ("e2", "3")
        );
        s.on_response(resp(ENDPOINT, "e3", "5", vec![]), &sink, &mut status);
        assert_eq!(sink.applied(ENDPOINT), ["b"], "a is no longer subscribed");
        // All clusters gone: an empty list unsubscribes.
        let reqs = s.on_response(resp(CLUSTER, "v3", "6", vec![]), &sink, &mut status);
        assert_eq!(reqs[0].type_url, ENDPOINT);
        assert!(reqs[0].resource_names.is_empty());
    }

    #[test]
    fn bad_resources_are_nacked_by_index_and_unknown_types_acked() {
        let sink = FakeSink::default();
        let (mut status, _) = status_writer();
        let mut s = client(true, false);
        s.start(&sink);
        let reqs = s.on_response(
            resp(CLUSTER, "v1", "1", vec![cluster("a"), cla("x")]),
            &sink,
            &mut status,
        );
        let msg = &reqs[0].error_detail.as_ref().expect("nack").message;
        assert!(msg.contains("resource [1]"), "{msg}");
        let reqs = s.on_response(
            resp(CLUSTER, "v1", "2", vec![cluster("a"), cluster("a")]),
            &sink,
            &mut status,
        );
        let msg = &reqs[0].error_detail.as_ref().expect("nack").message;
        assert!(msg.contains("duplicate"), "{msg}");
        assert!(sink.applied(CLUSTER).is_empty());
        for t in [LISTENER, ROUTE, "type.googleapis.com/some.Other"] {
            let reqs = s.on_response(resp(t, "x", "9", vec![]), &sink, &mut status);
            assert_eq!(reqs.len(), 1);
            assert_eq!(
                (reqs[0].type_url.as_str(), reqs[0].response_nonce.as_str()),
                (t, "9")
            );
            assert!(reqs[0].error_detail.is_none());
        }
    }

    #[test]
    fn reconnect_resends_versions_and_names() {
        let sink = FakeSink::default();
        let (mut status, _) = status_writer();
        let mut s = client(true, true);
        s.start(&sink);
        s.on_response(
            resp(CLUSTER, "v1", "1", vec![cluster("a")]),
            &sink,
            &mut status,
        );
        let reqs = s.start(&sink);
        let summary: Vec<(&str, &str, &str, usize, bool)> = reqs
            .iter()
            .map(|r| {
                (
                    r.type_url.as_str(),
                    r.version_info.as_str(),
                    r.response_nonce.as_str(),
                    r.resource_names.len(),
                    r.node.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (CLUSTER, "v1", "", 0, true),
                (ENDPOINT, "", "", 1, false),
                (LISTENER, "", "", 0, false)
            ]
        );
    }
}
