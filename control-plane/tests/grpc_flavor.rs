//! The gRPC flavour served to proxyless gRPC clients, driven by a raw tonic client against an
//! in-process server: which flavour a node gets, the invariants between flavours, `S:PORT`
//! listener names, CSDS and gRPC reflection.

use legate_control_plane::cache::{Flavor, SnapshotCache, Snapshots};
use legate_control_plane::config;
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::Registry;
use legate_control_plane::server::stream::choose_flavor;
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use legate_proto::pb::envoy::config::listener::v3::Listener;
use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use legate_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_proto::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use legate_proto::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
use legate_proto::pb::envoy::r#type::matcher::v3::{
    NodeMatcher, StringMatcher, string_matcher::MatchPattern,
};
use legate_proto::pb::google::protobuf::{Struct, Value, value::Kind};
use legate_proto::pb::google::rpc::Status as RpcStatus;
use legate_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const YAML: &str = r#"
services:
  payments:
    protocol: grpc
    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
    retries: { attempts: 2, on: [unavailable, 5xx], per_try_timeout: 1s }
  inventory:
    endpoints: [127.0.0.1:9003]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
  default:
    listen: 127.0.0.1:10001
    services: [inventory]
"#;

const DEADLINE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

struct Fixture {
    cache: Arc<SnapshotCache>,
    addr: SocketAddr,
}

impl Fixture {
    async fn start(yaml: &str) -> Fixture {
        let cache = Arc::new(SnapshotCache::new());
        let registry = Arc::new(Registry::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = XdsServer::new(cache.clone(), registry);
        tokio::spawn(server.serve(listener, std::future::pending()));
        let f = Fixture { cache, addr };
        f.publish(yaml, 1);
        f
    }

    fn publish(&self, yaml: &str, generation: u64) {
        let config = config::load_str(Path::new("test.yaml"), yaml).expect("valid test config");
        self.cache.publish(&config, generation);
    }

    async fn ads(&self, node: Node) -> Ads {
        let (tx, rx) = mpsc::channel(16);
        let resp = AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open ADS");
        Ads {
            tx,
            rx: resp.into_inner(),
            node: Some(node),
        }
    }

    async fn csds(&self) -> ClientStatusDiscoveryServiceClient<tonic::transport::Channel> {
        ClientStatusDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }
}

struct Ads {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl Ads {
    async fn request(&mut self, type_url: &str, names: &[&str], ack: Option<&DiscoveryResponse>) {
        let req = DiscoveryRequest {
            node: self.node.take(),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send");
    }

    async fn nack(&mut self, resp: &DiscoveryResponse, names: &[&str], message: &str) {
        let req = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
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

    /// Walks the gRPC chain for `target` as a gRPC client does (LDS → RDS → CDS → EDS), ACKing
    /// each response; returns them in that order.
    async fn grpc_chain(&mut self, target: &str, service: &str) -> [DiscoveryResponse; 4] {
        self.request(LISTENER, &[target], None).await;
        let lds = self.recv().await;
        self.request(LISTENER, &[target], Some(&lds)).await;
        let route = format!("grpc/{service}");
        self.request(ROUTE, &[&route], None).await;
        let rds = self.recv().await;
        self.request(ROUTE, &[&route], Some(&rds)).await;
        self.request(CLUSTER, &[service], None).await;
        let cds = self.recv().await;
        self.request(CLUSTER, &[service], Some(&cds)).await;
        self.request(ENDPOINT, &[service], None).await;
        let eds = self.recv().await;
        self.request(ENDPOINT, &[service], Some(&eds)).await;
        [lds, rds, cds, eds]
    }
}

fn grpc_node(id: &str) -> Node {
    Node {
        id: id.into(),
        user_agent_name: "gRPC C-core".into(),
        ..Default::default()
    }
}

fn envoy_node() -> Node {
    Node {
        id: "envoy-1".into(),
        cluster: "checkout".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    }
}

fn with_flavor_metadata(mut node: Node, flavor: &str) -> Node {
    node.metadata = Some(Struct {
        fields: [(
            "LEGATE_FLAVOR".to_string(),
            Value {
                kind: Some(Kind::StringValue(flavor.into())),
            },
        )]
        .into_iter()
        .collect(),
    });
    node
}

fn listeners(resp: &DiscoveryResponse) -> Vec<Listener> {
    resp.resources
        .iter()
        .map(|a| unpack::<Listener>(a).expect("listener"))
        .collect()
}

#[test]
fn flavor_rule() {
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let bare = Node::default();
    let cases = [
        // Declared in metadata: wins over everything.
        (
            with_flavor_metadata(envoy_node(), "grpc"),
            CLUSTER,
            names(&[]),
            Flavor::Grpc,
        ),
        (
            with_flavor_metadata(grpc_node("x"), "envoy"),
            LISTENER,
            names(&["payments"]),
            Flavor::Envoy,
        ),
        // User agents.
        (grpc_node("x"), CLUSTER, names(&[]), Flavor::Grpc),
        (
            Node {
                user_agent_name: "gRPC Node Pure JS".into(),
                ..Default::default()
            },
            LISTENER,
            names(&["p"]),
            Flavor::Grpc,
        ),
        (envoy_node(), LISTENER, names(&["payments"]), Flavor::Envoy),
        // What the first request asks for.
        (bare.clone(), LISTENER, names(&["payments"]), Flavor::Grpc),
        (bare.clone(), LISTENER, names(&[]), Flavor::Envoy),
        (
            bare.clone(),
            LISTENER,
            names(&["*", "payments"]),
            Flavor::Envoy,
        ),
        (bare.clone(), CLUSTER, names(&["payments"]), Flavor::Envoy),
    ];
    for (node, t, requested, want) in cases {
        let (got, why) = choose_flavor(Some(&node), t, &requested);
        assert_eq!(got, want, "{node:?} {t} {requested:?}: {why}");
    }
    assert_eq!(
        choose_flavor(None, LISTENER, &names(&["a"])).0,
        Flavor::Grpc
    );
}

/// Every resource of every snapshot of one flavour.
fn all_resources(
    snapshots: &Snapshots,
    flavor: Flavor,
) -> Vec<(String, legate_proto::pb::google::protobuf::Any)> {
    snapshots
        .of_flavor(flavor)
        .values()
        .flat_map(|s| s.types.values())
        .flat_map(|t| t.items.values())
        .map(|r| (r.type_url.clone(), r.any.clone()))
        .collect()
}

#[test]
fn invariants_between_flavors() {
    let dir = tempfile::tempdir().expect("tempdir");
    legate_control_plane::certs::init(&legate_control_plane::certs::InitOptions::new(
        dir.path(),
        "example.org",
        &["checkout"],
    ))
    .expect("certs");
    let yaml = format!(
        "{YAML}  secure:\n    listen: 127.0.0.1:10002\n",
    )
    .replace(
        "  inventory:\n",
        &format!(
            "  ledger:\n    protocol: http2\n    endpoints: ['localhost:9100']\n    tls: {{ ca: {d}/ca.pem, cert: {d}/checkout.pem, key: {d}/checkout.key }}\n  inventory:\n",
            d = dir.path().display()
        ),
    );
    let config = config::load_str(&dir.path().join("t.yaml"), &yaml).expect("valid");
    let cache = SnapshotCache::new();
    let resolved = [("localhost".to_string(), vec!["127.0.0.1".parse().unwrap()])]
        .into_iter()
        .collect();
    let snapshots = cache.publish_with(&config, &resolved, 1);

    let envoy = all_resources(&snapshots, Flavor::Envoy);
    assert!(
        envoy.iter().any(|(t, _)| t == SECRET),
        "the Envoy flavour uses SDS for `ledger`"
    );
    for (t, any) in &envoy {
        if t == LISTENER {
            let l: Listener = unpack(any).expect("listener");
            assert!(
                l.api_listener.is_none(),
                "an Envoy got an api_listener: {}",
                l.name
            );
        }
    }

    let grpc = all_resources(&snapshots, Flavor::Grpc);
    assert!(!grpc.is_empty());
    let mut grpc_ledger = false;
    for (t, any) in &grpc {
        assert_ne!(t, SECRET, "a gRPC client got a secret");
        match t.as_str() {
            CLUSTER => {
                let c: Cluster = unpack(any).expect("cluster");
                let json = legate_proto::json::to_json(&c).expect("json").to_string();
                assert!(!json.contains("sds"), "{}: SDS in the gRPC flavour", c.name);
                if c.name == "ledger" {
                    // gRFC A29: certificate providers of the client's bootstrap.
                    assert!(
                        json.contains("\"ca_certificate_provider_instance\"")
                            && json.contains("\"tls_certificate_provider_instance\""),
                        "{json}"
                    );
                    grpc_ledger = true;
                } else {
                    assert!(c.transport_socket.is_none(), "{}", c.name);
                }
            }
            LISTENER => {
                let l: Listener = unpack(any).expect("listener");
                assert!(
                    l.api_listener.is_some() && l.address.is_none(),
                    "{}",
                    l.name
                );
            }
            ENDPOINT => {
                let cla: ClusterLoadAssignment = unpack(any).expect("cla");
                for ep in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
                    let Some(HostIdentifier::Endpoint(e)) = &ep.host_identifier else {
                        panic!("not an endpoint")
                    };
                    let json = legate_proto::json::to_json(e).expect("json");
                    let ip = json["address"]["socket_address"]["address"]
                        .as_str()
                        .unwrap();
                    assert!(
                        ip.parse::<std::net::IpAddr>().is_ok(),
                        "{ip} is not an IP literal"
                    );
                }
            }
            ROUTE => {
                let rc: RouteConfiguration = unpack(any).expect("route");
                let json = legate_proto::json::to_json(&rc).expect("json");
                assert!(!json.to_string().contains("per_try_timeout"), "{json}");
            }
            other => panic!("unexpected type {other}"),
        }
    }
    assert!(grpc_ledger, "the TLS service is offered to gRPC clients");
    // The Envoy flavour of `ledger` carries its TLS through SDS; never the gRPC one.
    let ledger = snapshots.by_ambassador["checkout"]
        .of(CLUSTER)
        .unwrap()
        .items["ledger"]
        .clone();
    let c: Cluster = unpack(&ledger.any).expect("cluster");
    let ts = c.transport_socket.expect("TLS");
    let Some(legate_proto::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = ts.config_type
    else {
        panic!("no typed config")
    };
    let _: UpstreamTlsContext = unpack(&any).expect("upstream TLS context");
}

#[tokio::test]
async fn grpc_client_walks_the_chain() {
    let f = Fixture::start(YAML).await;
    let mut ads = f.ads(grpc_node("app-1")).await;
    // An arbitrary node id maps to the `default` ambassador, which may call only inventory.
    ads.request(LISTENER, &["payments"], None).await;
    let lds = ads.recv().await;
    assert!(lds.resources.is_empty(), "`default` may not call payments");
    ads.request(LISTENER, &["payments"], Some(&lds)).await;
    ads.expect_quiet().await;

    let mut ads = f
        .ads(Node {
            cluster: "checkout".into(),
            ..grpc_node("app-2")
        })
        .await;
    let [lds, rds, cds, eds] = ads.grpc_chain("payments", "payments").await;
    let l = &listeners(&lds)[0];
    assert_eq!(l.name, "payments");
    assert!(l.api_listener.is_some());
    let rc: RouteConfiguration = unpack(&rds.resources[0]).expect("route");
    assert_eq!(rc.virtual_hosts[0].domains, vec!["payments", "payments:*"]);
    let c: Cluster = unpack(&cds.resources[0]).expect("cluster");
    assert_eq!(c.name, "payments");
    let cla: ClusterLoadAssignment = unpack(&eds.resources[0]).expect("cla");
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 2);
    ads.expect_quiet().await;

    // `payments:8443` is answered under its own name, alongside `payments`.
    ads.request(LISTENER, &["payments", "payments:8443"], Some(&lds))
        .await;
    let both = ads.recv().await;
    let mut names: Vec<String> = listeners(&both).into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, vec!["payments", "payments:8443"]);
    assert!(listeners(&both).iter().all(|l| l.api_listener.is_some()));
    ads.request(LISTENER, &["payments", "payments:8443"], Some(&both))
        .await;
    ads.expect_quiet().await;

    // An endpoint change reaches the client.
    f.publish(&YAML.replace(", 127.0.0.1:9002]", "]"), 2);
    let eds2 = ads.recv().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    let cla: ClusterLoadAssignment = unpack(&eds2.resources[0]).expect("cla");
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 1);
}

#[tokio::test]
async fn envoy_never_gets_an_api_listener() {
    let f = Fixture::start(YAML).await;
    for node in [
        envoy_node(),
        Node {
            id: "legate-proxy-1".into(),
            cluster: "checkout".into(),
            ..Default::default()
        },
    ] {
        let mut ads = f.ads(node).await;
        ads.request(CLUSTER, &[], None).await;
        let cds = ads.recv().await;
        ads.request(CLUSTER, &[], Some(&cds)).await;
        ads.request(LISTENER, &[], None).await;
        let lds = loop {
            let r = ads.recv().await;
            if r.type_url == LISTENER {
                break r;
            }
        };
        let ls = listeners(&lds);
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].name, "checkout");
        assert!(ls[0].api_listener.is_none() && ls[0].address.is_some());
        // Naming a service's listener later does not switch flavour.
        ads.request(LISTENER, &["payments"], Some(&lds)).await;
        let named = ads.recv().await;
        assert!(named.resources.is_empty(), "{named:?}");
    }
}

#[tokio::test]
async fn csds_reports_synced_and_nacked_clients() {
    let f = Fixture::start(YAML).await;
    let mut grpc = f
        .ads(Node {
            cluster: "checkout".into(),
            ..grpc_node("app-csds")
        })
        .await;
    let [lds, ..] = grpc.grpc_chain("payments", "payments").await;
    grpc.expect_quiet().await;

    let mut csds = f.csds().await;
    let all = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .expect("fetch")
        .into_inner();
    let client = all
        .config
        .iter()
        .find(|c| c.node.as_ref().is_some_and(|n| n.id == "app-csds"))
        .expect("the client is listed");
    assert_eq!(client.node.as_ref().unwrap().user_agent_name, "gRPC C-core");
    let mut seen: Vec<(String, String, i32)> = client
        .generic_xds_configs
        .iter()
        .map(|g| (g.type_url.clone(), g.name.clone(), g.config_status))
        .collect();
    seen.sort();
    let synced = ConfigStatus::Synced as i32;
    assert_eq!(
        seen,
        vec![
            (CLUSTER.to_string(), "payments".to_string(), synced),
            (ENDPOINT.to_string(), "payments".to_string(), synced),
            (LISTENER.to_string(), "payments".to_string(), synced),
            (ROUTE.to_string(), "grpc/payments".to_string(), synced),
        ]
    );
    assert!(
        client
            .generic_xds_configs
            .iter()
            .all(|g| g.xds_config.is_some())
    );

    // A NACK shows as ERROR with the client's message.
    f.publish(
        &YAML.replace("retries: { attempts: 2,", "retries: { attempts: 3,"),
        2,
    );
    let rds = grpc.recv().await;
    assert_eq!(rds.type_url, ROUTE);
    grpc.nack(&rds, &["grpc/payments"], "bad route").await;
    let _ = lds;
    let mut stream = csds
        .stream_client_status(tokio_stream::iter([ClientStatusRequest {
            node_matchers: vec![NodeMatcher {
                node_id: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix("app-cs".into())),
                    ignore_case: false,
                }),
                ..Default::default()
            }],
            exclude_resource_contents: true,
            ..Default::default()
        }]))
        .await
        .expect("stream")
        .into_inner();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let route = loop {
        // The NACK may not be recorded yet when the first answer is made: ask again.
        let resp = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("answer")
            .expect("ok")
            .expect("one answer");
        assert_eq!(resp.config.len(), 1, "only the matched node");
        let g = resp.config[0]
            .generic_xds_configs
            .iter()
            .find(|g| g.type_url == ROUTE)
            .cloned()
            .expect("route status");
        if g.config_status == ConfigStatus::Error as i32 || tokio::time::Instant::now() > deadline {
            break g;
        }
        stream = csds
            .stream_client_status(tokio_stream::iter([ClientStatusRequest {
                exclude_resource_contents: true,
                node_matchers: vec![NodeMatcher {
                    node_id: Some(StringMatcher {
                        match_pattern: Some(MatchPattern::Exact("app-csds".into())),
                        ignore_case: false,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }]))
            .await
            .expect("stream")
            .into_inner();
    };
    assert_eq!(route.config_status, ConfigStatus::Error as i32);
    assert_eq!(route.error_state.expect("error state").details, "bad route");
    assert!(route.xds_config.is_none(), "exclude_resource_contents");

    let none = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![NodeMatcher {
                node_id: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("nobody".into())),
                    ignore_case: false,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    assert!(none.config.is_empty());
}

#[tokio::test]
async fn reflection_lists_the_xds_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = Fixture::start(YAML).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(
            "envoy.service.discovery.v3.AggregatedDiscoveryService".into(),
        ),
    ]
    .map(|m| ServerReflectionRequest {
        message_request: Some(m),
        ..Default::default()
    });
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();
    let list = answers.message().await.expect("ok").expect("answer");
    let Some(MessageResponse::ListServicesResponse(list)) = list.message_response else {
        panic!("not a service list: {list:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for wanted in [
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("ratelimit")),
        "only served services: {names:?}"
    );
    let file = answers.message().await.expect("ok").expect("answer");
    let Some(MessageResponse::FileDescriptorResponse(fd)) = file.message_response else {
        panic!("not a file descriptor: {file:?}");
    };
    assert!(!fd.file_descriptor_proto.is_empty());
}
