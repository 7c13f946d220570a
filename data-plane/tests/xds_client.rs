//! The proxy's ADS client against the real `legate-cp` xDS server, in process.
//!
//! Each server runs on its own thread and runtime, so stopping it (dropping that runtime) closes
//! every socket at once, as a crashed control plane would.

use legate_control_plane::cache::SnapshotCache;
use legate_control_plane::config;
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::{Registry, TypeStatus as ServerTypeStatus};
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use legate_proto::pb::envoy::config::core::v3::{Node, address, socket_address};
use legate_proto::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use legate_proto::pb::envoy::config::listener::v3::{Listener, filter};
use legate_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use legate_proxy::xds::{self, ConfigSink, XdsClientConfig, XdsHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const BASE: &str = r#"
services:
  payments:
    endpoints: [127.0.0.1:9001]
  inventory:
    endpoints: [127.0.0.1:9002]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
"#;

/// BASE with a third service.
fn with_orders() -> String {
    BASE.replace(
        "  inventory:",
        "  orders:\n    endpoints: [127.0.0.1:9003]\n  inventory:",
    )
}

/// Deadline for anything expected to happen.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------------
// The sink

#[derive(Default)]
struct SinkState {
    /// Current set per type.
    current: BTreeMap<String, BTreeMap<String, Any>>,
    /// Every successful apply, in order: (type, names).
    applies: Vec<(String, Vec<String>)>,
    /// Types to reject, with the message.
    reject: BTreeMap<String, String>,
    /// connected() calls.
    connected: Vec<bool>,
}

/// Records what it is given; wants the endpoints of its EDS clusters and the routes of its
/// listeners' HTTP connection managers, as the proxy runtime does.
#[derive(Default)]
struct TestSink(Mutex<SinkState>);

impl TestSink {
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(&self, t: &str, message: &str) {
        self.lock().reject.insert(t.into(), message.into());
    }

    fn accept(&self, t: &str) {
        self.lock().reject.remove(t);
    }

    fn names(&self, t: &str) -> Vec<String> {
        self.lock()
            .current
            .get(t)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn resource(&self, t: &str, name: &str) -> Option<Any> {
        self.lock()
            .current
            .get(t)
            .and_then(|m| m.get(name).cloned())
    }

    fn applies(&self) -> Vec<(String, Vec<String>)> {
        self.lock().applies.clone()
    }

    fn connected_events(&self) -> Vec<bool> {
        self.lock().connected.clone()
    }

    /// Ports of the endpoints of one cluster.
    fn endpoint_ports(&self, cluster: &str) -> Vec<u32> {
        let Some(any) = self.resource(ENDPOINT, cluster) else {
            return Vec::new();
        };
        let cla: ClusterLoadAssignment = unpack(&any).expect("a ClusterLoadAssignment");
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|e| match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
                _ => None,
            })
            .filter_map(|a| match &a.address {
                Some(address::Address::SocketAddress(sa)) => sa.port_specifier.as_ref(),
                _ => None,
            })
            .map(|p| match p {
                socket_address::PortSpecifier::PortValue(v) => *v,
                socket_address::PortSpecifier::NamedPort(_) => 0,
            })
            .collect()
    }
}

fn eds_name(any: &Any) -> Option<String> {
    let c: Cluster = unpack(any).ok()?;
    let eds = matches!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32
    );
    if !eds {
        return None;
    }
    let service = c
        .eds_cluster_config
        .map(|e| e.service_name)
        .unwrap_or_default();
    Some(if service.is_empty() { c.name } else { service })
}

fn rds_names(any: &Any) -> Vec<String> {
    let Ok(l) = unpack::<Listener>(any) else {
        return Vec::new();
    };
    l.filter_chains
        .iter()
        .flat_map(|fc| &fc.filters)
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(tc)) => unpack::<HttpConnectionManager>(tc).ok(),
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

impl ConfigSink for TestSink {
    fn apply(
        &self,
        type_url: &str,
        resources: &BTreeMap<String, Any>,
        _update: &xds::Update<'_>,
    ) -> Result<(), String> {
        let mut s = self.lock();
        if let Some(message) = s.reject.get(type_url) {
            return Err(message.clone());
        }
        s.current.insert(type_url.into(), resources.clone());
        s.applies
            .push((type_url.into(), resources.keys().cloned().collect()));
        Ok(())
    }

    fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        let s = self.lock();
        let empty = BTreeMap::new();
        match type_url {
            ENDPOINT => s
                .current
                .get(CLUSTER)
                .unwrap_or(&empty)
                .values()
                .filter_map(eds_name)
                .collect(),
            ROUTE => s
                .current
                .get(LISTENER)
                .unwrap_or(&empty)
                .values()
                .flat_map(rds_names)
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    fn connected(&self, up: bool) {
        self.lock().connected.push(up);
    }
}

// ---------------------------------------------------------------------------------------------
// The server

/// One running control plane.
struct Running {
    registry: Arc<Registry>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(addr: SocketAddr, cache: Arc<SnapshotCache>) -> Running {
        let listener = std::net::TcpListener::bind(addr).expect("bind the xDS port");
        listener.set_nonblocking(true).expect("nonblocking");
        let registry = Arc::new(Registry::default());
        let server = XdsServer::new(cache, registry.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::spawn(server.serve(listener, std::future::pending()));
                let _ = stopped.await;
            });
            // Dropping the runtime drops every connection task: all sockets close.
        });
        Running {
            registry,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct ControlPlane {
    cache: Arc<SnapshotCache>,
    addr: SocketAddr,
    generation: u64,
    running: Option<Running>,
}

impl ControlPlane {
    fn start(yaml: &str) -> ControlPlane {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut cp = ControlPlane {
            cache: Arc::new(SnapshotCache::new()),
            addr: port,
            generation: 0,
            running: None,
        };
        cp.publish(yaml);
        cp.running = Some(Running::start(cp.addr, cp.cache.clone()));
        cp
    }

    fn publish(&mut self, yaml: &str) {
        let config = config::load_str(Path::new("test.yaml"), yaml).expect("valid test config");
        self.generation += 1;
        self.cache.publish(&config, self.generation);
    }

    /// Kills the server: every stream ends.
    fn stop(&mut self) {
        self.running = None;
    }

    /// A new control plane process on the same address, serving `yaml`.
    fn restart(&mut self, yaml: &str) {
        self.stop();
        self.cache = Arc::new(SnapshotCache::new());
        self.publish(yaml);
        self.running = Some(Running::start(self.addr, self.cache.clone()));
    }

    fn registry(&self) -> &Registry {
        &self.running.as_ref().expect("server running").registry
    }

    /// The server's view of the one connected client, per type.
    fn types(&self) -> BTreeMap<String, ServerTypeStatus> {
        self.registry()
            .snapshot()
            .into_iter()
            .last()
            .map(|c| c.types)
            .unwrap_or_default()
    }

    /// True when the server has sent each of `types` and the client ACKed what was sent last.
    fn all_acked(&self, types: &[&str]) -> bool {
        let seen = self.types();
        types.iter().all(|t| {
            seen.get(*t).is_some_and(|s| {
                s.pushes > 0 && !s.sent_version.is_empty() && s.acked_version == s.sent_version
            })
        })
    }

    fn client(&self, sink: &Arc<TestSink>, delta: bool) -> XdsHandle {
        let config = XdsClientConfig {
            endpoints: vec![self.addr.to_string()],
            node: Node {
                id: "proxy-1".into(),
                cluster: "checkout".into(),
                ..Default::default()
            },
            delta,
            connect_timeout: Duration::from_secs(1),
            subscribe_cds: true,
            subscribe_lds: true,
            tls: None,
        };
        let sink: Arc<dyn ConfigSink> = sink.clone();
        xds::spawn(config, sink)
    }
}

/// Polls `cond` every 20 ms until it holds or `DEADLINE` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ALL: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Waits until the sink holds the BASE configuration and the server saw everything ACKed.
async fn converge(cp: &ControlPlane, sink: &TestSink) {
    eventually("the BASE configuration in the sink", || {
        sink.names(CLUSTER) == ["inventory", "payments"]
            && sink.names(ENDPOINT) == ["inventory", "payments"]
            && sink.names(LISTENER) == ["checkout"]
            && sink.names(ROUTE) == ["checkout"]
    })
    .await;
    eventually("all four types ACKed on the server", || cp.all_acked(&ALL)).await;
}

fn first_apply(applies: &[(String, Vec<String>)], t: &str) -> usize {
    applies
        .iter()
        .position(|(at, _)| at == t)
        .unwrap_or_else(|| panic!("no apply of {t}: {applies:?}"))
}

// ---------------------------------------------------------------------------------------------
// Tests

async fn receives_everything_and_acks(delta: bool) {
    let cp = ControlPlane::start(BASE);
    let sink = Arc::new(TestSink::default());
    let client = cp.client(&sink, delta);
    converge(&cp, &sink).await;

    let applies = sink.applies();
    let (c, e, l, r) = (
        first_apply(&applies, CLUSTER),
        first_apply(&applies, ENDPOINT),
        first_apply(&applies, LISTENER),
        first_apply(&applies, ROUTE),
    );
    assert!(
        c < e && c < l && l < r,
        "CDS, then EDS; LDS, then RDS: {applies:?}"
    );

    let server = cp.types();
    assert_eq!(server[ENDPOINT].subscribed, ["inventory", "payments"]);
    assert_eq!(server[ROUTE].subscribed, ["checkout"]);
    assert_eq!(server[CLUSTER].subscribed, ["*"]);
    assert!(ALL.iter().all(|t| server[*t].nacks == 0));

    let status = client.status();
    assert!(status.connected);
    assert_eq!(status.delta, delta);
    assert_eq!(status.streams_established, 1);
    for t in ALL {
        let ts = &status.types[t];
        assert!(
            ts.update_success >= 1 && ts.update_rejected == 0,
            "{t}: {ts:?}"
        );
        assert_eq!(ts.update_attempt, ts.update_success);
        if !delta {
            assert_eq!(ts.version_info, server[t].acked_version, "{t}");
        }
    }
    if delta {
        let versions = &status.types[CLUSTER].resource_versions;
        assert_eq!(
            versions.keys().collect::<Vec<_>>(),
            ["inventory", "payments"]
        );
    }
    assert_eq!(sink.connected_events(), [true]);
}

#[tokio::test]
async fn sotw_receives_all_four_types_and_acks_them() {
    receives_everything_and_acks(false).await;
}

#[tokio::test]
async fn delta_receives_all_four_types_and_acks_them() {
    receives_everything_and_acks(true).await;
}

/// legate-proxy names itself as Envoy does (`user_agent_name: envoy`), with its own version
/// string; legate-cp reads the user agent and serves the Envoy flavour.
#[tokio::test]
async fn node_carries_the_envoy_user_agent() {
    use legate_control_plane::cache::Flavor;
    use legate_proto::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let cp = ControlPlane::start(BASE);
    let sink = Arc::new(TestSink::default());
    let _client = cp.client(&sink, false);
    converge(&cp, &sink).await;
    let seen = cp
        .registry()
        .snapshot()
        .into_iter()
        .last()
        .expect("a client");
    assert_eq!(seen.user_agent, "envoy");
    assert_eq!(seen.flavor, Some(Flavor::Envoy));
    let node = seen.node.expect("the node");
    assert_eq!(
        node.user_agent_version_type,
        Some(UserAgentVersionType::UserAgentVersion(format!(
            "legate-proxy/{}",
            env!("CARGO_PKG_VERSION")
        )))
    );
    assert_eq!(
        (node.id.as_str(), node.cluster.as_str()),
        ("proxy-1", "checkout")
    );
}

async fn nack_then_recover(delta: bool) {
    const MESSAGE: &str = "cluster payments: connect_timeout: must be positive";
    let mut cp = ControlPlane::start(BASE);
    let sink = Arc::new(TestSink::default());
    sink.reject(CLUSTER, MESSAGE);
    let client = cp.client(&sink, delta);

    eventually("the server to record the NACK", || {
        cp.types()
            .get(CLUSTER)
            .is_some_and(|s| s.last_nack.as_deref() == Some(MESSAGE))
    })
    .await;
    // No NACK loop: the rejected version is not resent and the client asks for nothing more.
    tokio::time::sleep(QUIET).await;
    let server = cp.types();
    assert_eq!(server[CLUSTER].pushes, 1, "{:?}", server[CLUSTER]);
    assert_eq!(server[CLUSTER].nacks, 1);
    let status = client.status();
    let cds = &status.types[CLUSTER];
    assert_eq!(
        (cds.update_attempt, cds.update_rejected, cds.update_success),
        (1, 1, 0)
    );
    assert_eq!(
        cds.last_nack.as_ref().map(|n| n.message.as_str()),
        Some(MESSAGE)
    );
    assert!(cds.version_info.is_empty(), "nothing accepted yet");
    assert!(sink.names(CLUSTER).is_empty());
    assert!(sink.names(ENDPOINT).is_empty(), "no EDS without clusters");

    // A new version the sink accepts is applied and ACKed.
    sink.accept(CLUSTER);
    cp.publish(&with_orders());
    eventually("the new clusters in the sink", || {
        sink.names(CLUSTER) == ["inventory", "orders", "payments"]
            && sink.names(ENDPOINT) == ["inventory", "orders", "payments"]
    })
    .await;
    eventually("all four types ACKed on the server", || cp.all_acked(&ALL)).await;
    let server = cp.types();
    assert_eq!(server[CLUSTER].pushes, 2);
    assert_eq!(
        server[CLUSTER].last_nack.as_deref(),
        Some(MESSAGE),
        "history kept"
    );
    let status = client.status();
    assert_eq!(status.types[CLUSTER].update_success, 1);
}

#[tokio::test]
async fn sotw_nack_is_not_looped_and_a_later_version_applies() {
    nack_then_recover(false).await;
}

#[tokio::test]
async fn delta_nack_is_not_looped_and_a_later_version_applies() {
    nack_then_recover(true).await;
}

async fn reconnects_after_server_loss(delta: bool) {
    let mut cp = ControlPlane::start(BASE);
    let sink = Arc::new(TestSink::default());
    let client = cp.client(&sink, delta);
    converge(&cp, &sink).await;
    let before = sink.applies().len();

    cp.stop();
    eventually("connected(false)", || {
        sink.connected_events() == [true, false]
    })
    .await;
    assert!(!client.status().connected);
    assert_eq!(
        sink.names(CLUSTER),
        ["inventory", "payments"],
        "config kept"
    );
    assert_eq!(sink.names(ENDPOINT), ["inventory", "payments"]);
    assert_eq!(
        sink.applies().len(),
        before,
        "nothing applied on disconnect"
    );

    let changed = BASE.replace("127.0.0.1:9001", "127.0.0.1:9011");
    let lost_at = Instant::now();
    cp.restart(&changed);
    eventually("the change after reconnecting", || {
        sink.endpoint_ports("payments") == [9011]
    })
    .await;
    assert!(lost_at.elapsed() <= DEADLINE);
    eventually("all four types ACKed on the new server", || {
        cp.all_acked(&ALL)
    })
    .await;
    assert_eq!(sink.connected_events(), [true, false, true]);
    assert_eq!(sink.endpoint_ports("inventory"), [9002]);
    assert_eq!(sink.names(LISTENER), ["checkout"]);

    let status = client.status();
    assert_eq!(status.streams_established, 2);
    let eds = &status.types[ENDPOINT];
    if delta {
        // initial_resource_versions: only the changed endpoints came back; unchanged clusters,
        // listeners and routes were not resent.
        assert_eq!(eds.last_response_resources, 1, "{eds:?}");
        for t in [CLUSTER, LISTENER, ROUTE] {
            assert_eq!(status.types[t].last_response_resources, 0, "{t}");
        }
    } else {
        assert_eq!(eds.last_response_resources, 2, "SotW resends the full set");
    }
}

#[tokio::test]
async fn sotw_reconnects_and_keeps_config_meanwhile() {
    reconnects_after_server_loss(false).await;
}

#[tokio::test]
async fn delta_reconnects_with_initial_resource_versions() {
    reconnects_after_server_loss(true).await;
}

async fn subscriptions_follow_the_clusters(delta: bool) {
    let mut cp = ControlPlane::start(BASE);
    let sink = Arc::new(TestSink::default());
    let _client = cp.client(&sink, delta);
    converge(&cp, &sink).await;

    cp.publish(&with_orders());
    eventually("orders' endpoints in the sink", || {
        sink.names(ENDPOINT) == ["inventory", "orders", "payments"]
    })
    .await;
    assert_eq!(sink.endpoint_ports("orders"), [9003]);
    eventually("the EDS subscription to grow", || {
        cp.types()
            .get(ENDPOINT)
            .is_some_and(|s| s.subscribed == ["inventory", "orders", "payments"])
    })
    .await;
    eventually("all ACKed", || cp.all_acked(&ALL)).await;

    // Removing a service shrinks the subscription; its endpoints leave with the next update.
    cp.publish(&BASE.replace("  inventory:\n    endpoints: [127.0.0.1:9002]\n", ""));
    eventually("the EDS subscription to shrink", || {
        cp.types()
            .get(ENDPOINT)
            .is_some_and(|s| s.subscribed == ["payments"])
            && sink.names(CLUSTER) == ["payments"]
    })
    .await;
    eventually("all ACKed", || cp.all_acked(&ALL)).await;
    let server = cp.types();
    assert!(ALL.iter().all(|t| server[*t].nacks == 0), "{server:?}");
}

#[tokio::test]
async fn sotw_eds_subscription_follows_the_clusters() {
    subscriptions_follow_the_clusters(false).await;
}

#[tokio::test]
async fn delta_eds_subscription_follows_the_clusters() {
    subscriptions_follow_the_clusters(true).await;
}

#[tokio::test]
async fn unreachable_servers_are_retried_in_order() {
    // The first endpoint refuses connections; the client moves on to the second.
    let cp = ControlPlane::start(BASE);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let sink = Arc::new(TestSink::default());
    let config = XdsClientConfig {
        endpoints: vec![dead.to_string(), cp.addr.to_string()],
        node: Node {
            id: "proxy-1".into(),
            cluster: "checkout".into(),
            ..Default::default()
        },
        delta: false,
        connect_timeout: Duration::from_secs(1),
        subscribe_cds: true,
        subscribe_lds: true,
        tls: None,
    };
    let sink_dyn: Arc<dyn ConfigSink> = sink.clone();
    let client = xds::spawn(config, sink_dyn);
    converge(&cp, &sink).await;
    let status = client.status();
    assert_eq!(status.server.as_deref(), Some(cp.addr.to_string().as_str()));
    assert!(status.stream_failures >= 1);
}
