//! The transport: connecting to the management server, running one ADS stream at a time through
//! a protocol state machine ([`Sotw`] or [`Delta`]), and reconnecting with back-off.
//!
//! The stream task never blocks on sending: requests go through an unbounded channel (there are
//! at most a few per response received), so it always keeps reading responses.

use super::backoff::{BACKOFF_BASE, BACKOFF_MAX, Backoff};
use super::delta::Delta;
use super::sotw::Sotw;
use super::status::{StatusWriter, XdsStatus};
use super::{ConfigSink, Subscriptions, XdsClientConfig};
use crate::tls::TlsClient;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use legate_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

type AdsClient = AggregatedDiscoveryServiceClient<Channel>;

/// Used when the configured connect timeout is zero (Envoy's cluster default).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING interval on the xDS connection, to notice a management server that vanished.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered before the connection is considered dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery response accepted (tonic's default of 4 MiB is too small for big
/// configurations; Envoy sets no limit).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// One of the two ADS protocol variants, seen from the transport.
trait Protocol: Send {
    type Request: Send + 'static;
    type Response: Send + 'static;

    /// Requests that open a stream.
    fn start(&mut self, sink: &dyn ConfigSink) -> Vec<Self::Request>;

    /// Requests answering one response.
    fn on_response(
        &mut self,
        resp: Self::Response,
        sink: &dyn ConfigSink,
        status: &mut StatusWriter,
    ) -> Vec<Self::Request>;

    /// Opens the stream, sending `requests`.
    fn open(
        client: &mut AdsClient,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> BoxFuture<'_, Result<tonic::Streaming<Self::Response>, tonic::Status>>;
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn start(&mut self, sink: &dyn ConfigSink) -> Vec<DiscoveryRequest> {
        Sotw::start(self, sink)
    }

    fn on_response(
        &mut self,
        resp: DiscoveryResponse,
        sink: &dyn ConfigSink,
        status: &mut StatusWriter,
    ) -> Vec<DiscoveryRequest> {
        Sotw::on_response(self, resp, sink, status)
    }

    fn open(
        client: &mut AdsClient,
        requests: UnboundedReceiverStream<DiscoveryRequest>,
    ) -> BoxFuture<'_, Result<tonic::Streaming<DiscoveryResponse>, tonic::Status>> {
        Box::pin(async move {
            Ok(client
                .stream_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn start(&mut self, sink: &dyn ConfigSink) -> Vec<DeltaDiscoveryRequest> {
        Delta::start(self, sink)
    }

    fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
        sink: &dyn ConfigSink,
        status: &mut StatusWriter,
    ) -> Vec<DeltaDiscoveryRequest> {
        Delta::on_response(self, resp, sink, status)
    }

    fn open(
        client: &mut AdsClient,
        requests: UnboundedReceiverStream<DeltaDiscoveryRequest>,
    ) -> BoxFuture<'_, Result<tonic::Streaming<DeltaDiscoveryResponse>, tonic::Status>> {
        Box::pin(async move {
            Ok(client
                .delta_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }
}

/// Runs the client forever, publishing its state into `cell`.
pub(crate) async fn run(
    config: XdsClientConfig,
    sink: Arc<dyn ConfigSink>,
    cell: Arc<ArcSwap<XdsStatus>>,
) {
    let mut status = StatusWriter::new(cell);
    status.update(|s| s.delta = config.delta);
    if config.endpoints.is_empty() {
        tracing::error!("the ADS cluster has no endpoints; dynamic configuration is disabled");
        std::future::pending::<()>().await;
    }
    let subs = Subscriptions {
        cds: config.subscribe_cds,
        lds: config.subscribe_lds,
    };
    let node = super::with_user_agent(config.node.clone());
    if config.delta {
        drive(Delta::new(node, subs), &config, &*sink, status).await;
    } else {
        drive(Sotw::new(node, subs), &config, &*sink, status).await;
    }
}

/// How a stream attempt ended.
struct Outcome {
    /// The stream delivered at least one response.
    productive: bool,
    /// Why it ended.
    reason: String,
}

/// Connect, stream, back off, repeat. The protocol state (and so the configuration the sink
/// holds) survives every reconnect.
async fn drive<P: Protocol>(
    mut machine: P,
    config: &XdsClientConfig,
    sink: &dyn ConfigSink,
    mut status: StatusWriter,
) {
    let timeout = if config.connect_timeout.is_zero() {
        DEFAULT_CONNECT_TIMEOUT
    } else {
        config.connect_timeout
    };
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut cursor = 0usize;
    loop {
        let endpoint = &config.endpoints[cursor % config.endpoints.len()];
        let outcome = stream_once(
            &mut machine,
            endpoint,
            config.tls.as_ref(),
            timeout,
            sink,
            &mut status,
        )
        .await;
        status.update(|s| s.stream_failures += 1);
        sink.connection_failed();
        if outcome.productive {
            // The server was healthy: start over from the base interval, same server first.
            backoff.reset();
        } else {
            cursor = cursor.wrapping_add(1);
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            server = %endpoint,
            reason = %outcome.reason,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "ADS stream to the management server ended; reconnecting"
        );
        tokio::time::sleep(delay).await;
    }
}

/// One connection and stream, until it fails.
async fn stream_once<P: Protocol>(
    machine: &mut P,
    endpoint: &str,
    tls: Option<&TlsClient>,
    timeout: Duration,
    sink: &dyn ConfigSink,
    status: &mut StatusWriter,
) -> Outcome {
    let failed = |reason: String| Outcome {
        productive: false,
        reason,
    };
    let mut client = match connect(endpoint, tls, timeout).await {
        Ok(c) => c,
        Err(reason) => return failed(reason),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    for req in machine.start(sink) {
        // The receiver is alive: it is in this scope.
        let _ = tx.send(req);
    }
    // No deadline here: some servers (grpc-go) send response headers only with the first
    // response, which may legitimately take long. HTTP/2 keepalive detects a dead peer.
    let mut inbound = match P::open(&mut client, UnboundedReceiverStream::new(rx)).await {
        Ok(stream) => stream,
        Err(status) => return failed(format!("opening the stream failed: {status}")),
    };
    tracing::info!(server = %endpoint, "ADS stream established");
    sink.connected(true);
    status.update(|s| {
        s.connected = true;
        s.server = Some(endpoint.to_string());
        s.streams_established += 1;
    });
    let mut productive = false;
    let reason = loop {
        match inbound.message().await {
            Ok(Some(resp)) => {
                productive = true;
                for req in machine.on_response(resp, sink, status) {
                    if tx.send(req).is_err() {
                        // Only happens once tonic dropped the request stream: the call is over.
                        break;
                    }
                }
            }
            Ok(None) => break "the server closed the stream".to_string(),
            Err(status) => break format!("stream error: {status}"),
        }
    };
    sink.connected(false);
    status.update(|s| s.connected = false);
    Outcome { productive, reason }
}

/// A client for `endpoint` (`host:port`, or a URI with a scheme), over TLS when the xDS
/// cluster has an `UpstreamTlsContext` (verified as any cluster's: trusted CA and SAN matchers).
async fn connect(
    endpoint: &str,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> Result<AdsClient, String> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let ep = Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid management server address {endpoint:?}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connected = match tls {
        None => tokio::time::timeout(timeout, ep.connect()).await,
        Some(tls) => {
            let connector = crate::tls::TlsConnector::new(tls.clone());
            tokio::time::timeout(timeout, ep.connect_with_connector(connector)).await
        }
    };
    let channel = match connected {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(format!("connecting to {endpoint} failed: {e}")),
        Err(_) => {
            return Err(format!(
                "connecting to {endpoint} took longer than {timeout:?}"
            ));
        }
    };
    Ok(
        AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
    )
}
