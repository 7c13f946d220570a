//! A helloworld-like gRPC server for Legate's proxyless gRPC tests and demo.
//!
//! `helloworld.Greeter/SayHello` (see `greeter.proto` beside this crate's manifest) answers
//! `HelloReply { message: "Hello <name> from <instance>", instance: "<instance>" }`, so a client
//! can tell which endpoint served each call. An instance answers `UNAVAILABLE` instead when
//!
//! - it is failing: `--fail` on the command line, or [`GrpcUpstream::set_failing`]; or
//! - the request's metadata `x-fail-on` lists its instance id (comma-separated, or `*`).
//!
//! Every call, failed or not, is counted per instance ([`GrpcUpstream::calls`]).
//!
//! With [`ServerTls`] an instance speaks TLS only and, given a client CA, requires a client
//! certificate that chains to it (mTLS); it records each distinct client certificate it saw
//! ([`GrpcUpstream::peer_certificates`]), so a test can tell who called.
//!
//! The service is written out by hand (what tonic's code generator would emit), so building
//! needs no `protoc`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::{BoxFuture, Service};
use tonic::{Request, Response, Status};

/// The proto this server implements (for clients that load it at run time).
pub const PROTO: &str = include_str!("../greeter.proto");

/// The full gRPC service name.
pub const SERVICE_NAME: &str = "helloworld.Greeter";

/// The metadata key that makes the listed instances fail a call.
pub const FAIL_ON: &str = "x-fail-on";

/// Messages of `greeter.proto`.
pub mod pb {
    /// The request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloRequest {
        /// Who to greet.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// The reply.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloReply {
        /// `Hello <name> from <instance>`.
        #[prost(string, tag = "1")]
        pub message: String,
        /// The instance id of the server that answered.
        #[prost(string, tag = "2")]
        pub instance: String,
    }
}

/// One instance's identity, behaviour and counters.
#[derive(Debug, Default)]
pub struct State {
    /// The instance id put in every reply.
    pub instance: String,
    /// Answer every call with `UNAVAILABLE`.
    pub failing: AtomicBool,
    /// Calls received.
    pub calls: AtomicU64,
    /// Calls answered with an error.
    pub failures: AtomicU64,
    /// The distinct client certificates (DER, leaf only) of calls over mTLS.
    pub peers: Mutex<BTreeSet<Vec<u8>>>,
}

impl State {
    /// A healthy instance named `instance`.
    pub fn new(instance: &str) -> Self {
        State {
            instance: instance.to_string(),
            ..Default::default()
        }
    }

    fn say_hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(leaf) = req.peer_certs().and_then(|certs| certs.first().cloned()) {
            self.peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(leaf.to_vec());
        }
        let listed = req
            .metadata()
            .get(FAIL_ON)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|list| {
                list.split(',')
                    .map(str::trim)
                    .any(|i| i == "*" || i == self.instance)
            });
        if self.failing.load(Ordering::Relaxed) || listed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Status::unavailable(format!(
                "instance {} is failing",
                self.instance
            )));
        }
        let name = req.into_inner().name;
        Ok(Response::new(pb::HelloReply {
            message: format!("Hello {name} from {}", self.instance),
            instance: self.instance.clone(),
        }))
    }
}

/// The `helloworld.Greeter` tonic service over a [`State`].
#[derive(Clone, Debug)]
pub struct GreeterServer {
    state: Arc<State>,
}

impl GreeterServer {
    /// A service answering as `state` says.
    pub fn new(state: Arc<State>) -> Self {
        GreeterServer { state }
    }
}

impl tonic::server::NamedService for GreeterServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct SayHello(Arc<State>);

impl tonic::server::UnaryService<pb::HelloRequest> for SayHello {
    type Response = pb::HelloReply;
    type Future = BoxFuture<Response<pb::HelloReply>, Status>;

    fn call(&mut self, req: Request<pb::HelloRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { state.say_hello(req) })
    }
}

impl<B> Service<http::Request<B>> for GreeterServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == "/helloworld.Greeter/SayHello" {
            let state = self.state.clone();
            return Box::pin(async move {
                let codec = tonic_prost::ProstCodec::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(SayHello(state), req).await)
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(tonic::body::Body::default());
            let headers = response.headers_mut();
            headers.insert(
                tonic::Status::GRPC_STATUS,
                (tonic::Code::Unimplemented as i32).into(),
            );
            headers.insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}

/// TLS of a server: its certificate chain and key, and the CA that client certificates must
/// chain to (`None`: no client certificate is asked for).
#[derive(Clone)]
pub struct ServerTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mtls", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the PEM files: certificate chain, private key, and the optional client CA.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("reading `{}`: {e}", p.display()))
        };
        Ok(ServerTls {
            cert: read(cert)?,
            key: read(key)?,
            client_ca: client_ca.map(read).transpose()?,
        })
    }

    /// True when a client certificate is required.
    pub fn is_mtls(&self) -> bool {
        self.client_ca.is_some()
    }

    fn config(&self) -> tonic::transport::ServerTlsConfig {
        // tonic builds its rustls configuration with the process default provider: make it
        // `ring`, the only one this workspace builds (a no-op once installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert, &self.key));
        match &self.client_ca {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// The DER of the first certificate of a PEM file's content (to compare with
/// [`GrpcUpstream::peer_certificates`]); `None` when there is none.
pub fn first_certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
}

/// Serves the greeter on `listener` until `shutdown` resolves: in plaintext (h2c), or over TLS
/// only when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.config())?;
    }
    builder
        .add_service(GreeterServer::new(state))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// An in-process instance on `127.0.0.1:<free port>`; stops when dropped.
#[derive(Debug)]
pub struct GrpcUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl GrpcUpstream {
    /// Starts instance `instance` on a free loopback port.
    pub async fn start(instance: &str) -> std::io::Result<GrpcUpstream> {
        Self::start_on("127.0.0.1:0".parse().expect("literal address"), instance).await
    }

    /// Starts instance `instance` on a free loopback port, speaking TLS only (see
    /// [`ServerTls`]).
    pub async fn start_tls(instance: &str, tls: ServerTls) -> std::io::Result<GrpcUpstream> {
        Self::start_with(
            "127.0.0.1:0".parse().expect("literal address"),
            instance,
            Some(tls),
        )
        .await
    }

    /// Starts instance `instance` on `addr`.
    pub async fn start_on(addr: SocketAddr, instance: &str) -> std::io::Result<GrpcUpstream> {
        Self::start_with(addr, instance, None).await
    }

    async fn start_with(
        addr: SocketAddr,
        instance: &str,
        tls: Option<ServerTls>,
    ) -> std::io::Result<GrpcUpstream> {
        if let Some(tls) = &tls {
            // Fail here, not in the spawned task, on files tonic cannot use.
            tonic::transport::Server::builder()
                .tls_config(tls.config())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(instance));
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let (serving, instance) = (state.clone(), instance.to_string());
        tokio::spawn(async move {
            if let Err(e) = serve(listener, serving, tls, shutdown).await {
                eprintln!("legate-grpc-upstream {instance}: {e:#}");
            }
        });
        Ok(GrpcUpstream {
            addr,
            state,
            stop: Some(tx),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance id.
    pub fn instance(&self) -> &str {
        &self.state.instance
    }

    /// Calls received so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }

    /// Calls answered with an error so far.
    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// The distinct client certificates (DER of the leaf) seen on calls, in byte order.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        self.state
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Makes every call fail with `UNAVAILABLE` (or stops doing so).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::Relaxed);
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Calls `SayHello` on `addr` directly (no xDS), with `metadata` as request metadata.
pub async fn say_hello(
    addr: SocketAddr,
    name: &str,
    metadata: &[(&'static str, &str)],
) -> Result<pb::HelloReply, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(pb::HelloRequest {
        name: name.to_string(),
    });
    for (k, v) in metadata {
        let value = v
            .parse()
            .map_err(|_| Status::invalid_argument("bad metadata value"))?;
        req.metadata_mut().insert(*k, value);
    }
    let path = http::uri::PathAndQuery::from_static("/helloworld.Greeter/SayHello");
    let codec = tonic_prost::ProstCodec::default();
    grpc.unary(req, path, codec).await.map(Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_with_instance_and_fails_on_demand() {
        let up = GrpcUpstream::start("a").await.expect("start");
        let reply = say_hello(up.addr(), "world", &[]).await.expect("call");
        assert_eq!(reply.instance, "a");
        assert_eq!(reply.message, "Hello world from a");

        let err = say_hello(up.addr(), "x", &[(FAIL_ON, "b, a")])
            .await
            .expect_err("listed");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        say_hello(up.addr(), "x", &[(FAIL_ON, "b")])
            .await
            .expect("not listed");

        up.set_failing(true);
        let err = say_hello(up.addr(), "x", &[]).await.expect_err("failing");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!((up.calls(), up.failures()), (4, 2));
    }

    /// `SayHello` over TLS verified by `ca` (server name `localhost`), presenting `identity`.
    async fn say_hello_tls(
        addr: SocketAddr,
        ca: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<pb::HelloReply, Status> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("{e:?}")))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/helloworld.Greeter/SayHello");
        let req = Request::new(pb::HelloRequest { name: "tls".into() });
        grpc.unary(req, path, tonic_prost::ProstCodec::default())
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn tls_mode_requires_a_client_certificate_and_records_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        legate_control_plane::certs::init(&legate_control_plane::certs::InitOptions::new(
            dir.path(),
            "example.org",
            &["payments", "checkout"],
        ))
        .expect("certs init");
        let file = |name: &str| std::fs::read(dir.path().join(name)).expect("cert file");
        let tls = ServerTls::from_files(
            &dir.path().join("payments.pem"),
            &dir.path().join("payments.key"),
            Some(&dir.path().join("ca.pem")),
        )
        .expect("server tls");
        assert!(tls.is_mtls());
        let up = GrpcUpstream::start_tls("a", tls).await.expect("start");
        let (ca, cert, key) = (file("ca.pem"), file("checkout.pem"), file("checkout.key"));

        let reply = say_hello_tls(up.addr(), &ca, Some((&cert, &key)))
            .await
            .expect("mTLS call");
        assert_eq!(reply.instance, "a");
        let leaf = first_certificate_der(&cert).expect("PEM leaf");
        assert_eq!(up.peer_certificates(), vec![leaf]);

        say_hello_tls(up.addr(), &ca, None)
            .await
            .expect_err("no client certificate");
        say_hello(up.addr(), "plaintext", &[])
            .await
            .expect_err("plaintext");
        assert_eq!(up.calls(), 1, "refused handshakes make no calls");
    }

    #[test]
    fn proto_matches_the_messages() {
        assert!(PROTO.contains("package helloworld;"));
        assert!(PROTO.contains("rpc SayHello (HelloRequest) returns (HelloReply)"));
        assert!(PROTO.contains("string instance = 2;"));
    }
}
