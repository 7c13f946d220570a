//! xDS protocol behaviour of the server, driven by a raw tonic client against an in-process
//! server. Each test states one rule of the xDS protocol (see ../shared/REFERENCE.md).

use legate_control_plane::cache::SnapshotCache;
use legate_control_plane::config;
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::Registry;
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;
use legate_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use legate_proto::pb::google::rpc::Status as RpcStatus;
use legate_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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

/// How long to watch a stream to conclude that nothing more is coming.
const QUIET: Duration = Duration::from_millis(400);
/// Deadline for an expected response.
const DEADLINE: Duration = Duration::from_secs(5);

struct Fixture {
    cache: Arc<SnapshotCache>,
    registry: Arc<Registry>,
    addr: SocketAddr,
    generation: u64,
}

impl Fixture {
    async fn start(yaml: &str) -> Fixture {
        let cache = Arc::new(SnapshotCache::new());
        let registry = Arc::new(Registry::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = XdsServer::new(cache.clone(), registry.clone());
        tokio::spawn(server.serve(listener, std::future::pending()));
        let mut f = Fixture {
            cache,
            registry,
            addr,
            generation: 0,
        };
        f.publish(yaml);
        f
    }

    fn publish(&mut self, yaml: &str) {
        let config = config::load_str(Path::new("test.yaml"), yaml).expect("valid test config");
        self.generation += 1;
        self.cache.publish(&config, self.generation);
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn sotw(&self) -> Sotw {
        let (tx, rx) = mpsc::channel(16);
        let resp = self
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open ADS");
        Sotw {
            tx,
            rx: resp.into_inner(),
            first: true,
        }
    }

    async fn delta(&self) -> Delta {
        let (tx, rx) = mpsc::channel(16);
        let resp = self
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open delta ADS");
        Delta {
            tx,
            rx: resp.into_inner(),
            first: true,
        }
    }
}

fn node() -> Node {
    Node {
        id: "test-node".into(),
        cluster: "checkout".into(),
        ..Default::default()
    }
}

fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| match any.type_url.as_str() {
            CLUSTER => {
                legate_proto::any::unpack::<Cluster>(any)
                    .expect("cluster")
                    .name
            }
            ROUTE => {
                legate_proto::any::unpack::<RouteConfiguration>(any)
                    .expect("route")
                    .name
            }
            _ => {
                let json = legate_proto::json::any_to_json(any).expect("json");
                json.get("name")
                    .or_else(|| json.get("cluster_name"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            }
        })
        .collect()
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    first: bool,
}

impl Sotw {
    async fn request(
        &mut self,
        type_url: &str,
        names: &[&str],
        ack_of: Option<&DiscoveryResponse>,
    ) {
        let req = DiscoveryRequest {
            node: std::mem::take(&mut self.first).then(node),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: ack_of.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: ack_of.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send");
    }

    async fn raw(&mut self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("send");
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("a response within the deadline")
            .expect("stream ok")
            .expect("stream open")
    }

    async fn expect_quiet(&mut self) {
        if let Ok(msg) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }

    /// Subscribes to all four types as Envoy does and ACKs everything; returns the last
    /// response of each type.
    async fn converge(&mut self) -> HashMap<String, DiscoveryResponse> {
        self.request(CLUSTER, &[], None).await;
        self.request(LISTENER, &[], None).await;
        let mut last = HashMap::new();
        while last.len() < 4 {
            let resp = self.recv().await;
            match resp.type_url.as_str() {
                CLUSTER => {
                    self.request(ENDPOINT, &["inventory", "payments"], None)
                        .await
                }
                LISTENER => self.request(ROUTE, &["checkout"], None).await,
                _ => {}
            }
            let t = resp.type_url.clone();
            let subscribed: Vec<String> = match t.as_str() {
                ENDPOINT => vec!["inventory".into(), "payments".into()],
                ROUTE => vec!["checkout".into()],
                _ => vec![],
            };
            let refs: Vec<&str> = subscribed.iter().map(String::as_str).collect();
            self.request(&t, &refs, Some(&resp)).await;
            last.insert(t, resp);
        }
        self.expect_quiet().await;
        last
    }
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
    first: bool,
}

impl Delta {
    async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if std::mem::take(&mut self.first) {
            req.node = Some(node());
        }
        self.tx.send(req).await.expect("send");
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("a response within the deadline")
            .expect("stream ok")
            .expect("stream open")
    }

    async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn expect_quiet(&mut self) {
        if let Ok(msg) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }
}

fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn wildcard_cds_gets_every_cluster_and_eds_only_named() {
    let f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.request(CLUSTER, &[], None).await;
    let cds = s.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["inventory", "payments"]);
    s.request(CLUSTER, &[], Some(&cds)).await;
    s.request(ENDPOINT, &["payments"], None).await;
    let eds = s.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(names(&eds), ["payments"]);
    s.request(ENDPOINT, &["payments"], Some(&eds)).await;
    s.expect_quiet().await;
}

#[tokio::test]
async fn ads_holds_listeners_until_clusters_are_acked() {
    let f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.request(CLUSTER, &[], None).await;
    s.request(LISTENER, &[], None).await;
    let cds = s.recv().await;
    assert_eq!(cds.type_url, CLUSTER, "clusters come first");
    s.expect_quiet().await;
    s.request(CLUSTER, &[], Some(&cds)).await;
    let lds = s.recv().await;
    assert_eq!(lds.type_url, LISTENER);
    assert_eq!(names(&lds), ["checkout"]);
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let mut f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.request(CLUSTER, &[], None).await;
    let first = s.recv().await;
    s.request(CLUSTER, &[], Some(&first)).await;
    f.publish(&BASE.replace(
        "  inventory:",
        "  orders:\n    endpoints: [127.0.0.1:9003]\n  inventory:",
    ));
    let second = s.recv().await;
    assert_ne!(second.version_info, first.version_info);
    assert_eq!(names(&second), ["inventory", "orders", "payments"]);
    // A request answering the *first* nonce is stale: its (narrower) subscription is ignored.
    s.request(CLUSTER, &["payments"], Some(&first)).await;
    s.expect_quiet().await;
    s.request(CLUSTER, &[], Some(&second)).await;
    s.expect_quiet().await;
}

#[tokio::test]
async fn nack_is_recorded_and_the_version_is_not_resent() {
    let mut f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.request(CLUSTER, &[], None).await;
    let cds = s.recv().await;
    s.raw(DiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster payments: unsupported field".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    s.expect_quiet().await;
    let clients = f.registry.snapshot();
    let status = &clients[0].types[CLUSTER];
    assert_eq!(status.nacks, 1);
    assert_eq!(
        status.last_nack.as_deref(),
        Some("cluster payments: unsupported field")
    );
    assert_eq!(
        status.nacked_version.as_deref(),
        Some(cds.version_info.as_str())
    );
    assert_eq!(status.pushes, 1);
    // New content is pushed again.
    f.publish(&BASE.replace("9002", "9012"));
    f.publish(&BASE.replace(
        "  inventory:",
        "  orders:\n    endpoints: [127.0.0.1:9003]\n  inventory:",
    ));
    let next = s.recv().await;
    assert_ne!(next.version_info, cds.version_info);
}

#[tokio::test]
async fn resubscribing_a_name_sends_it_again() {
    let f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.request(ENDPOINT, &["payments"], None).await;
    let eds = s.recv().await;
    s.request(ENDPOINT, &["payments"], Some(&eds)).await;
    s.expect_quiet().await;
    s.request(ENDPOINT, &[], Some(&eds)).await;
    let none = s.recv().await;
    assert!(
        none.resources.is_empty(),
        "an empty list after names means none"
    );
    s.request(ENDPOINT, &["payments"], Some(&none)).await;
    let again = s.recv().await;
    assert_eq!(names(&again), ["payments"]);
    assert_eq!(
        again.version_info, eds.version_info,
        "same content, sent again"
    );
}

#[tokio::test]
async fn endpoint_change_pushes_only_endpoints() {
    let mut f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    let before = s.converge().await;
    f.publish(&BASE.replace("[127.0.0.1:9001]", "[127.0.0.1:9001, 127.0.0.1:9011]"));
    let resp = s.recv().await;
    assert_eq!(resp.type_url, ENDPOINT);
    assert_ne!(resp.version_info, before[ENDPOINT].version_info);
    s.request(ENDPOINT, &["inventory", "payments"], Some(&resp))
        .await;
    s.expect_quiet().await;
}

#[tokio::test]
async fn removed_cluster_outlives_the_routes_that_use_it() {
    let mut f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.converge().await;
    f.publish(&BASE.replace("  inventory:\n    endpoints: [127.0.0.1:9002]\n", ""));
    let mut order = Vec::new();
    loop {
        let resp = s.recv().await;
        let t = resp.type_url.clone();
        let n = names(&resp);
        order.push((t.clone(), n.clone()));
        let subscribed: Vec<&str> = match t.as_str() {
            ENDPOINT => vec!["inventory", "payments"],
            ROUTE => vec!["checkout"],
            _ => vec![],
        };
        s.request(&t, &subscribed, Some(&resp)).await;
        if t == CLUSTER {
            assert_eq!(n, ["payments"], "the cluster goes in the end");
            break;
        }
    }
    let route_at = order.iter().position(|(t, _)| t == ROUTE);
    let cluster_at = order.iter().position(|(t, _)| t == CLUSTER);
    assert!(
        route_at.is_some() && route_at < cluster_at,
        "routes must drop the cluster before CDS does: {order:?}"
    );
}

#[tokio::test]
async fn unknown_node_gets_nothing() {
    let f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.raw(DiscoveryRequest {
        node: Some(Node {
            id: "stranger".into(),
            cluster: "nobody".into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    s.expect_quiet().await;
    assert_eq!(f.registry.snapshot()[0].ambassador, None);
}

#[tokio::test]
async fn delta_skips_what_the_client_has_and_removes_deleted() {
    let mut f = Fixture::start(BASE).await;
    let mut d = f.delta().await;
    d.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let all = d.recv().await;
    assert_eq!(delta_names(&all), ["inventory", "payments"]);
    let payments_version = all.resources[1].version.clone();
    drop(d);

    // Reconnect announcing what the client already has: only inventory is sent.
    let mut d = f.delta().await;
    d.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        initial_resource_versions: [("payments".to_string(), payments_version)].into(),
        ..Default::default()
    })
    .await;
    let resp = d.recv().await;
    assert_eq!(delta_names(&resp), ["inventory"]);
    d.ack(&resp).await;
    d.expect_quiet().await;

    f.publish(&BASE.replace("  inventory:\n    endpoints: [127.0.0.1:9002]\n", ""));
    let removal = d.recv().await;
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["inventory"]);
}

#[tokio::test]
async fn delta_applies_subscriptions_even_with_a_stale_nonce() {
    let mut f = Fixture::start(BASE).await;
    let mut d = f.delta().await;
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["payments".into()],
        ..Default::default()
    })
    .await;
    let first = d.recv().await;
    assert_eq!(delta_names(&first), ["payments"]);
    f.publish(&BASE.replace("[127.0.0.1:9001]", "[127.0.0.1:9001, 127.0.0.1:9011]"));
    let second = d.recv().await;
    assert_eq!(delta_names(&second), ["payments"]);
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        response_nonce: first.nonce.clone(),
        resource_names_subscribe: vec!["inventory".into()],
        ..Default::default()
    })
    .await;
    let third = d.recv().await;
    assert_eq!(delta_names(&third), ["inventory"]);

    // Unsubscribed names are no longer sent. Subscribing to a name that does not exist in the
    // same request gives a response (it is reported removed), which orders this test.
    d.ack(&third).await;
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_unsubscribe: vec!["inventory".into()],
        resource_names_subscribe: vec!["ghost".into()],
        ..Default::default()
    })
    .await;
    let ghost = d.recv().await;
    assert!(ghost.resources.is_empty());
    assert_eq!(ghost.removed_resources, ["ghost"]);
    d.ack(&ghost).await;
    f.publish(&BASE.replace("9001", "9031").replace("9002", "9022"));
    let after = d.recv().await;
    assert_eq!(delta_names(&after), ["payments"]);
    d.ack(&after).await;
    d.expect_quiet().await;
}

#[tokio::test]
async fn delta_nack_is_not_resent() {
    let f = Fixture::start(BASE).await;
    let mut d = f.delta().await;
    d.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let resp = d.recv().await;
    d.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "nope".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    d.expect_quiet().await;
    let clients = f.registry.snapshot();
    assert_eq!(clients[0].types[CLUSTER].last_nack.as_deref(), Some("nope"));
}

/// Envoy ACKs a cluster update only after the new clusters warmed, which needs their
/// endpoints: EDS must not wait for that ACK (or both sides wait for Envoy's 15 s timeout).
#[tokio::test]
async fn endpoints_are_not_held_behind_an_unacked_cluster_update() {
    let mut f = Fixture::start(BASE).await;
    let mut s = f.sotw().await;
    s.converge().await;
    f.publish(&BASE.replace(
        "  inventory:",
        "  orders:\n    endpoints: [127.0.0.1:9003]\n  inventory:",
    ));
    let cds = s.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["inventory", "orders", "payments"]);
    // Like Envoy: ask for the new cluster's endpoints before ACKing the clusters.
    s.request(ENDPOINT, &["inventory", "orders", "payments"], None)
        .await;
    let eds = s.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(names(&eds), ["inventory", "orders", "payments"]);
    // Routes that point at `orders` still wait for the cluster ACK.
    s.expect_quiet().await;
    s.request(ENDPOINT, &["inventory", "orders", "payments"], Some(&eds))
        .await;
    s.expect_quiet().await;
    s.request(CLUSTER, &[], Some(&cds)).await;
    let rds = s.recv().await;
    assert_eq!(rds.type_url, ROUTE);
}
