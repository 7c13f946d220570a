//! Downstream h2c: hyper's HTTP/2 server, with the request headers joined as Envoy's HTTP/2
//! codec joins them (`headers::join_h2_repeated`) and each request kept in flight until its
//! response has been sent in full.

use super::body::{BoxError, DownstreamBody, ProxyBody};
use super::headers;
use super::io_stats::{ByteCounters, Counted};
use super::listener::ListenerCtx;
use super::router::{self, InFlight};
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Serves h2c (prior knowledge) on `io` until the connection ends.
pub async fn serve(io: TcpStream, ctx: Arc<ListenerCtx>, bytes: ByteCounters) {
    let svc = service_fn(move |mut req: Request<Incoming>| {
        headers::join_h2_repeated(req.headers_mut());
        let ctx = ctx.clone();
        async move {
            let (resp, in_flight) = router::handle(ctx, req.map(DownstreamBody::H2)).await;
            Ok::<_, Infallible>(resp.map(|body| ResponseBody::new(body, in_flight)))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    let io = TokioIo::new(Counted::new(io, bytes));
    if let Err(e) = builder.serve_connection(io, svc).await {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// A response body that ends its request when its last frame has been taken. hyper drops a
/// body whose stream the client reset: the request then counts as reset.
struct ResponseBody {
    body: ProxyBody,
    in_flight: Option<InFlight>,
}

impl ResponseBody {
    fn new(body: ProxyBody, in_flight: InFlight) -> Self {
        let mut this = ResponseBody {
            body,
            in_flight: Some(in_flight),
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
