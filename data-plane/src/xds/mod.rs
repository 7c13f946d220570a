//! The ADS client (SotW and delta).
//!
//! [`spawn`] (or [`run`]) connects to the management server named by the bootstrap, subscribes
//! to CDS and LDS by wildcard and to EDS, SDS and RDS by the names the applied configuration
//! references ([`ConfigSink::wanted`]), hands every update to a [`ConfigSink`] as the complete
//! set of its type, and ACKs or NACKs it. On stream loss it reconnects with jittered exponential
//! back-off and leaves the configuration in force alone.
//!
//! Layout:
//! - `sotw.rs`, `delta.rs`: the two protocol variants as synchronous state machines (responses
//!   in, requests out), unit-tested without a network;
//! - `client.rs`: connection, stream and reconnection;
//! - `resource.rs`: resource names, type checks, the `Resource` wrapper;
//! - `status.rs`: [`XdsStatus`], what the admin and tests observe;
//! - `backoff.rs`: reconnection back-off.
//!
//! Ordering: on a stream the client sends CDS, EDS, SDS, LDS, RDS requests in that order; after
//! an update it sends subscription changes for the other types first, then the ACK/NACK (as
//! Envoy does), so a server holding later types until earlier ones are ACKed sees the new EDS
//! names before it releases listeners. Warming (a cluster waiting for its endpoints, a listener
//! for its routes) is the sink's business.

mod backoff;
mod client;
mod delta;
mod resource;
mod sotw;
mod status;

pub use backoff::{BACKOFF_BASE, BACKOFF_MAX};
pub use resource::{RESOURCE_WRAPPER, resource_name};
pub use status::{NackStatus, TypeStatus, XdsStatus, envoy_stat_prefix};

use arc_swap::ArcSwap;
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::google::protobuf::Any;
use legate_proto::pb::google::rpc::Status as RpcStatus;
use legate_proto::type_url::{ADS_ORDER, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// `node.user_agent_name` on every stream: what Envoy sends, so that a control plane serves
/// legate-proxy as the Envoy it stands in for (legate-cp's flavour rule reads it too).
pub const USER_AGENT_NAME: &str = "envoy";

/// `node.user_agent_version` on every stream: names legate-proxy and its version. Envoy sends a
/// `user_agent_build_version` with its own version instead; a control plane that gates
/// features on Envoy's version finds none here rather than a wrong one.
pub const USER_AGENT_VERSION: &str = concat!("legate-proxy/", env!("CARGO_PKG_VERSION"));

/// The node as sent to the management server: the bootstrap's, with the user agent set over
/// whatever the bootstrap said (as Envoy overwrites it).
pub fn with_user_agent(mut node: Node) -> Node {
    node.user_agent_name = USER_AGENT_NAME.to_string();
    node.user_agent_version_type = Some(
        legate_proto::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
            USER_AGENT_VERSION.to_string(),
        ),
    );
    node
}

/// Where and how to reach the management server.
#[derive(Clone, Debug)]
pub struct XdsClientConfig {
    /// `host:port` of the xDS cluster's endpoints, tried in order on reconnect.
    pub endpoints: Vec<String>,
    /// The node sent on the first request of every stream, with [`with_user_agent`] applied.
    pub node: Node,
    /// Incremental (`DELTA_GRPC`) rather than state-of-the-world (`GRPC`) ADS.
    pub delta: bool,
    /// Timeout for establishing the connection (TCP and HTTP/2); zero means Envoy's 5 s
    /// default.
    pub connect_timeout: Duration,
    /// Subscribe to clusters (the bootstrap's `cds_config` is ADS).
    pub subscribe_cds: bool,
    /// Subscribe to listeners (the bootstrap's `lds_config` is ADS).
    pub subscribe_lds: bool,
    /// TLS to the management server: the xDS cluster's `UpstreamTlsContext` (ALPN `h2`);
    /// `None` is plaintext (h2c).
    pub tls: Option<crate::tls::TlsClient>,
}

/// What the client knows about the response behind a candidate set offered to
/// [`ConfigSink::apply`].
#[derive(Clone, Copy, Debug)]
pub struct Update<'a> {
    /// The response's `version_info` (SotW) or `system_version_info` (delta).
    pub version_info: &'a str,
    /// Delta: the version of every resource of the candidate set. `None` for SotW, where a
    /// resource has the `version_info` of the response that carried it.
    pub resource_versions: Option<&'a BTreeMap<String, String>>,
    /// The names the update touches, i.e. the ones Envoy would hand to a watch on that name:
    /// SotW, the subscribed resources the response carried; delta, the resources it carried and
    /// the names it removed (with the pending changes of rejected responses offered again).
    pub received: &'a BTreeSet<String>,
}

impl<'a> Update<'a> {
    /// The version of resource `name` in this update: its own (delta) or the response's (SotW).
    pub fn version_of(&self, name: &str) -> &'a str {
        self.resource_versions
            .and_then(|v| v.get(name))
            .map_or(self.version_info, String::as_str)
    }
}

/// Receives validated updates. Implemented by the proxy runtime.
///
/// All methods are called from the client task, one at a time; `apply` should not block for
/// long, since the stream is not read meanwhile.
pub trait ConfigSink: Send + Sync + 'static {
    /// Applies the COMPLETE current set of `type_url` resources (name → `Any`).
    ///
    /// For SotW LDS/CDS this is the response; for SotW EDS/RDS/SDS, the response's resources
    /// merged over the previous set, restricted to the subscribed names; for delta, the
    /// accumulated state after applying the response's `resources` and `removed_resources` (and
    /// those of responses rejected since the last accepted one, which the server will not send
    /// again; see `delta.rs`).
    /// `Err(message)` → NACK with `error_detail.message = message` (name the resource and the
    /// field); the previous set stays in force and is what the next candidate builds on.
    /// `update` tells the versions and which names the response touched.
    fn apply(
        &self,
        type_url: &str,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String>;

    /// The names of `type_url` resources ([`ENDPOINT`], [`ROUTE`], and [`SECRET`] if the sink
    /// supports SDS) that the applied configuration references now; the client subscribes to
    /// exactly these. Called at stream start and after every update.
    fn wanted(&self, type_url: &str) -> BTreeSet<String>;

    /// Connection state changes (for the `control_plane.connected_state` gauge): `true` when a
    /// stream is established, `false` when it is lost. Nothing else changes on disconnect.
    fn connected(&self, up: bool);

    /// A connection attempt failed or an established stream ended (after `connected(false)`):
    /// what Envoy reports to every subscription as a `ConnectionFailure` (`update_failure`).
    /// Called once per attempt, before the back-off. Does nothing by default.
    fn connection_failed(&self) {}
}

/// Runs the client forever: connect, subscribe, apply, ACK/NACK; on stream loss reconnect with
/// jittered exponential back-off ([`BACKOFF_BASE`] doubling to [`BACKOFF_MAX`], full jitter),
/// keeping the last applied configuration in the sink.
pub async fn run(config: XdsClientConfig, sink: Arc<dyn ConfigSink>) {
    let cell = Arc::new(ArcSwap::from_pointee(XdsStatus::default()));
    client::run(config, sink, cell).await;
}

/// Starts the client on the current tokio runtime. The client stops when the handle is
/// dropped, so keep it for as long as dynamic configuration should flow.
pub fn spawn(config: XdsClientConfig, sink: Arc<dyn ConfigSink>) -> XdsHandle {
    let status = Arc::new(ArcSwap::from_pointee(XdsStatus::default()));
    let task = tokio::spawn(client::run(config, sink, status.clone()));
    XdsHandle { status, task }
}

/// A running client (see [`spawn`]). Dropping it stops the client.
#[derive(Debug)]
pub struct XdsHandle {
    status: Arc<ArcSwap<XdsStatus>>,
    task: JoinHandle<()>,
}

impl XdsHandle {
    /// The client's current state: a lock-free read of an immutable snapshot.
    pub fn status(&self) -> Arc<XdsStatus> {
        self.status.load_full()
    }
}

impl Drop for XdsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which wildcard types the client subscribes to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subscriptions {
    /// CDS.
    pub(crate) cds: bool,
    /// LDS.
    pub(crate) lds: bool,
}

impl Subscriptions {
    /// True when `t` is subscribed by wildcard.
    pub(crate) fn is_wildcard(&self, t: &str) -> bool {
        (t == CLUSTER && self.cds) || (t == LISTENER && self.lds)
    }
}

/// The types subscribed by name, from what the sink wants, in ADS order.
pub(crate) const NAMED_TYPES: [&str; 3] = [ENDPOINT, SECRET, ROUTE];

/// The static type URL equal to `t`, if it is one this client consumes.
pub(crate) fn static_type(t: &str) -> Option<&'static str> {
    ADS_ORDER.into_iter().find(|known| *known == t)
}

/// `error_detail` of a NACK: `INVALID_ARGUMENT` with the message.
pub(crate) fn nack_status(message: String) -> RpcStatus {
    RpcStatus {
        code: 3,
        message,
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! A sink for the state-machine tests: clusters want endpoints of the same name, listeners
    //! want routes of the same name.

    use super::*;
    use legate_proto::any::pack;
    use legate_proto::pb::envoy::config::cluster::v3::Cluster;
    use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use std::sync::Mutex;

    pub(crate) fn cluster(name: &str) -> Any {
        pack(&Cluster {
            name: name.into(),
            ..Default::default()
        })
    }

    pub(crate) fn cla(name: &str) -> Any {
        pack(&ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        })
    }

    pub(crate) fn status_writer() -> (status::StatusWriter, Arc<ArcSwap<XdsStatus>>) {
        let cell = Arc::new(ArcSwap::from_pointee(XdsStatus::default()));
        (status::StatusWriter::new(cell.clone()), cell)
    }

    /// What a sink was told about one candidate set: (version_info, names received, version
    /// of each resource).
    pub(crate) type SeenUpdate = (String, Vec<String>, BTreeMap<String, String>);

    #[derive(Default)]
    pub(crate) struct FakeSink {
        applied: Mutex<BTreeMap<String, Vec<String>>>,
        reject: Mutex<BTreeMap<String, String>>,
        updates: Mutex<BTreeMap<String, SeenUpdate>>,
    }

    impl FakeSink {
        pub(crate) fn reject(&self, t: &str, message: &str) {
            if let Ok(mut r) = self.reject.lock() {
                r.insert(t.to_string(), message.to_string());
            }
        }

        pub(crate) fn accept(&self, t: &str) {
            if let Ok(mut r) = self.reject.lock() {
                r.remove(t);
            }
        }

        /// The last update offered for `t` (accepted or not).
        pub(crate) fn last_update(&self, t: &str) -> SeenUpdate {
            self.updates
                .lock()
                .map(|u| u.get(t).cloned().unwrap_or_default())
                .unwrap_or_default()
        }

        pub(crate) fn applied(&self, t: &str) -> Vec<String> {
            self.applied
                .lock()
                .map(|a| a.get(t).cloned().unwrap_or_default())
                .unwrap_or_default()
        }
    }

    impl ConfigSink for FakeSink {
        fn apply(
            &self,
            t: &str,
            resources: &BTreeMap<String, Any>,
            update: &Update<'_>,
        ) -> Result<(), String> {
            if let Ok(mut u) = self.updates.lock() {
                let versions = resources
                    .keys()
                    .map(|n| (n.clone(), update.version_of(n).to_string()))
                    .collect();
                let received = update.received.iter().cloned().collect();
                u.insert(
                    t.to_string(),
                    (update.version_info.to_string(), received, versions),
                );
            }
            if let Some(msg) = self.reject.lock().ok().and_then(|r| r.get(t).cloned()) {
                return Err(msg);
            }
            if let Ok(mut a) = self.applied.lock() {
                a.insert(t.to_string(), resources.keys().cloned().collect());
            }
            Ok(())
        }

        fn wanted(&self, t: &str) -> BTreeSet<String> {
            let from = match t {
                ENDPOINT => CLUSTER,
                ROUTE => LISTENER,
                _ => return BTreeSet::new(),
            };
            self.applied(from).into_iter().collect()
        }

        fn connected(&self, _up: bool) {}
    }

    #[test]
    fn static_types() {
        assert_eq!(static_type(ROUTE), Some(ROUTE));
        assert_eq!(static_type("type.googleapis.com/x"), None);
        let subs = Subscriptions {
            cds: true,
            lds: false,
        };
        assert!(subs.is_wildcard(CLUSTER) && !subs.is_wildcard(LISTENER));
    }
}
