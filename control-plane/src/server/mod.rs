//! The xDS server: ADS and the per-type CDS/EDS/LDS/RDS/SDS services, SotW and delta, over tonic.
//!
//! The server reads snapshots from [`crate::cache::SnapshotCache`] and never translates or
//! touches configuration files. Each stream is one task running a state machine
//! ([`sotw::SotwStream`] or [`delta::DeltaStream`]).

pub mod csds;
pub mod delta;
mod drive;
pub mod reflection;
pub mod registry;
mod services;
pub mod sotw;
pub mod stream;
pub mod subscription;
pub mod tls;

use crate::cache::SnapshotCache;
use registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Shared handles of the xDS server.
#[derive(Clone)]
pub struct XdsServer {
    /// Where snapshots come from.
    pub cache: Arc<SnapshotCache>,
    /// Connected clients.
    pub registry: Arc<Registry>,
}

impl XdsServer {
    /// A server over `cache`.
    pub fn new(cache: Arc<SnapshotCache>, registry: Arc<Registry>) -> Self {
        XdsServer { cache, registry }
    }

    /// The tonic router with every discovery service.
    pub fn router(&self) -> tonic::service::Routes {
        services::routes(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    ///
    /// Connections are closed after a maximum age (with a grace period), so that streams
    /// rebalance across control-plane replicas instead of pinning to one forever.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// Like [`XdsServer::serve`], over TLS (mTLS when `tls` has a client CA) when `tls` is given.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Option<&tls::XdsTls>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(self.router())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

/// Formats a peer address for the registry.
pub(crate) fn peer_string(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}
