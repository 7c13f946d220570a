//! A connector for tonic channels (the ADS client) that runs the bootstrap's
//! `UpstreamTlsContext` over each TCP connection: the xDS cluster's TLS is verified exactly as
//! any cluster's (trusted CA and SAN matchers, no host-name check), with ALPN `h2`.

use super::{TlsClient, TlsStream};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// A `tower::Service<Uri>` connecting over TCP, then TLS with a fixed client configuration.
/// The URI's scheme is ignored (keep `http://` so tonic does not add TLS of its own).
#[derive(Clone, Debug)]
pub struct TlsConnector {
    client: TlsClient,
}

impl TlsConnector {
    /// A connector using `client` (build it with ALPN `h2`: an HTTP/2 cluster).
    pub fn new(client: TlsClient) -> Self {
        TlsConnector { client }
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = client.connect(tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
