//! Body types of the request path.

use super::pool::Release;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Any error a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type requests and responses have on the request path.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body made of `bytes` (local replies, buffered retries).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Streams a downstream body upstream unchanged.
pub fn stream(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// An upstream response body that hands its HTTP/1.1 connection back to the pool once the
/// last frame has been read (dropping it early closes the connection at once instead).
#[derive(Debug)]
pub struct UpstreamBody {
    inner: hyper::body::Incoming,
    release: Option<Release>,
    /// Things held until the body ends (circuit-breaker guards).
    holds: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl UpstreamBody {
    /// Wraps a response body; `release` is `None` for multiplexed (HTTP/2) connections.
    pub fn new(inner: hyper::body::Incoming, release: Option<Release>) -> Self {
        let mut body = UpstreamBody {
            inner,
            release,
            holds: Vec::new(),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(r) = self.release.take() {
            r.release();
        }
        self.holds.clear();
    }

    /// Keeps `value` alive until the body ends or is dropped.
    pub fn hold(&mut self, value: impl std::any::Any + Send + Sync) {
        if self.inner.is_end_stream() && self.release.is_none() {
            return;
        }
        self.holds.push(Box::new(value));
    }

    /// Boxes the body for the downstream response.
    pub fn boxed(self) -> ProxyBody {
        BodyExt::map_err(self, |e| Box::new(e) as BoxError).boxed()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                // A broken body poisons the connection: never reuse it.
                if let Some(r) = self.release.take() {
                    r.discard();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
