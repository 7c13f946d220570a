//! tonic service implementations: each method opens a stream state machine in its own task.

use super::XdsServer;
use super::delta::DeltaStream;
use super::drive::{Responses, StreamMachine, drive};
use super::registry::StreamKind;
use super::sotw::SotwStream;
use super::stream::StreamCore;
use legate_proto::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use legate_proto::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use legate_proto::type_url;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type SotwOut = ReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaOut = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
type FetchResult = Result<Response<DiscoveryResponse>, Status>;

/// How many responses may queue per stream before the stream task waits for the client.
const OUT_BUFFER: usize = 16;

impl XdsServer {
    fn open_sotw(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
        kind: StreamKind,
        fixed: Option<&'static str>,
    ) -> Response<SotwOut> {
        self.open(req, kind, fixed, SotwStream::new)
    }

    fn open_delta(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
        kind: StreamKind,
        fixed: Option<&'static str>,
    ) -> Response<DeltaOut> {
        self.open(req, kind, fixed, DeltaStream::new)
    }

    /// Registers a stream and runs its state machine (made by `machine`) in its own task.
    fn open<M>(
        &self,
        req: Request<Streaming<M::Request>>,
        kind: StreamKind,
        fixed: Option<&'static str>,
        machine: fn(StreamCore, Responses<M>) -> M,
    ) -> Response<ReceiverStream<Result<M::Response, Status>>>
    where
        M: StreamMachine + 'static,
    {
        let peer = super::peer_string(req.remote_addr());
        let updates = self.cache.subscribe();
        let core = StreamCore::new(
            self.registry.clone(),
            kind,
            fixed,
            peer,
            updates.borrow().clone(),
        );
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        tokio::spawn(drive(machine(core, tx), req.into_inner(), updates));
        Response::new(ReceiverStream::new(rx))
    }
}

fn fetch_unsupported() -> FetchResult {
    Err(Status::unimplemented(
        "REST-style Fetch is not served; use a streaming method (SotW or delta)",
    ))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = SotwOut;
    type DeltaAggregatedResourcesStream = DeltaOut;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwOut>, Status> {
        Ok(self.open_sotw(req, StreamKind::AdsSotw, None))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaOut>, Status> {
        Ok(self.open_delta(req, StreamKind::AdsDelta, None))
    }
}

/// Implements one per-type discovery service (stream, delta, fetch) for a fixed type URL.
macro_rules! per_type_service {
    ($trait:ident, $sotw_ty:ident, $delta_ty:ident, $stream:ident, $delta:ident, $fetch:ident, $url:expr) => {
        #[tonic::async_trait]
        impl $trait for XdsServer {
            type $sotw_ty = SotwOut;
            type $delta_ty = DeltaOut;

            async fn $stream(
                &self,
                req: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<SotwOut>, Status> {
                Ok(self.open_sotw(req, StreamKind::Sotw, Some($url)))
            }

            async fn $delta(
                &self,
                req: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<DeltaOut>, Status> {
                Ok(self.open_delta(req, StreamKind::Delta, Some($url)))
            }

            async fn $fetch(&self, _req: Request<DiscoveryRequest>) -> FetchResult {
                fetch_unsupported()
            }
        }
    };
}

per_type_service!(
    ClusterDiscoveryService,
    StreamClustersStream,
    DeltaClustersStream,
    stream_clusters,
    delta_clusters,
    fetch_clusters,
    type_url::CLUSTER
);
per_type_service!(
    EndpointDiscoveryService,
    StreamEndpointsStream,
    DeltaEndpointsStream,
    stream_endpoints,
    delta_endpoints,
    fetch_endpoints,
    type_url::ENDPOINT
);
per_type_service!(
    ListenerDiscoveryService,
    StreamListenersStream,
    DeltaListenersStream,
    stream_listeners,
    delta_listeners,
    fetch_listeners,
    type_url::LISTENER
);
per_type_service!(
    RouteDiscoveryService,
    StreamRoutesStream,
    DeltaRoutesStream,
    stream_routes,
    delta_routes,
    fetch_routes,
    type_url::ROUTE
);
per_type_service!(
    SecretDiscoveryService,
    StreamSecretsStream,
    DeltaSecretsStream,
    stream_secrets,
    delta_secrets,
    fetch_secrets,
    type_url::SECRET
);

/// Every discovery service on one router, with CSDS and gRPC reflection.
pub fn routes(server: XdsServer) -> tonic::service::Routes {
    let routes = tonic::service::Routes::new(AggregatedDiscoveryServiceServer::new(server.clone()))
        .add_service(ClusterDiscoveryServiceServer::new(server.clone()))
        .add_service(EndpointDiscoveryServiceServer::new(server.clone()))
        .add_service(ListenerDiscoveryServiceServer::new(server.clone()))
        .add_service(RouteDiscoveryServiceServer::new(server.clone()))
        .add_service(SecretDiscoveryServiceServer::new(server.clone()))
        .add_service(super::csds::service(server));
    super::reflection::add_to(routes)
}
