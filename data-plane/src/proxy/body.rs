//! Body types of the request path.

use super::http1_server::RequestBody;
use super::pool::{ActiveRequest, H1Response};
use super::router::AttemptEnd;
use super::stream_timeout::{self, ProgressReceiver, ProgressSender};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::time::Instant;

/// Any error a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type requests and responses have on the request path.
///
/// The shapes every request has (a downstream request body streamed upstream, an upstream
/// response body streamed back, a local reply) are variants, not boxes: boxing them cost two
/// allocations per proxied request. Anything else (a replayed retry body) is boxed.
pub enum ProxyBody {
    /// No body.
    Empty,
    /// One chunk, taken by the first poll.
    Full(Option<Bytes>),
    /// A downstream request body, streamed upstream unchanged; its progress, if watched, is
    /// recorded frame by frame (see [`stream_watched`]).
    Downstream(DownstreamBody, Option<ProgressSender>),
    /// An upstream response body, streamed downstream unchanged.
    Upstream(UpstreamBody),
    /// Anything else.
    Boxed(BoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            ProxyBody::Empty => "Empty",
            ProxyBody::Full(_) => "Full",
            ProxyBody::Downstream(..) => "Downstream",
            ProxyBody::Upstream(_) => "Upstream",
            ProxyBody::Boxed(_) => "Boxed",
        };
        f.debug_tuple("ProxyBody").field(&kind).finish()
    }
}

fn boxed_error<T, E: std::error::Error + Send + Sync + 'static>(
    polled: Poll<Option<Result<T, E>>>,
) -> Poll<Option<Result<T, BoxError>>> {
    polled.map(|frame| frame.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Downstream(b, watched) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                if let Some(progress) = watched {
                    let ended = match &polled {
                        Poll::Ready(None) => Some(true),
                        Poll::Ready(Some(Ok(_))) => Some(b.is_end_stream()),
                        _ => None,
                    };
                    if let Some(ended) = ended {
                        stream_timeout::record(progress, ended);
                        if ended {
                            *watched = None;
                        }
                    }
                }
                polled
            }
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Downstream(b, _) => b.is_end_stream(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty | ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            ProxyBody::Downstream(b, _) => b.size_hint(),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// A body made of `bytes` (local replies, direct responses).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    let bytes = bytes.into();
    ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
}

/// An empty body.
pub fn empty() -> ProxyBody {
    ProxyBody::Empty
}

/// Streams a downstream body upstream unchanged.
pub fn stream(body: DownstreamBody) -> ProxyBody {
    ProxyBody::Downstream(body, None)
}

/// Like [`stream`], also recording the body's progress since `since` (the request head): when
/// each frame arrived (the stream idle timeout runs from the last), and when the body ended
/// (the route timeout starts then, as Envoy's starts once the whole request has been received).
pub fn stream_watched(body: DownstreamBody, since: Instant) -> (ProxyBody, ProgressReceiver) {
    let (tx, rx) = stream_timeout::progress(since);
    (ProxyBody::Downstream(body, Some(tx)), rx)
}

/// A downstream request body: read by legate-proxy's HTTP/1.1 connection, or hyper's HTTP/2
/// stream (h2c).
#[derive(Debug)]
pub enum DownstreamBody {
    /// HTTP/1.1 (see `http1_server`).
    H1(RequestBody),
    /// HTTP/2.
    H2(Incoming),
    /// A body whose end is flagged for the stream's `max_stream_duration` (see
    /// [`DownstreamBody::flag_end`]).
    Flagged(Box<DownstreamBody>, Arc<AtomicBool>),
}

impl DownstreamBody {
    /// No body.
    pub fn empty() -> Self {
        DownstreamBody::H1(RequestBody::empty())
    }

    /// This body, and a flag raised once it has been read to its end (already raised when it
    /// has no more to read).
    pub fn flag_end(self) -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(self.is_end_stream()));
        if self.is_end_stream() {
            return (self, flag);
        }
        (DownstreamBody::Flagged(Box::new(self), flag.clone()), flag)
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            DownstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            DownstreamBody::H2(b) => boxed_error(Pin::new(b).poll_frame(cx)),
            DownstreamBody::Flagged(b, flag) => {
                let polled = Pin::new(&mut **b).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => b.is_end_stream(),
                    _ => false,
                };
                if ended {
                    flag.store(true, Ordering::Relaxed);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::H1(b) => b.is_end_stream(),
            DownstreamBody::H2(b) => b.is_end_stream(),
            DownstreamBody::Flagged(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::H1(b) => b.size_hint(),
            DownstreamBody::H2(b) => b.size_hint(),
            DownstreamBody::Flagged(b, _) => b.size_hint(),
        }
    }
}

/// Boxes any other body.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
{
    ProxyBody::Boxed(BodyExt::boxed(body))
}

/// An upstream response body: over HTTP/1.1 it reads from its connection and hands the
/// connection back to the pool after the last frame (dropping it early closes the connection
/// at once instead); over HTTP/2 it is hyper's stream.
///
/// The request stays active (`upstream_rq_active`, the breaker's request slot) until the body
/// ends or is dropped, as Envoy keeps an upstream stream until it completes.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Upstream,
    /// The cluster's `upstream_rq_active` count of this request.
    active: Option<ActiveRequest>,
    /// The router's accounting of the attempt, when its response goes downstream.
    end: Option<AttemptEnd>,
}

#[derive(Debug)]
enum Upstream {
    H1(H1Response),
    H2(Incoming),
    /// Cut off by the route timeout, `per_try_idle_timeout` or the stream idle timeout (the
    /// upstream exchange is dropped, its connection closed).
    TimedOut,
}

impl UpstreamBody {
    /// An HTTP/1.1 response body (see `pool::H1Response`), active until it ends.
    pub fn h1(body: H1Response, active: ActiveRequest) -> Self {
        UpstreamBody::new(Upstream::H1(body), active)
    }

    /// An HTTP/2 response body, active until it ends.
    pub fn h2(body: Incoming, active: ActiveRequest) -> Self {
        UpstreamBody::new(Upstream::H2(body), active)
    }

    fn new(inner: Upstream, active: ActiveRequest) -> Self {
        let mut body = UpstreamBody {
            inner,
            active: Some(active),
            end: None,
        };
        if body.is_end_stream() {
            body.active = None;
        }
        body
    }

    /// Hands the body the accounting of the attempt whose response goes downstream: it ends
    /// with the body ([`AttemptEnd::complete`] at its last frame).
    pub fn hold(&mut self, end: AttemptEnd) {
        if self.is_end_stream() {
            end.complete();
        } else {
            self.end = Some(end);
        }
    }

    /// The body has been read to its end.
    fn ended(&mut self) {
        self.active = None;
        if let Some(end) = self.end.take() {
            end.complete();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Upstream::H1(b) => boxed_error(b.poll_frame(cx)),
            Upstream::H2(b) => boxed_error(Pin::new(b).poll_frame(cx)),
            Upstream::TimedOut => Poll::Ready(None),
        };
        // The route timeout covers the response body too (Envoy's `timeout` spans until the
        // response has been processed completely): when it fires mid-body, the upstream
        // exchange is cut and the body fails, which resets the downstream request.
        // `per_try_idle_timeout` and the stream idle timeout likewise cut a body that stops
        // arriving.
        if let Some(end) = self.end.as_mut() {
            match &polled {
                Poll::Pending => {
                    if let Poll::Ready(which) = end.poll_timeout(cx) {
                        self.inner = Upstream::TimedOut;
                        self.active = None;
                        if let Some(end) = self.end.take() {
                            end.timed_out(which);
                        }
                        return Poll::Ready(Some(Err("upstream request timeout".into())));
                    }
                }
                Poll::Ready(Some(Ok(_))) => end.activity(),
                _ => {}
            }
        }
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.is_end_stream() => self.ended(),
            // A failed body is not a completed response (Envoy records no `upstream_rq_time`).
            Poll::Ready(Some(Err(_))) => {
                self.active = None;
                self.end = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstream::H1(b) => b.is_end_stream(),
            Upstream::H2(b) => b.is_end_stream(),
            Upstream::TimedOut => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::H1(b) => b.size_hint(),
            Upstream::H2(b) => b.size_hint(),
            Upstream::TimedOut => SizeHint::with_exact(0),
        }
    }
}

/// A response body cut at its stream's `max_stream_duration` deadline: the stream is then
/// reset (and `downstream_rq_max_duration_reached` counted), as Envoy resets a stream whose
/// response has started.
pub struct DeadlineBody {
    body: ProxyBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    reached: crate::stats::Counter,
}

impl DeadlineBody {
    /// `body`, cut at `deadline`, counting `reached` then.
    pub fn wrap(body: ProxyBody, deadline: Instant, reached: crate::stats::Counter) -> ProxyBody {
        if body.is_end_stream() {
            return body;
        }
        boxed(DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            reached,
        })
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.reached.inc();
            this.body = ProxyBody::Empty;
            return Poll::Ready(Some(Err("downstream duration timeout".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
