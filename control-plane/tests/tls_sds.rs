//! TLS from the control plane's side, driven by raw tonic clients against an in-process server:
//! secrets over ADS and over the standalone SDS service (SotW and delta), a rotation that
//! pushes secrets and no clusters, `render`'s redaction, and xDS over (m)TLS.

use legate_control_plane::cache::SnapshotCache;
use legate_control_plane::certs::{InitOptions, init};
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::Registry;
use legate_control_plane::server::tls::XdsTls;
use legate_control_plane::state::ConfigState;
use legate_proto::pb::envoy::config::core::v3::{DataSource, Node, data_source};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use legate_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use legate_proto::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use legate_proto::type_url::{CLUSTER, SECRET};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const DEADLINE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

const YAML: &str = "
services:
  payments:
    endpoints: [127.0.0.1:9001]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      verify_san: [spiffe://example.org/ns/default/sa/payments]
  inventory:
    endpoints: [127.0.0.1:9002]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
";

const SECRETS: [&str; 2] = ["payments/ca", "payments/cert"];

/// An xDS server over a configuration with one TLS service, reloadable.
struct Fixture {
    dir: tempfile::TempDir,
    state: Arc<ConfigState>,
    addr: SocketAddr,
}

impl Fixture {
    async fn start(tls: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        init(&InitOptions::new(
            dir.path().join("certs"),
            "example.org",
            &["payments", "checkout", "legate-cp"],
        ))
        .expect("certs");
        std::fs::write(dir.path().join("svc.yaml"), YAML).expect("yaml");
        let cache = Arc::new(SnapshotCache::new());
        let state = Arc::new(ConfigState::new(dir.path().join("svc.yaml"), cache.clone()));
        state.reload().expect("valid configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = XdsServer::new(cache, Arc::new(Registry::default()));
        let xds_tls = tls.then(|| {
            let c = dir.path().join("certs");
            XdsTls::load(
                &c.join("legate-cp.pem"),
                &c.join("legate-cp.key"),
                Some(&c.join("ca.pem")),
            )
            .expect("xds tls")
        });
        tokio::spawn(async move {
            server
                .serve_tls(listener, xds_tls.as_ref(), std::future::pending())
                .await
        });
        Fixture { dir, state, addr }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.cert(name)).expect("read")
    }

    /// Issues a new `checkout` leaf from the same CA and reloads.
    fn rotate(&self) {
        let mut opts =
            InitOptions::new(self.dir.path().join("certs"), "example.org", &["checkout"]);
        opts.keep_ca = true;
        opts.force = true;
        init(&opts).expect("rotate");
        assert_eq!(self.state.reload(), Ok(true));
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

fn node() -> Node {
    Node {
        id: "checkout-1".into(),
        cluster: "checkout".into(),
        ..Default::default()
    }
}

fn inline(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => b.clone(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// Decodes secrets and checks them against the files: `payments/cert` holds the `checkout`
/// chain and key, `payments/ca` the CA.
fn check_secrets(f: &Fixture, secrets: &[Secret]) {
    let mut names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, SECRETS);
    for s in secrets {
        match &s.r#type {
            Some(secret::Type::TlsCertificate(tc)) => {
                assert_eq!(s.name, "payments/cert");
                assert_eq!(inline(&tc.certificate_chain), f.read("checkout.pem"));
                assert_eq!(inline(&tc.private_key), f.read("checkout.key"));
            }
            Some(secret::Type::ValidationContext(vc)) => {
                assert_eq!(s.name, "payments/ca");
                assert_eq!(inline(&vc.trusted_ca), f.read("ca.pem"));
            }
            other => panic!("unexpected secret type {other:?}"),
        }
    }
}

fn decode(resources: &[legate_proto::pb::google::protobuf::Any]) -> Vec<Secret> {
    resources
        .iter()
        .map(|any| legate_proto::any::unpack::<Secret>(any).expect("a Secret"))
        .collect()
}

fn sotw_request(
    first: bool,
    type_url: &str,
    names: &[&str],
    ack: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: first.then(node),
        type_url: type_url.into(),
        resource_names: names.iter().map(ToString::to_string).collect(),
        version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

async fn recv<T>(rx: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.message())
        .await
        .expect("a response within the deadline")
        .expect("stream ok")
        .expect("stream open")
}

async fn expect_quiet<T: std::fmt::Debug>(rx: &mut tonic::Streaming<T>) {
    if let Ok(msg) = tokio::time::timeout(QUIET, rx.message()).await {
        panic!("expected no response, got {msg:?}");
    }
}

#[tokio::test]
async fn ads_sotw_serves_secrets_and_a_rotation_pushes_only_secrets() {
    let f = Fixture::start(false).await;
    let (tx, rx) = mpsc::channel(16);
    let mut rx = AggregatedDiscoveryServiceClient::new(f.channel().await)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("open ADS")
        .into_inner();
    tx.send(sotw_request(true, CLUSTER, &[], None))
        .await
        .unwrap();
    let clusters = recv(&mut rx).await;
    assert_eq!(clusters.type_url, CLUSTER);
    tx.send(sotw_request(false, CLUSTER, &[], Some(&clusters)))
        .await
        .unwrap();
    tx.send(sotw_request(false, SECRET, &SECRETS, None))
        .await
        .unwrap();
    let secrets = recv(&mut rx).await;
    assert_eq!(secrets.type_url, SECRET);
    check_secrets(&f, &decode(&secrets.resources));
    tx.send(sotw_request(false, SECRET, &SECRETS, Some(&secrets)))
        .await
        .unwrap();
    expect_quiet(&mut rx).await;

    f.rotate();
    let pushed = recv(&mut rx).await;
    assert_eq!(pushed.type_url, SECRET, "a rotation pushes secrets");
    assert_ne!(pushed.version_info, secrets.version_info);
    check_secrets(&f, &decode(&pushed.resources));
    tx.send(sotw_request(false, SECRET, &SECRETS, Some(&pushed)))
        .await
        .unwrap();
    // ...and nothing else: clusters are unchanged.
    expect_quiet(&mut rx).await;
}

#[tokio::test]
async fn ads_delta_serves_secrets_with_per_resource_versions() {
    let f = Fixture::start(false).await;
    let (tx, rx) = mpsc::channel(16);
    let mut rx = AggregatedDiscoveryServiceClient::new(f.channel().await)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("open delta ADS")
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: SECRET.into(),
        resource_names_subscribe: SECRETS.iter().map(ToString::to_string).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let resp = recv(&mut rx).await;
    assert_eq!(resp.type_url, SECRET);
    let versions: Vec<(String, String)> = resp
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let secrets: Vec<Secret> = resp
        .resources
        .iter()
        .map(|r| legate_proto::any::unpack(r.resource.as_ref().expect("resource")).expect("Secret"))
        .collect();
    check_secrets(&f, &secrets);
    ack_delta(&tx, &resp).await;
    expect_quiet(&mut rx).await;

    f.rotate();
    let pushed = recv(&mut rx).await;
    assert_eq!(pushed.type_url, SECRET);
    // Only the rotated secret is sent; the CA kept its version.
    let names: Vec<&str> = pushed.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["payments/cert"]);
    let old = versions
        .iter()
        .find(|(n, _)| n == "payments/cert")
        .expect("cert");
    assert_ne!(pushed.resources[0].version, old.1);
    ack_delta(&tx, &pushed).await;
    expect_quiet(&mut rx).await;
}

async fn ack_delta(tx: &mpsc::Sender<DeltaDiscoveryRequest>, resp: &DeltaDiscoveryResponse) {
    tx.send(DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn standalone_sds_serves_secrets_sotw_and_delta() {
    let f = Fixture::start(false).await;
    let mut sds = SecretDiscoveryServiceClient::new(f.channel().await);

    // SotW.
    let (tx, rx) = mpsc::channel(16);
    let mut stream = sds
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .expect("open SDS")
        .into_inner();
    tx.send(sotw_request(true, SECRET, &SECRETS, None))
        .await
        .unwrap();
    let resp = recv(&mut stream).await;
    check_secrets(&f, &decode(&resp.resources));
    tx.send(sotw_request(false, SECRET, &SECRETS, Some(&resp)))
        .await
        .unwrap();
    f.rotate();
    let pushed = recv(&mut stream).await;
    check_secrets(&f, &decode(&pushed.resources));
    assert_ne!(pushed.version_info, resp.version_info);

    // Delta.
    let (tx, rx) = mpsc::channel(16);
    let mut stream = sds
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .expect("open delta SDS")
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: SECRET.into(),
        resource_names_subscribe: SECRETS.iter().map(ToString::to_string).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let resp = recv(&mut stream).await;
    let secrets: Vec<Secret> = resp
        .resources
        .iter()
        .map(|r| legate_proto::any::unpack(r.resource.as_ref().expect("resource")).expect("Secret"))
        .collect();
    check_secrets(&f, &secrets);

    // Fetch (unary) is not served: Envoy and gRPC use streams.
    let fetched = sds
        .fetch_secrets(sotw_request(true, SECRET, &SECRETS, None))
        .await
        .expect_err("fetch is not served");
    assert_eq!(fetched.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn render_redacts_private_keys_unless_asked() {
    let f = Fixture::start(false).await;
    let config = f.state.current.load();
    let key = String::from_utf8(f.read("checkout.key")).unwrap();
    let redacted = legate_control_plane::render::render(&config, "checkout").expect("render");
    let text = redacted.to_string();
    assert!(!text.contains("PRIVATE KEY"));
    let secrets = redacted["secrets"].as_array().expect("secrets");
    let cert = secrets
        .iter()
        .find(|s| s["name"] == "payments/cert")
        .expect("payments/cert");
    assert_eq!(
        cert["tls_certificate"]["private_key"]["inline_bytes"],
        "[redacted]"
    );
    // The certificate itself is public and stays.
    assert!(cert["tls_certificate"]["certificate_chain"]["inline_bytes"].is_string());

    let shown =
        legate_control_plane::render::render_with(&config, "checkout", true).expect("render");
    let shown_cert = shown["secrets"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "payments/cert"))
        .expect("payments/cert");
    let b64 = shown_cert["tls_certificate"]["private_key"]["inline_bytes"]
        .as_str()
        .expect("base64");
    assert_ne!(b64, "[redacted]");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

    // The cluster names the secrets over ADS.
    let cluster = &redacted["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "payments"))
        .expect("payments")["transport_socket"];
    assert_eq!(cluster["name"], "envoy.transport_sockets.tls");
    let ctx = &cluster["typed_config"]["common_tls_context"];
    assert_eq!(
        ctx["tls_certificate_sds_secret_configs"][0]["name"],
        "payments/cert"
    );
    assert_eq!(
        ctx["combined_validation_context"]["validation_context_sds_secret_config"]["name"],
        "payments/ca"
    );
    assert_eq!(
        ctx["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
            [0]["san_type"],
        "URI"
    );
}

/// A tonic channel to `addr` over TLS, trusting `ca`, presenting `identity` when given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

async fn fetch_clusters(channel: Channel) -> Result<DiscoveryResponse, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(sotw_request(true, CLUSTER, &[], None))
        .await
        .unwrap();
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(Ok(Some(resp))) => Ok(resp),
        Ok(Ok(None)) => Err(tonic::Status::unavailable("stream closed")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no response")),
    }
}

#[tokio::test]
async fn xds_over_mtls_needs_a_client_certificate_from_the_ca() {
    let f = Fixture::start(true).await;
    let ca = f.cert("ca.pem");
    let (cert, key) = (f.cert("checkout.pem"), f.cert("checkout.key"));

    let channel = tls_channel(f.addr, &ca, Some((&cert, &key)))
        .await
        .expect("mTLS connect");
    let clusters = fetch_clusters(channel).await.expect("clusters over mTLS");
    assert_eq!(clusters.type_url, CLUSTER);
    assert_eq!(clusters.resources.len(), 2);

    // No client certificate: the server refuses the handshake (or the first request fails).
    let refused = match tls_channel(f.addr, &ca, None).await {
        Err(_) => true,
        Ok(channel) => fetch_clusters(channel).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // A certificate from another CA: refused too.
    let other = tempfile::tempdir().unwrap();
    let other_certs = init(&InitOptions::new(
        other.path(),
        "example.org",
        &["checkout"],
    ))
    .unwrap();
    let leaf = &other_certs.leaves[0];
    let refused = match tls_channel(f.addr, &ca, Some((&leaf.cert, &leaf.key))).await {
        Err(_) => true,
        Ok(channel) => fetch_clusters(channel).await.is_err(),
    };
    assert!(refused, "a certificate from another CA must be refused");

    // Plaintext: refused.
    let plain = Channel::from_shared(format!("http://{}", f.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => fetch_clusters(channel).await.is_err(),
    };
    assert!(refused, "plaintext must be refused");
}
