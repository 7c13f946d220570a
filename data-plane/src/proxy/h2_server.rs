//! Downstream h2c: hyper's HTTP/2 server, with the request headers joined as Envoy's HTTP/2
//! codec joins them (`headers::join_h2_repeated`) and each request kept in flight until its
//! response has been sent in full. A response that comes before the end of its request body
//! is counted as `downstream_rq_response_before_rq_complete`, and, if the request is still
//! incomplete when the response ends (hyper then resets the stream), `downstream_rq_rx_reset`.
//!
//! The connection manager's connection limits (`conn_limits`) end an h2c connection with a
//! graceful shutdown (GOAWAY, then close once the streams in flight are done): its idle timeout
//! (no stream for that long), `max_connection_duration`, and `max_requests_per_connection`
//! (the stream that reaches it is served). Envoy sends a first GOAWAY at once and the last one
//! after `drain_timeout`; hyper sends both at once (docs/compat.md). As Envoy's HTTP/2 codec, a
//! request whose header list is over `max_request_headers_kb`, with more headers than
//! `max_headers_count` (pseudo-headers included), or with an underscore in a header name under
//! `headers_with_underscores_action: REJECT_REQUEST`, has its stream reset (`INTERNAL_ERROR`).

use super::body::{BoxError, DownstreamBody, ProxyBody};
use super::conn_limits::{ConnEvent, ConnLife};
use super::headers;
use super::io_stats::{ByteCounters, Counted};
use super::listener::ListenerCtx;
use super::router::{self, InFlight};
use crate::config::{ConnectionLimits, UnderscoresAction};
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Serves h2c (prior knowledge) on `io` until the connection ends (or one of the connection
/// manager's limits, `life`, shuts it down).
pub async fn serve(io: TcpStream, ctx: Arc<ListenerCtx>, bytes: ByteCounters, mut life: ConnLife) {
    let limits = *life.limits();
    let streams = Arc::new(Streams::new(life.accepted(), limits.max_requests));
    let svc = {
        let streams = streams.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let ctx = ctx.clone();
            let guard = streams.started();
            let refused = refusal(&ctx, &mut req, &limits);
            headers::join_h2_repeated(req.headers_mut());
            async move {
                if refused {
                    return Err(Refused);
                }
                let (parts, body) = req.into_parts();
                let body = DownstreamBody::H2(body);
                // A request body still arriving: whether it has ended once the response comes.
                let (body, request_ended) = if body.is_end_stream() {
                    (body, None)
                } else {
                    let (body, ended) = body.flag_end();
                    (body, Some(ended))
                };
                let req = Request::from_parts(parts, body);
                let (resp, in_flight) = router::handle(ctx.clone(), req).await;
                let early = match request_ended {
                    Some(ended) if !ended.load(Ordering::Relaxed) => {
                        // An early response: Envoy counts it when the head goes out, and resets
                        // the stream if the request is still incomplete when the response ends.
                        let state = ctx.state.load();
                        state.stats.rq_response_before_rq_complete.inc();
                        Some(EarlyResponse {
                            request_ended: ended,
                            rx_reset: state.stats.rq_rx_reset.clone(),
                        })
                    }
                    _ => None,
                };
                Ok(resp.map(|body| ResponseBody::new(body, in_flight, guard, early)))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    // The limit is Envoy's, checked by `refusal`; hyper's own (16 KiB by default) must not
    // refuse first.
    let list_size = u32::try_from(limits.max_request_headers_bytes.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(64 * 1024);
    builder.http2().max_header_list_size(list_size);
    let io = TokioIo::new(Counted::new(io, bytes));
    let mut conn = pin!(builder.serve_connection(io, svc));
    let max_requests_reached = life.stats().max_requests_reached.clone();
    let mut shutting_down = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            () = streams.changed.notified(), if !shutting_down => {
                if streams.max_reached.load(Ordering::Relaxed) {
                    max_requests_reached.inc();
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                } else if let Some(at) = streams.idle_since() {
                    life.idle_from(at);
                }
            }
            event = poll_fn(|cx| life.poll_idle(cx)), if !shutting_down => {
                if event == ConnEvent::Idle && streams.idle_since().is_none() {
                    // Streams are open: not idle. The last one to end says when it became so.
                    life.idle_from(Instant::now());
                    continue;
                }
                life.fired(event, Instant::now());
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// A request the HTTP/2 codec refuses: hyper resets its stream (`INTERNAL_ERROR`).
#[derive(Debug, thiserror::Error)]
#[error("request refused by the HTTP/2 codec (header limits)")]
struct Refused;

/// Whether Envoy's HTTP/2 codec would reset this request's stream: a header list over
/// `max_request_headers_kb` (sized as RFC 9113 sizes it), more headers than
/// `max_headers_count` (pseudo-headers included), or a header name with an underscore under
/// REJECT_REQUEST; under DROP_HEADER such headers are removed. Counted as Envoy counts it.
fn refusal(ctx: &ListenerCtx, req: &mut Request<Incoming>, limits: &ConnectionLimits) -> bool {
    let underscores = limits.underscores;
    let uri = req.uri();
    // :method, :scheme, :authority (or host) and :path, each sized as a field.
    let field = |name: &str, value: usize| name.len() + value + 32;
    let pseudo_size = field(":method", req.method().as_str().len())
        + field(":scheme", uri.scheme_str().map_or(0, str::len))
        + field(
            ":path",
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        )
        + uri
            .authority()
            .map_or(0, |a| field(":authority", a.as_str().len()));
    let list_size = pseudo_size
        + req
            .headers()
            .iter()
            .map(|(name, value)| field(name.as_str(), value.len()))
            .sum::<usize>();
    let too_large = list_size > limits.max_request_headers_bytes;
    let pseudo = 3 + usize::from(uri.authority().is_some());
    let overflow = req.headers().len() + pseudo > limits.max_headers as usize;
    let underscored = underscores != UnderscoresAction::Allow
        && req.headers().keys().any(|name| name.as_str().contains('_'));
    if !too_large && !overflow && !underscored {
        return false;
    }
    let state = ctx.state.load();
    let stats = &state.stats;
    let codec = &stats.codec[1];
    if too_large {
        stats.http2_limits.header_list_size_too_large.inc();
    } else if overflow {
        stats.http2_limits.header_overflow.inc();
    } else if underscores == UnderscoresAction::DropHeader {
        let names: Vec<http::HeaderName> = req
            .headers()
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .cloned()
            .collect();
        for name in names {
            if let http::header::Entry::Occupied(entry) = req.headers_mut().entry(name) {
                let dropped = entry.remove_entry_mult().1.count();
                codec.dropped.add(dropped as u64);
            }
        }
        return false;
    } else {
        codec.rejected.inc();
    }
    // The stream existed: it counts as a request, reset.
    stats.rq_total.inc();
    stats.rq_http2_total.inc();
    stats.rq_rx_reset.inc();
    true
}

/// The streams of one connection, shared by its requests and the task that drives it.
#[derive(Debug)]
struct Streams {
    accepted: Instant,
    max_requests: Option<u32>,
    /// Streams open (a request not yet answered in full).
    active: AtomicU32,
    /// Streams so far.
    requests: AtomicU32,
    /// When the last open stream ended, in milliseconds since `accepted`.
    idle_since_ms: AtomicU64,
    /// `max_requests_per_connection` was reached.
    max_reached: AtomicBool,
    /// Wakes the driving task: the connection became idle, or reached its maximum requests.
    changed: Notify,
}

impl Streams {
    fn new(accepted: Instant, max_requests: Option<u32>) -> Self {
        Streams {
            accepted,
            max_requests,
            active: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            max_reached: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// A stream opened; it stays open until the guard is dropped.
    fn started(self: &Arc<Self>) -> StreamGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests == Some(n) {
            self.max_reached.store(true, Ordering::Relaxed);
            self.changed.notify_one();
        }
        StreamGuard(self.clone())
    }

    /// When the connection became idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        Some(self.accepted + std::time::Duration::from_millis(ms))
    }
}

/// An open stream of [`Streams`].
#[derive(Debug)]
struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.0;
        if streams.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            let ms = u64::try_from(streams.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
            streams.idle_since_ms.store(ms, Ordering::Relaxed);
            streams.changed.notify_one();
        }
    }
}

/// A response body that ends its request when its last frame has been taken. hyper drops a
/// body whose stream the client reset: the request then counts as reset.
struct ResponseBody {
    body: ProxyBody,
    in_flight: Option<InFlight>,
    /// The stream stays open until the body is dropped.
    _stream: StreamGuard,
    /// A response that came before the end of its request.
    early: Option<EarlyResponse>,
}

/// What an early response (one before the end of its request) checks when it ends.
struct EarlyResponse {
    /// Raised once the request body has been read to its end.
    request_ended: Arc<AtomicBool>,
    /// `downstream_rq_rx_reset`: the stream is reset when the request is still incomplete
    /// (hyper resets it, `NO_ERROR`, as Envoy does).
    rx_reset: crate::stats::Counter,
}

impl ResponseBody {
    fn new(
        body: ProxyBody,
        in_flight: InFlight,
        stream: StreamGuard,
        early: Option<EarlyResponse>,
    ) -> Self {
        let mut this = ResponseBody {
            body,
            in_flight: Some(in_flight),
            _stream: stream,
            early,
        };
        // hyper does not poll a body that is already at its end.
        if this.body.is_end_stream() {
            this.complete();
        }
        this
    }

    fn complete(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.complete();
            if let Some(early) = self.early.take()
                && !early.request_ended.load(Ordering::Relaxed)
            {
                early.rx_reset.inc();
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.complete(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.complete(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(in_flight) = self.in_flight.take() {
                    in_flight.reset_locally();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
