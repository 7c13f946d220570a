//! Request bodies that can be sent more than once (for retries), buffered up to a bound.

use super::body::DownstreamBody;
use super::body::{BoxError, ProxyBody};
use super::stream_timeout::{StreamLimits, StreamTimer};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use std::pin::pin;
use std::time::Duration;
use tokio::time::Instant;

/// A request body ready for one or more attempts.
pub enum Prepared {
    /// Fully buffered: every attempt gets a copy (the bytes are shared, not copied).
    Replayable {
        /// The body bytes.
        data: Bytes,
        /// Trailers, if any.
        trailers: Option<HeaderMap>,
    },
    /// Larger than the bound: sent once, so the request cannot be retried.
    Once(Option<ProxyBody>),
}

impl Prepared {
    /// True if attempts after the first can resend the body.
    pub fn replayable(&self) -> bool {
        matches!(self, Prepared::Replayable { .. })
    }

    /// The body for the next attempt (empty if a one-shot body was already used).
    pub fn attempt_body(&mut self) -> ProxyBody {
        match self {
            Prepared::Replayable { data, trailers } => {
                let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::new();
                if !data.is_empty() {
                    frames.push(Ok(Frame::data(data.clone())));
                }
                if let Some(t) = trailers {
                    frames.push(Ok(Frame::trailers(t.clone())));
                }
                super::body::boxed(StreamBody::new(futures::stream::iter(frames)))
            }
            Prepared::Once(body) => body.take().unwrap_or_else(super::body::empty),
        }
    }
}

/// The stream timeouts a body being read is under.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// The stream idle timeout, from the request head and then from each frame.
    pub idle: Option<Duration>,
    /// The request timeout's deadline.
    pub request_deadline: Option<Instant>,
    /// The request head's arrival.
    pub since: Instant,
}

/// Reads `body` into memory if it fits in `limit` bytes; otherwise returns a body that replays
/// what was read and streams the rest. Fails with the stream timer that ran out while the body
/// was being read.
pub async fn prepare(
    mut body: DownstreamBody,
    limit: usize,
    limits: ReadLimits,
) -> Result<Prepared, StreamTimer> {
    use http_body::Body;
    if body.is_end_stream() {
        return Ok(Prepared::Replayable {
            data: Bytes::new(),
            trailers: None,
        });
    }
    let mut buf = BytesMut::new();
    let mut trailers = None;
    let mut last = limits.since;
    let mut timer = pin!(tokio::time::sleep_until(last));
    loop {
        let frame = match StreamLimits::first_deadline(limits.idle, last, limits.request_deadline) {
            None => body.frame().await,
            Some((deadline, which)) => {
                timer.as_mut().reset(deadline);
                tokio::select! {
                    biased;
                    frame = body.frame() => frame,
                    () = timer.as_mut() => return Err(which),
                }
            }
        };
        last = Instant::now();
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        let head =
                            futures::stream::iter([Ok::<_, BoxError>(Frame::data(buf.freeze()))]);
                        let rest = BodyStream::new(body);
                        return Ok(Prepared::Once(Some(super::body::boxed(StreamBody::new(
                            head.chain(rest),
                        )))));
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
            Some(Err(e)) => {
                let failed = futures::stream::iter([Err::<Frame<Bytes>, BoxError>(e)]);
                return Ok(Prepared::Once(Some(super::body::boxed(StreamBody::new(
                    failed,
                )))));
            }
        }
    }
    Ok(Prepared::Replayable {
        data: buf.freeze(),
        trailers,
    })
}
